// Package initramfs adds files, typically the static spectrum-netcfg, to an
// existing initramfs by appending a second newc cpio archive to it, and
// lists what a (concatenated) initramfs holds.
//
// The kernel unpacks an initramfs made of several archives one after the
// other, each uncompressed or compressed on its own, and a later archive's
// file replaces an earlier one's at the same path: appending is how a
// plain, busybox or u-root initramfs gets the agent without being rebuilt.
// An uncompressed archive must start at a multiple of 4 bytes from the
// start of the initramfs (the kernel skips zero bytes between archives),
// so Append pads with zeros first.
//
// It runs on the machine that builds a guest's initramfs, never in the
// guest: the agent (cmd/spectrum-netcfg) does not import it, and it is
// built as its own binary, cmd/spectrum-initramfs-append.
package initramfs
