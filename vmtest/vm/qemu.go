package vm

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"spectrum-os.org/netcfg/host/config"
	"spectrum-os.org/netcfg/host/qemu"
	"spectrum-os.org/netcfg/internal/nstest"
)

// Proc is one boot of a VM: started by Boot.Start (and Launch), or by
// spectrumd (then its Serial follows spectrumd's log file of the VM, Args
// and QEMU are empty: the command line is in spectrumd's log).
type Proc struct {
	Name   string
	Args   []string // the full command line, for reproducing by hand
	Serial *Serial
	PID    int // QEMU's process id
	// QEMU is the process when the test started it itself: its QMP
	// client, hot-plug (QEMU.HotplugNIC), Stop.
	QEMU   *qemu.Process
	exited <-chan struct{}
}

// Boot is a QEMU a test starts itself. It is built by host/qemu's Config and
// started by qemu.Start, exactly as spectrumd starts a VM (machine, devices,
// sandbox, descriptors, its own uid and empty network namespace), so what a
// test boots is what spectrumd boots; only the accelerator is fixed to TCG.
type Boot struct {
	Name      string
	Kernel    string   // path of the vmlinux
	Initramfs string   // path; "" for none
	Images    []string // paths of the disk images (read-only virtio-blk)
	Cmdline   string   // "" for qemu.DefaultCmdline
	MemoryMiB int      // 0 for qemu.DefaultMemoryMiB
	// NICs are taps in NS, opened by name (NIC.Tap) and given to QEMU as
	// descriptors.
	NICs []NIC
	NS   *nstest.NS
}

// lastUID numbers the uids of the QEMUs a test binary starts.
var lastUID atomic.Uint32

// vmUID is a uid (and gid) for one QEMU: from 450000, outside spectrumd's
// default range and any /etc/passwd, apart for each test binary.
func vmUID() uint32 {
	return 450000 + uint32(os.Getpid()%1000)*100 + lastUID.Add(1)%100
}

// Start starts QEMU for b and reads its serial console. The VM is killed
// when the test ends; if the test failed, its command line (with what each
// descriptor it names is), QEMU's stderr and the serial log are printed.
func (b Boot) Start(t testing.TB) *Proc {
	t.Helper()
	var files []*os.File
	defer func() {
		for _, f := range files {
			f.Close() // QEMU has its own copies once Start returns
		}
	}()
	open := func(p string) *os.File {
		f, err := os.Open(p)
		if err != nil {
			t.Fatalf("%s: %v", b.Name, err)
		}
		files = append(files, f)
		return f
	}
	run := t.TempDir()
	uid := vmUID()
	c := qemu.Config{
		Name: b.Name, Kernel: open(b.Kernel), Cmdline: b.Cmdline, Accel: "tcg", MemoryMiB: b.MemoryMiB,
		QMPSocket: filepath.Join(run, "qmp.sock"), ConsoleSocket: filepath.Join(run, "console.sock"),
		UID: uid, GID: uid,
	}
	if b.Initramfs != "" {
		c.Initramfs = open(b.Initramfs)
	}
	for _, img := range b.Images {
		c.Images = append(c.Images, open(img))
	}
	for i, n := range b.NICs {
		hw, err := net.ParseMAC(n.MAC)
		if err != nil {
			t.Fatalf("%s: NIC %s: %v", b.Name, n.Tap, err)
		}
		tap, err := OpenTap(b.NS, n.Tap)
		if err != nil {
			t.Fatalf("%s: %v", b.Name, err)
		}
		files = append(files, tap)
		c.NICs = append(c.NICs, qemu.NIC{ID: fmt.Sprintf("net%d", i), MAC: hw, Tap: tap})
	}
	var stderr strings.Builder
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	start := time.Now()
	// Start's process goroutine is the only writer of stderr, and it
	// is done once Kill and Wait return (or Start has failed).
	qp, err := qemu.Start(ctx, c, &stderr)
	if err != nil {
		t.Fatalf("%s: start QEMU: %v\nstderr: %s", b.Name, err, stderr.String())
	}
	fds := strings.Join(qp.FDs, " ")
	t.Logf("%s: %s (descriptors: %s)", b.Name, qemu.Quote(qp.Argv), fds)
	p := &Proc{Name: b.Name, Args: qp.Argv, PID: qp.Pid(), QEMU: qp, exited: qp.Done(), Serial: NewSerial(qp.Serial, start)}
	t.Cleanup(func() {
		qp.Kill()
		qp.Wait()
		select {
		case <-p.Serial.eof:
		case <-time.After(5 * time.Second):
		}
		qp.Serial.Close()
		if t.Failed() {
			t.Logf("%s: QEMU command:\n%s\ndescriptors: %s\nQEMU stderr: %s\nserial console of %s:\n%s",
				b.Name, qemu.Quote(qp.Argv), fds, stderr.String(), b.Name, p.Serial)
		}
	})
	return p
}

// Launch boots the VM directory dir (the svc/data layout: vmlinux,
// initramfs, cmdline, blk/*.img, as spectrumd loads it) with one NIC per
// tap in ns. It is for what spectrumd would never give a VM (a NIC without
// the OUI); everything else goes through Serve.
func Launch(t testing.TB, ns *nstest.NS, dir string, nics []NIC) *Proc {
	t.Helper()
	name := filepath.Base(dir)
	cfg := config.Load(filepath.Dir(dir))
	v := cfg.VMs[name]
	if v == nil {
		t.Fatalf("VM directory %s: %v", dir, cfg.Errors)
	}
	return Boot{Name: name, Kernel: v.Kernel, Initramfs: v.Initramfs, Images: v.Images, Cmdline: v.Cmdline, NICs: nics, NS: ns}.Start(t)
}

// OpenTap attaches to the existing tap name in ns and returns its file for
// QEMU (as host/link does for spectrumd's taps): /dev/net/tun is opened
// inside the namespace, since TUNSETIFF looks the name up there.
func OpenTap(ns *nstest.NS, name string) (*os.File, error) {
	h, err := netns.GetFromPath(ns.Path())
	if err != nil {
		return nil, err
	}
	defer h.Close()
	var f *os.File
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // unlocked only if the thread is back in its namespace
		orig, err := netns.Get()
		if err != nil {
			errc <- err
			return
		}
		defer orig.Close()
		if err := netns.Set(h); err != nil {
			errc <- err
			return
		}
		f, err = attachTap(name)
		if err := netns.Set(orig); err != nil {
			errc <- fmt.Errorf("back from namespace %s: %w", ns.Name, err)
			return // the thread dies with the goroutine
		}
		runtime.UnlockOSThread()
		errc <- err
	}()
	if err := <-errc; err != nil {
		return nil, fmt.Errorf("open tap %s in %s: %w", name, ns.Name, err)
	}
	return f, nil
}

func attachTap(name string) (*os.File, error) {
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	ifr, err := unix.NewIfreq(name)
	if err == nil {
		ifr.SetUint16(unix.IFF_TAP | unix.IFF_NO_PI | unix.IFF_VNET_HDR)
		err = unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr)
	}
	if err != nil {
		unix.Close(fd)
		return nil, err
	}
	return os.NewFile(uintptr(fd), "tap:"+name), nil
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
