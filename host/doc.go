// Package host holds what runs on the host, never in a guest: the daemon
// spectrumd (its subpackages config, alloc, link, qemu, qmp, daemon and
// cli) and the tools that prepare guest images (initramfs).
package host
