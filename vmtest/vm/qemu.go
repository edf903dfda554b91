package vm

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"spectrum-os.org/netcfg/internal/nstest"
)

// Proc is one boot of a VM: launched by Launch, or by spectrumd (then its
// Serial follows spectrumd's log file of the VM and Args is empty: the
// command line is in spectrumd's log).
type Proc struct {
	Name   string
	Args   []string // the full command line, for reproducing by hand
	Serial *Serial
	PID    int // QEMU's process id
	cmd    *exec.Cmd
	exited chan struct{}
}

// Args returns QEMU's command line (TCG) for the VM directory dir: the PVH
// kernel, initramfs and cmdline from dir, one virtio-blk per blk/*.img, a
// virtio console and a QMP monitor on unix sockets in run, one virtio-net
// device per NIC, and the serial console written to QEMU's standard output.
func Args(dir, run string, nics []NIC) ([]string, error) {
	name := filepath.Base(dir)
	cmdline, err := os.ReadFile(filepath.Join(dir, "cmdline"))
	if errors.Is(err, fs.ErrNotExist) {
		cmdline = []byte(DefaultCmdline)
	} else if err != nil {
		return nil, err
	}
	imgs, err := filepath.Glob(filepath.Join(dir, "blk", "*.img"))
	if err != nil || len(imgs) == 0 {
		return nil, fmt.Errorf("%s: no blk/*.img", dir)
	}
	args := []string{QEMU,
		"-M", "pc", "-accel", "tcg", "-m", "256", "-smp", "1",
		"-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
		"-kernel", filepath.Join(dir, "vmlinux"),
		"-append", strings.TrimSpace(string(cmdline)),
		// A file chardev only writes: nothing ever goes into the guest's
		// serial port.
		"-chardev", "file,id=serial0,path=/dev/stdout",
		"-serial", "chardev:serial0",
		"-device", "virtio-serial-pci,id=virtio-serial0",
		"-chardev", "socket,id=hvc0,path=" + filepath.Join(run, name+".console") + ",server=on,wait=off",
		"-device", "virtconsole,chardev=hvc0",
		"-qmp", "unix:" + qmpPath(dir, run) + ",server=on,wait=off",
	}
	if _, err := os.Stat(filepath.Join(dir, "initramfs")); err == nil {
		args = append(args, "-initrd", filepath.Join(dir, "initramfs"))
	}
	for i, img := range imgs {
		args = append(args,
			"-drive", fmt.Sprintf("file=%s,format=raw,if=none,id=blk%d", img, i),
			"-device", fmt.Sprintf("virtio-blk-pci,drive=blk%d", i))
	}
	for i, n := range nics {
		args = append(args,
			"-netdev", fmt.Sprintf("tap,id=net%d,ifname=%s,script=no,downscript=no", i, n.Tap),
			// romfile= skips loading iPXE, which the PVH boot never uses.
			"-device", fmt.Sprintf("virtio-net-pci,netdev=net%d,mac=%s,romfile=", i, n.MAC))
	}
	return args, nil
}

func qmpPath(dir, run string) string { return filepath.Join(run, filepath.Base(dir)+".qmp") }

// Launch starts QEMU with Args inside ns and reads its serial console. The
// VM is killed when the test ends; if the test failed, its command line,
// QEMU's stderr and the serial log are printed.
//
// This is the one place the tests start QEMU themselves, kept for a NIC
// spectrumd would never give a VM (one without the OUI); everything else
// goes through Serve.
func Launch(t testing.TB, ns *nstest.NS, dir, run string, nics []NIC) *Proc {
	t.Helper()
	name := filepath.Base(dir)
	args, err := Args(dir, run, nics)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("ip", append([]string{"netns", "exec", ns.Name}, args...)...)
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stdout, cmd.Stderr = w, &stderr
	p := &Proc{Name: name, Args: args, cmd: cmd, exited: make(chan struct{})}
	t.Logf("%s: ip netns exec %s %s", name, ns.Name, shellQuote(args))
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatalf("%s: start QEMU: %v", name, err)
	}
	w.Close()
	p.Serial = NewSerial(r, start)
	go func() { cmd.Wait(); close(p.exited) }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-p.exited
		select {
		case <-p.Serial.eof:
		case <-time.After(5 * time.Second):
		}
		r.Close()
		if t.Failed() {
			t.Logf("%s: QEMU command (in netns %s):\n%s\nQEMU stderr: %s\nserial console of %s:\n%s",
				name, ns.Name, shellQuote(args), stderr.String(), name, p.Serial)
		}
	})
	return p
}

// Wait waits for one of the sentinel events on p's console and fails the
// test if none comes.
func (p *Proc) Wait(t testing.TB, ctx context.Context, events ...string) Line {
	t.Helper()
	l, err := p.Serial.Wait(ctx, events...)
	if err != nil {
		t.Fatalf("%s: %v", p.Name, err)
	}
	return l
}

// Exited is closed when QEMU has exited.
func (p *Proc) Exited() <-chan struct{} { return p.exited }

func shellQuote(args []string) string {
	q := make([]string, len(args))
	for i, a := range args {
		if a == "" || strings.ContainsAny(a, " '\"\\$;&|<>()*?") {
			a = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
		q[i] = a
	}
	return strings.Join(q, " ")
}
