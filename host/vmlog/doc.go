// Package vmlog keeps the record of what each VM's guest writes to its
// serial console: Pump reads the console a line at a time, makes every line
// safe for a terminal and a log parser (Sanitize), hands it to the host's log
// under a rate limit and to the VM's own capped log File, which followers
// (`spectrumd logs -f`) can subscribe to.
//
// It only ever reads a serial console: nothing is written back to a guest.
// It knows nothing of VMs beyond their names, nor of QEMU.
package vmlog
