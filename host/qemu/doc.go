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
//     (-netdev tap,fd=N), and so is /dev/vhost-net under KVM (NIC.Vhost):
//     QEMU needs no privilege and no access to /dev/net/tun, which suits
//     -sandbox. Every NIC sits behind a PCIe-to-PCI bridge (q35's root bus
//     takes no hot-plug); Process.HotplugNIC gives a hot-plugged NIC the
//     options a cold-plugged one has.
//   - The kernel, the initramfs and the disk images are opened by spectrumd
//     (config.Open: beneath the VM's directory, at every launch) and handed
//     over as descriptors. Images go into fd sets (-add-fd) that QEMU's block
//     layer opens as /dev/fdset/N, by dup'ing them. QEMU 7.2 reads -kernel
//     and -initrd with plain open(2), which knows no fd sets, so those are
//     named /proc/self/fd/N: the descriptor QEMU inherited, reopened. QEMU
//     never resolves a path in a VM's directory, so nothing put there after
//     spectrumd's check (a symlink to a host file) reaches it.
//   - Disks are read-only, see Config.Images.
//   - QEMU runs as a uid and gid of its own (Config.UID) from exec on, with
//     no capabilities, in an empty network namespace, with no descriptor but
//     those listed here: nothing in it needs root or a network, so nothing
//     in it gets either, and one QEMU cannot signal another.
//   - QEMU starts through a trampoline (host/confine: spectrumd itself)
//     that installs spectrumd's system-call filter first, so a QEMU that a
//     guest broke into cannot change its taps on the host (their MAC,
//     owner, persistence, link); QEMU's own -sandbox stacks on top.
//
// This package never writes to a guest's serial port and never reads a
// guest's disks.
package qemu
