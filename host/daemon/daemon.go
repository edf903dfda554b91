package daemon

import (
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"spectrum-os.org/netcfg/host/alloc"
	"spectrum-os.org/netcfg/host/config"
	"spectrum-os.org/netcfg/host/vmlog"
	"spectrum-os.org/netcfg/internal/mac"
)

// Options configure a Daemon. Zero values mean the documented defaults.
type Options struct {
	State string // state directory: per-VM logs live in State/logs
	Run   string // run directory: per-VM sockets live in Run/vms/NAME
	VMM   VMM
	Net   Network
	Links LinkSource
	// Devices hands host PCI devices to VMs (uplinks/pci); nil means a
	// VM that names one does not start.
	Devices Devices
	Log     *slog.Logger
	// StopTimeout is how long Stop waits for a guest to power down before
	// killing it; 0 means 10 s.
	StopTimeout time.Duration
	// LaunchTimeout bounds one launch (the VMM's start-up until its
	// control protocol answers); 0 means DefaultLaunchTimeout.
	LaunchTimeout time.Duration
	// NICTimeout bounds one NIC hot-plug or unplug (an unplug waits for
	// the guest to release the device); 0 means DefaultNICTimeout.
	NICTimeout time.Duration
	// DrainTimeout is how long the serial console may take to reach EOF
	// once the VM's process has exited (the pipe may hold up to a MiB);
	// after it the console is closed and the exit reported. 0 means 5 s.
	DrainTimeout time.Duration
	// Backoff is the delay before the n-th restart in a row (n ≥ 1); nil
	// means 1 s doubling up to 60 s.
	Backoff func(n int) time.Duration
	// StableAfter is how long a VM must run before a crash counts as a
	// new series (the backoff starts again at its first delay); 0 means 60 s.
	StableAfter time.Duration
	// LogMax caps one generation of each VM's log file; 0 means vmlog.DefaultMax.
	LogMax int64
	// SilentAfter is how long a VM may run without writing anything to its
	// serial console before it is reported as silent (a guest that never
	// booted): a warning in the log and no_output_since in its status.
	// 0 means DefaultSilentAfter; negative turns the report off.
	SilentAfter time.Duration
}

// Defaults of Options.
const (
	DefaultSilentAfter   = time.Minute
	DefaultLaunchTimeout = 30 * time.Second
	DefaultNICTimeout    = 20 * time.Second
)

// DefaultBackoff is 1 s doubling to 60 s.
func DefaultBackoff(n int) time.Duration {
	if n > 7 {
		return time.Minute
	}
	return min(time.Second<<max(n-1, 0), time.Minute)
}

// Daemon supervises the VMs. All its methods are safe for concurrent use.
//
// Each VM that has anything to do has an owner: one goroutine (owner.go)
// that alone starts, stops, restarts and plugs NICs into that VM, taking
// requests on channels, so two requests can never both launch it. mu guards
// only the tables below and each VM's published snapshot; it is never held
// across a call that can block (a VMM, netlink, a reload), so List, Status,
// Logs and Console answer at once whatever the VMs are doing.
type Daemon struct {
	opt Options
	log *slog.Logger

	mu      sync.Mutex
	cfg     *config.Config
	ids     map[alloc.Pair]mac.LinkID // every link id, from the last load
	links   map[alloc.Pair]*hostLink  // links whose bridge and taps exist (or are being made or removed)
	linkGen uint64                    // bumped each time a link is reserved
	// uplinks maps the MAC of every uplink tap that exists to its VM (its
	// taps live from its start until it stops, across crash restarts).
	uplinks  map[string]string
	vms      map[string]*vmEntry     // the VM table
	closing  bool                    // Close has begun: no more starts
	reload   []chan error            // callers waiting for the next load
	reloadOn bool                    // a load loop runs
	warned   map[config.Warning]bool // the warnings the last load logged; only the load loop uses it
}

// hostLink is a link that exists on the host, owned by its client's owner.
type hostLink struct {
	id mac.LinkID
	// live: the link is made and its client wants it in its provider, so
	// a provider that launches cold-plugs it. Not live while it is being
	// made or removed.
	live bool
}

// vmEntry is one VM in the table: what readers see of it, and its owner
// while it has one. Fields are guarded by Daemon.mu.
type vmEntry struct {
	name    string
	owner   *owner // nil when nothing runs for the VM
	snap    snapshot
	log     *vmlog.File
	console bool // a client holds the console
}

// New returns a daemon with nothing running. It loads the configuration
// once; Start loads it again, so VMs added later can be started.
func New(opt Options) (*Daemon, error) {
	if opt.StopTimeout == 0 {
		opt.StopTimeout = 10 * time.Second
	}
	if opt.LaunchTimeout == 0 {
		opt.LaunchTimeout = DefaultLaunchTimeout
	}
	if opt.NICTimeout == 0 {
		opt.NICTimeout = DefaultNICTimeout
	}
	if opt.DrainTimeout == 0 {
		opt.DrainTimeout = 5 * time.Second
	}
	if opt.Backoff == nil {
		opt.Backoff = DefaultBackoff
	}
	if opt.StableAfter == 0 {
		opt.StableAfter = time.Minute
	}
	if opt.Log == nil {
		opt.Log = slog.Default()
	}
	if opt.SilentAfter == 0 {
		opt.SilentAfter = DefaultSilentAfter
	}
	d := &Daemon{opt: opt, log: opt.Log, links: map[alloc.Pair]*hostLink{}, uplinks: map[string]string{}, vms: map[string]*vmEntry{}}
	if err := d.loadOnce(); err != nil {
		return nil, err
	}
	return d, nil
}

// entryLocked returns name's table entry, making it if need be.
func (d *Daemon) entryLocked(name string) *vmEntry {
	e := d.vms[name]
	if e == nil {
		e = &vmEntry{name: name, snap: snapshot{state: stateStopped}, log: &vmlog.File{
			Path: filepath.Join(d.opt.State, "logs", name+".log"), Max: d.opt.LogMax}}
		d.vms[name] = e
	}
	return e
}

// Configured tells whether the configuration, as last loaded, has a VM
// directory called name, valid or not.
func (d *Daemon) Configured(name string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.configuredLocked(name)
}

// configuredLocked tells whether name is in the configuration, valid or
// not: its entry is kept while it is.
func (d *Daemon) configuredLocked(name string) bool {
	return d.cfg.VMs[name] != nil || d.vmErrorLocked(name) != nil
}

// vmErrorLocked returns the configuration's error for name, if it has one.
func (d *Daemon) vmErrorLocked(name string) error {
	for _, e := range d.cfg.Errors {
		var ve *config.VMError
		if errors.As(e, &ve) && ve.VM == name {
			return e
		}
	}
	return nil
}

// whyNotLocked explains why name cannot be started.
func (d *Daemon) whyNotLocked(name string) error {
	if err := d.vmErrorLocked(name); err != nil {
		return err
	}
	return fmt.Errorf("no VM named %q", name)
}

// Start starts name and, first, every provider it depends on, each after
// the one before has launched. It reads the configuration again first, so
// VMs added since are found. It returns once each VM's process has been
// launched (not once its guest has booted) or with the first failure: a
// VM whose first launch fails (a link that cannot be made included) is
// left failed, with its links removed, and is not retried until the next
// Start. A VM that runs already is left as it is.
func (d *Daemon) Start(name string) error {
	if err := d.reloadConfig(); err != nil {
		return err
	}
	d.mu.Lock()
	if d.cfg.VMs[name] == nil {
		err := d.whyNotLocked(name)
		if e := d.vms[name]; d.vmErrorLocked(name) != nil && (e == nil || e.owner == nil) {
			// Kept for list and status, as any failed start.
			e = d.entryLocked(name)
			e.snap.state, e.snap.err = stateFailed, err.Error()
		}
		d.mu.Unlock()
		return err
	}
	// The chain in start order: every VM name depends on, then name.
	need := map[string]bool{}
	var mark func(string)
	mark = func(n string) {
		if need[n] || d.cfg.VMs[n] == nil {
			return
		}
		need[n] = true
		for _, p := range d.cfg.VMs[n].Providers {
			mark(p)
		}
	}
	mark(name)
	var chain []string
	for _, n := range d.cfg.Order {
		if need[n] {
			chain = append(chain, n)
		}
	}
	d.mu.Unlock()

	for _, n := range chain {
		if err := d.request(n, opStart); err != nil {
			if n != name {
				return fmt.Errorf("%w (a provider of %s)", err, name)
			}
			return err
		}
	}
	return nil
}

// Stop powers name down (killing it after the stop timeout), unplugs its
// NICs from its providers and removes its links. It returns once all that
// is done, or with an error if the VM's process could not be stopped in
// time (the stop then completes when it exits). Stopping a VM that is not
// running is not an error. Its clients keep running; their links are
// re-attached when it starts again.
func (d *Daemon) Stop(name string) error {
	d.mu.Lock()
	e := d.vms[name]
	if e == nil || e.owner == nil {
		unknown := e == nil && !d.configuredLocked(name)
		d.mu.Unlock()
		if unknown {
			return fmt.Errorf("no VM named %q", name)
		}
		return nil
	}
	d.mu.Unlock()
	if err := d.request(name, opStop); err != nil {
		return fmt.Errorf("stop %s: %w", name, err)
	}
	return nil
}

// StopAll stops every VM, clients before their providers.
func (d *Daemon) StopAll() error {
	d.mu.Lock()
	order := slices.Clone(d.cfg.Order)
	for n := range d.vms {
		if !slices.Contains(order, n) {
			order = append(order, n) // running but gone from the configuration
		}
	}
	d.mu.Unlock()
	var errs []error
	for _, n := range slices.Backward(order) {
		errs = append(errs, d.Stop(n))
	}
	return errors.Join(errs...)
}

// Close refuses every start from now on and stops every VM, clients before
// their providers: the daemon's end (a start still on its way cannot
// launch a VM behind its back).
func (d *Daemon) Close() error {
	d.mu.Lock()
	d.closing = true
	d.mu.Unlock()
	return d.StopAll()
}

// errClosing refuses a start once Close has begun.
var errClosing = errors.New("spectrumd is shutting down")

// request asks name's owner to start or stop it and waits for the answer.
// A start makes the owner if the VM has none.
func (d *Daemon) request(name string, op ctlOp) error {
	d.mu.Lock()
	if op == opStart && d.closing {
		d.mu.Unlock()
		return errClosing
	}
	e := d.entryLocked(name)
	o := e.owner
	if o == nil {
		if op == opStop {
			d.mu.Unlock()
			return nil
		}
		o = newOwner(d, e)
		e.owner = o
		go o.run()
	}
	o.inflight.Add(1)
	d.mu.Unlock()
	reply := make(chan error, 1)
	o.ctl <- ctlReq{op: op, reply: reply}
	return <-reply
}

// PIDFile is the name of a VM's pid file in its run directory
// (RUN/vms/NAME/).
const PIDFile = "qemu.pid"

func (d *Daemon) consolePath(name string) string {
	return filepath.Join(d.opt.Run, "vms", name, "console.sock")
}
