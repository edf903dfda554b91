// Package vmm runs spectrumd's VMs as QEMU processes: QEMU implements the
// daemon's VMM (daemon.VMM), and each launch is a daemon.Instance. It turns
// the daemon's Spec into a qemu.Config, logs QEMU's own messages with a rate
// limit, drains each guest's serial console to its end, and, when spectrumd
// starts, kills the QEMUs that a spectrumd that died left running
// (KillOrphans).
//
// It is its own package, beside host/qemu rather than inside it, so that
// host/qemu stays the one place that knows QEMU's command line and process
// and nothing of the daemon, while this package is the glue between the two:
// it imports host/daemon (for its interfaces) and host/qemu, and neither of
// them imports it. The daemon keeps supervision; it never learns that its
// VMM is QEMU.
//
// It never writes to a guest's serial port and never reads a guest's disks.
package vmm
