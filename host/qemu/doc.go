// Package qemu builds QEMU's command line for one spectrum VM, detects the
// accelerator to use, and launches and stops the QEMU process.
//
// Arguments are data: Config.Args is a pure function, and it is the only
// place that knows QEMU's option syntax. Start runs what Args returns.
//
// Plumbing, and why:
//
//   - Sockets (QMP, virtio-console) are created and bound by Start before QEMU
//     runs and handed over as listening file descriptors
//     (-chardev socket,fd=N,server=on). A client can connect the moment Start
//     returns, with no polling for the socket file to appear, and the files
//     are created by spectrumd with its permissions.
//   - The serial port is the write end of a pipe, registered with -add-fd and
//     opened by a file chardev as /dev/fdset/N. QEMU can only write to it: there
//     is no path by which the host could type into the guest's serial port,
//     which DESIGN.md forbids. The read end is Process.Serial.
//   - Taps are opened by the caller (link.Net.OpenTap) and passed as fds
//     (-netdev tap,fd=N): QEMU needs no privilege and no access to
//     /dev/net/tun, which suits -sandbox.
//   - Disks are read-only, see Config.Images.
//
// This package never writes to a guest's serial port and never reads a
// guest's disks.
package qemu
