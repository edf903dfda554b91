package vmm

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"spectrum-os.org/netcfg/host/config"
	"spectrum-os.org/netcfg/host/daemon"
	"spectrum-os.org/netcfg/host/qemu"
	"spectrum-os.org/netcfg/host/vfio"
)

// StartTimeout bounds one launch: from exec until QEMU answers on QMP.
const StartTimeout = 30 * time.Second

// Options configure a QEMU. Zero values mean the documented defaults.
type Options struct {
	Accel     string // "kvm" or "tcg" (qemu.DetectAccel resolves "auto"). Required.
	MemoryMiB int    // guest RAM; 0 means qemu.DefaultMemoryMiB
	// UIDs gives each VM's QEMU its uid (and gid of the same number).
	// Required: QEMU never runs as spectrumd's user.
	UIDs *UIDs
	// KVMGroup is the group that may open /dev/kvm (the kvm group,
	// DeviceGroup), given to QEMU as its one supplementary group under
	// KVM; 0 when every user may open it. Unused under TCG, where QEMU
	// gets no group.
	KVMGroup uint32
	// VhostNet, under KVM, gives every NIC an open /dev/vhost-net
	// (qemu.NIC.Vhost), opened by spectrumd at each launch and hot-plug.
	// Ignored under TCG.
	VhostNet bool
	// OpenVhost opens /dev/vhost-net; nil means OpenVhostNet.
	OpenVhost func() (*os.File, error)
	// VFIO is the host whose PCI devices VMs get (uplinks/pci): each
	// launch grants the VM's uid its devices' IOMMU group nodes, and QEMU
	// exit takes the grant back. nil means a VM with a PCI device does
	// not launch.
	VFIO *vfio.Host
	// Binary is the QEMU binary; "" means qemu.DefaultBinary from $PATH.
	Binary string
	Log    *slog.Logger // nil means slog.Default()
}

// QEMU launches VMs as QEMU processes. It is safe for concurrent use.
type QEMU struct {
	opt Options

	mu     sync.Mutex
	groups map[int]string // IOMMU groups granted, by the VM whose QEMU has them
}

// New returns a VMM that runs QEMU with opt.
func New(opt Options) (*QEMU, error) {
	if opt.UIDs == nil {
		return nil, errors.New("vmm: no uid range for QEMU (it never runs as spectrumd's user)")
	}
	if opt.Log == nil {
		opt.Log = slog.Default()
	}
	if opt.OpenVhost == nil {
		opt.OpenVhost = OpenVhostNet
	}
	opt.VhostNet = opt.VhostNet && opt.Accel == "kvm"
	return &QEMU{opt: opt, groups: map[int]string{}}, nil
}

// VhostNetDevice is the kernel's virtio-net backend device.
const VhostNetDevice = "/dev/vhost-net"

// OpenVhostNet opens VhostNetDevice for one NIC: each open is one
// vhost-net instance, owned by the QEMU that gets it.
func OpenVhostNet() (*os.File, error) {
	f, err := os.OpenFile(VhostNetDevice, os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("vhost-net: %w", err)
	}
	return f, nil
}

// nic turns the daemon's NIC into QEMU's, with a vhost-net descriptor when
// the VMM uses them; the caller closes it (vhost) once QEMU has its own.
func (q *QEMU) nic(n daemon.NIC) (qemu.NIC, error) {
	out := qemu.NIC{ID: n.ID, MAC: n.MAC, Tap: n.Tap}
	if q.opt.VhostNet {
		v, err := q.opt.OpenVhost()
		if err != nil {
			return out, fmt.Errorf("NIC %s: %w", n.ID, err)
		}
		out.Vhost = v
	}
	return out, nil
}

func closeVhosts(nics []qemu.NIC) {
	for _, n := range nics {
		if n.Vhost != nil {
			n.Vhost.Close()
		}
	}
}

// Launch starts QEMU for spec and returns once QEMU answers on QMP (at most
// StartTimeout, or until ctx ends). The full command line is logged, with
// what each descriptor it names is, so a failure can be rerun by hand.
//
// The VM's kernel, initramfs and images are opened here, at every launch,
// beneath the VM's directory (config.Open), and QEMU gets the descriptors:
// a file swapped for a symlink out of the directory since the VM was loaded
// (or since its last launch) fails the launch with an error naming it,
// and QEMU never opens a path of the VM's directory itself.
func (q *QEMU) Launch(ctx context.Context, spec daemon.Spec) (daemon.Instance, error) {
	files, err := config.Open(spec.VM)
	if err != nil {
		return nil, err
	}
	defer files.Close() // QEMU has its own copies once Start returns
	uid, err := q.opt.UIDs.Acquire(spec.VM.Name)
	if err != nil {
		return nil, err
	}
	var groups []uint32
	if q.opt.Accel == "kvm" && q.opt.KVMGroup != 0 {
		groups = []uint32{q.opt.KVMGroup}
	}
	log := q.opt.Log.With("vm", spec.VM.Name)
	c := qemu.Config{
		Name: spec.VM.Name, Binary: q.opt.Binary,
		Kernel: files.Kernel, Initramfs: files.Initramfs, Cmdline: spec.VM.Cmdline,
		Accel: q.opt.Accel, MemoryMiB: q.opt.MemoryMiB, Images: files.Images,
		QMPSocket: spec.QMPPath, ConsoleSocket: spec.ConsolePath,
		UID: uid, GID: uid, Groups: groups, PIDFile: spec.PIDPath,
		Log: log, // QMP's drops, tagged with the VM's name
	}
	if len(spec.PCI) > 0 {
		if q.opt.VFIO == nil {
			q.opt.UIDs.Release(spec.VM.Name)
			return nil, fmt.Errorf("VM %s: PCI devices %v: this spectrumd has no VFIO", spec.VM.Name, spec.PCI)
		}
		mem := q.opt.MemoryMiB
		if mem == 0 {
			mem = qemu.DefaultMemoryMiB
		}
		c.Memlock = MemlockFor(mem)
		for _, d := range spec.PCI {
			c.PCI = append(c.PCI, d.Addr)
		}
	}
	granted, err := q.grant(spec.VM.Name, spec.PCI, uid)
	if err != nil {
		q.opt.UIDs.Release(spec.VM.Name)
		return nil, err
	}
	done := func() {
		q.revoke(spec.VM.Name, granted, log)
		q.opt.UIDs.Release(spec.VM.Name)
	}
	defer func() { closeVhosts(c.NICs) }() // QEMU has its own copies once Start returns
	for _, n := range spec.NICs {
		qn, err := q.nic(n)
		if err != nil {
			done()
			return nil, err
		}
		c.NICs = append(c.NICs, qn)
	}
	ctx, cancel := context.WithTimeout(ctx, StartTimeout)
	defer cancel()
	stderr := newStderrLogger(log)
	p, err := qemu.Start(ctx, c, stderr)
	if err != nil {
		stderr.Close()
		done()
		return nil, err
	}
	go func() {
		<-p.Done()
		done()
	}()
	log.Info("QEMU started", "cmd", qemu.Quote(p.Argv), "fds", strings.Join(p.FDs, " "), "uid", uid)
	return &instance{q: q, p: p, log: log, serial: &drainReader{f: p.Serial}, stderr: stderr}, nil
}

// instance is one running QEMU.
type instance struct {
	q      *QEMU
	p      *qemu.Process
	log    *slog.Logger
	serial *drainReader
	stderr *stderrLogger
}

func (i *instance) PID() int { return i.p.Pid() }

// Serial is the guest's serial console. The pipe is closed by the reader
// reaching its end (or by its Close), never by Wait: when QEMU exits the
// pipe may still hold up to a MiB of the guest's last output (a crashing
// guest's panic), and all of it is read first.
func (i *instance) Serial() io.ReadCloser { return i.serial }

// Wait waits for QEMU to exit. It leaves the serial pipe to its reader (see
// Serial).
func (i *instance) Wait() error {
	err := i.p.Wait()
	i.stderr.Close() // QEMU's stderr has reached its end: Wait saw to it
	return err
}

// Hotplug and Unplug give up when ctx ends (the daemon bounds them with
// its NIC timeout).
func (i *instance) Hotplug(ctx context.Context, n daemon.NIC) error {
	qn, err := i.q.nic(n)
	if err != nil {
		return err
	}
	defer closeVhosts([]qemu.NIC{qn})
	return i.p.HotplugNIC(ctx, qn)
}

func (i *instance) Unplug(ctx context.Context, id string) error {
	return i.p.UnplugNIC(ctx, id)
}

// Shutdown presses the power button and kills QEMU when ctx ends (the
// daemon gives it the stop timeout). If the kill itself fails (EPERM:
// spectrumd lacks CAP_KILL), it says so at once instead of waiting for an
// exit that will not come.
func (i *instance) Shutdown(ctx context.Context) error {
	timeout := 10 * time.Second
	if dl, ok := ctx.Deadline(); ok {
		timeout = max(time.Until(dl), 0)
	}
	graceful, err := i.p.Stop(timeout)
	if err != nil {
		return err
	}
	if !graceful {
		i.log.Warn("guest did not power down in time; killed", "timeout", timeout)
	}
	return nil
}

// drainReader reads QEMU's serial pipe and closes it once the read end has
// reported its end (EOF once QEMU, the only writer, has exited) or failed.
type drainReader struct {
	f    *os.File
	once sync.Once
	done bool
}

// Close closes the pipe if its end was not reached (a reader that gives
// up on it).
func (r *drainReader) Close() error {
	r.once.Do(func() { r.f.Close() })
	return nil
}

func (r *drainReader) Read(p []byte) (int, error) {
	if r.done {
		return 0, io.EOF
	}
	n, err := r.f.Read(p)
	if err != nil {
		r.done = true
		r.once.Do(func() { r.f.Close() })
		if !errors.Is(err, io.EOF) {
			err = fmt.Errorf("serial console: %w", err)
		}
	}
	return n, err
}
