package vmtest

import (
	"bytes"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"spectrum-os.org/netcfg/internal/testenv"
	"spectrum-os.org/netcfg/vmtest/initramfs"
	"spectrum-os.org/netcfg/vmtest/kernel"
	"spectrum-os.org/netcfg/vmtest/vm"
)

// hostRootInit is the /init of a VM that runs on the host's root (Debian's
// full kernel): the kernel's file systems, the modules, the host's root
// read-only over 9p at /host, then the test's script, a host file named by
// spectrum.root= on the command line, run in this shell (so that its exec
// replaces PID 1).
const hostRootInit = `#!/bin/sh
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in $(cat /lib/modules/order); do
	insmod /lib/modules/$m.ko || echo "SPECTRUM-TEST: fail root insmod $m"
done
mkdir -p /host
if ! mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=512000,cache=loose root /host; then
	echo "SPECTRUM-TEST: fail root mount 9p"
	poweroff -f
fi
script=$(sed -n 's/.*spectrum\.root=\([^ ]*\).*/\1/p' /proc/cmdline)
. /host$script
echo "SPECTRUM-TEST: fail root script $script returned"
poweroff -f
`

// writeHostRootInitramfs writes the initramfs of a VM on the host's root:
// busybox, hostRootInit, and modules (with what they need) of the full
// kernel k.
func writeHostRootInitramfs(t *testing.T, k kernel.Kernel, path string, modules ...string) {
	t.Helper()
	mods, err := kernel.Modules(k.Modules, modules...)
	if err != nil {
		t.Fatal(err)
	}
	bb, err := initramfs.Busybox()
	testenv.NoErr(t, err, "make deps installs busybox-static")
	init := filepath.Join(filepath.Dir(path), "init")
	if err := os.WriteFile(init, []byte(hostRootInit), 0o755); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := initramfs.Write(&buf, initramfs.Spec{Init: init, Modules: mods, Files: bb}); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

// startHostRootVM boots a VM named name on the host's root (QEMU TCG, q35,
// Debian's full kernel k with initrd from writeHostRootInitramfs, the
// host's / read-only over 9p): its devices in args, with the files fds
// passed as descriptors 3, 4, ...; script is the host file hostRootInit
// runs, cmdline more of the kernel's command line. Its console is read;
// stdin, if not nil, is its serial line's input.
func startHostRootVM(t *testing.T, name string, k kernel.Kernel, initrd, script, cmdline string, stdin io.Reader, fds []*os.File, args ...string) *vm.Proc {
	t.Helper()
	args = append([]string{
		"-accel", "tcg,thread=multi", "-machine", "q35", "-cpu", "max", "-smp", "2",
		"-nodefaults", "-no-user-config", "-display", "none", "-no-reboot", "-serial", "stdio",
		"-virtfs", "local,path=/,mount_tag=root,security_model=none,readonly=on,multidevs=remap",
		"-kernel", k.Vmlinux, "-initrd", initrd,
		"-append", "console=ttyS0 mitigations=off panic=-1 spectrum.root=" + script + " " + cmdline,
	}, args...)
	cmd := exec.Command(vm.QEMU, args...)
	cmd.ExtraFiles = fds
	cmd.Stdin = stdin
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Logf("%s: %s %s", name, vm.QEMU, strings.Join(args, " "))
	p := &vm.Proc{Name: name, Args: append([]string{vm.QEMU}, args...), PID: cmd.Process.Pid, Serial: vm.NewSerial(out, start)}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			t.Logf("%s's QEMU stderr: %s\n%s's console:\n%s", name, stderr.String(), name, p.Serial)
		}
	})
	return p
}
