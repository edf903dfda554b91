// Package confine puts each QEMU under a system-call filter of spectrumd's
// own before QEMU's first instruction, so that a guest that breaks into its
// QEMU holds nothing more than that QEMU needs.
//
// The attack it stops: QEMU holds its NICs' taps, and a tap's descriptor
// answers ioctls that act on the host's network device behind it, with no
// capability checked (the descriptor is the permission). Unconfined, a
// QEMU under its own uid with no capability could set its uplink tap's MAC
// (SIOCSIFHWADDR) to a LAN peer's, and the user's bridge would then send
// that peer's frames to the tap; it could make the tap persistent, give it
// an owner, change its link type or carrier. QEMU needs none of that after
// start: the filter (Program) denies every tap ioctl but the few QEMU uses on
// a tap it was handed, and every network device ioctl, with EPERM. QEMU's
// own -sandbox stays on and stacks on top.
//
// Go runs no code between fork and exec, so the filter is installed by a
// trampoline: Wrap makes a command run this very binary (/proc/self/exe,
// which needs no path and survives the binary being replaced on disk)
// under QEMU's credentials and namespace; the binary's init, here, sees
// Arg0, sets no_new_privs, installs the filter and execs QEMU with the
// descriptors it inherited. Every binary that links this package (spectrumd,
// the test binaries) is therefore its own trampoline. If the filter cannot
// be installed, QEMU never runs: the trampoline says why on a status pipe
// and exits, and the caller's Wait returns the error.
//
// This package never loosens a filter and never runs anything unconfined.
package confine
