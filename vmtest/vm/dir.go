package vm

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// Spec describes one test VM.
type Spec struct {
	Name      string
	Providers []string // names of the VMs that provide networking to it
	// Test is the test init's spectrum.test value, e.g.
	// "ping:169.254.165.70,serve"; empty means power off after the checks.
	Test string
	// Cmdline is appended to the kernel command line.
	Cmdline string
	// Uplinks are host bridges (in spectrumd's namespace) the VM gets a
	// NIC on: uplinks/net/<bridge>, empty (spectrumd derives the MAC).
	Uplinks []string
	// Lynx boots the initramfs with Debian's lynx (Assets.Lynx).
	Lynx bool
}

// DefaultCmdline puts the kernel console on the serial port and makes a
// panic end QEMU at once (with -no-reboot) instead of hanging.
// no_timer_check skips the kernel's check that the timer interrupt comes
// through the IO-APIC, which under TCG on a loaded machine (load 16 on 2
// cores) can time out and panic at boot ("IO-APIC + timer doesn't
// work!"), failing a test on a restarted guest; a virtual machine's timer
// needs no such check.
const DefaultCmdline = "console=ttyS0 panic=-1 no_timer_check"

// WriteDir writes s as data/<name>/ in the svc/data layout: vmlinux,
// blk/root.img (1 MiB whose first line is a marker the guest reports),
// initramfs, cmdline, providers/net/<provider> and uplinks/net/<bridge>. The kernel and initramfs
// are hard links to the cached assets (copies across file systems): the
// daemon refuses symlinks that lead out of a VM's directory.
func WriteDir(data string, s Spec, a *Assets) (string, error) {
	dir := filepath.Join(data, s.Name)
	for _, d := range []string{"blk", "providers/net"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return "", err
		}
	}
	if err := linkOrCopy(a.Kernel.Vmlinux, filepath.Join(dir, "vmlinux")); err != nil {
		return "", err
	}
	initrd := a.Initramfs
	if s.Lynx {
		initrd = a.Lynx
	}
	if err := linkOrCopy(initrd, filepath.Join(dir, "initramfs")); err != nil {
		return "", err
	}
	img := make([]byte, 1<<20)
	copy(img, DiskMarker(s.Name)+"\n")
	if err := os.WriteFile(filepath.Join(dir, "blk", "root.img"), img, 0o644); err != nil {
		return "", err
	}
	if err := WriteCmdline(dir, s); err != nil {
		return "", err
	}
	for _, p := range s.Providers {
		if err := os.WriteFile(filepath.Join(dir, "providers", "net", p), nil, 0o644); err != nil {
			return "", err
		}
	}
	if len(s.Uplinks) > 0 {
		if err := os.MkdirAll(filepath.Join(dir, "uplinks", "net"), 0o755); err != nil {
			return "", err
		}
	}
	for _, b := range s.Uplinks {
		if err := os.WriteFile(filepath.Join(dir, "uplinks", "net", b), nil, 0o644); err != nil {
			return "", err
		}
	}
	return dir, nil
}

// WriteCmdline (re)writes the cmdline file of s in its VM directory dir.
// spectrumd reads it at every start, so a test can change a VM's steps
// between starts (once it knows the link ids the daemon gave).
func WriteCmdline(dir string, s Spec) error {
	cmdline := []string{DefaultCmdline, "spectrum.hostname=" + s.Name}
	if s.Test != "" {
		cmdline = append(cmdline, "spectrum.test="+s.Test)
	}
	if s.Cmdline != "" {
		cmdline = append(cmdline, s.Cmdline)
	}
	return os.WriteFile(filepath.Join(dir, "cmdline"), []byte(strings.Join(cmdline, " ")+"\n"), 0o644)
}

// linkOrCopy hard-links src (resolving symlinks) to dst, or copies it when
// they are on different file systems.
func linkOrCopy(src, dst string) error {
	src, err := filepath.EvalSymlinks(src)
	if err != nil {
		return err
	}
	if err := os.Link(src, dst); err == nil {
		return nil
	}
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// DiskMarker is the first line of a VM's root.img, which its init reports as
// `disk vda marker="..."`.
func DiskMarker(vm string) string { return fmt.Sprintf("spectrum-test-disk %s", vm) }
