package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"spectrum-os.org/netcfg/host/alloc"
	"spectrum-os.org/netcfg/host/config"
	"spectrum-os.org/netcfg/host/vmlog"
	"spectrum-os.org/netcfg/internal/mac"
)

// LinkSource loads the configuration and gives every (client, provider)
// pair its stable link id.
type LinkSource interface {
	// Load reads the data directory. held are the links wired now: their
	// ids must not change even if the pair left the configuration.
	Load(held []alloc.Link) (*config.Config, []alloc.Link, error)
}

// Options configure a Daemon. Zero values mean the documented defaults.
type Options struct {
	State string // state directory: per-VM logs live in State/logs
	Run   string // run directory: per-VM sockets live in Run/vms/NAME
	VMM   VMM
	Net   Network
	Links LinkSource
	Log   *slog.Logger
	// StopTimeout is how long Stop waits for a guest to power down before
	// killing it; 0 means 10 s.
	StopTimeout time.Duration
	// Backoff is the delay before the n-th restart in a row (n ≥ 1); nil
	// means 1 s doubling up to 60 s.
	Backoff func(n int) time.Duration
	// StableAfter is how long a VM must run before a crash counts as a
	// new series (the backoff starts again at its first delay); 0 means 60 s.
	StableAfter time.Duration
	// LogMax caps one generation of each VM's log file; 0 means DefaultLogMax.
	LogMax int64
	// SilentAfter is how long a VM may run without writing anything to its
	// serial console before it is reported as silent (a guest that never
	// booted): a warning in the log and no_output_since in its status.
	// 0 means DefaultSilentAfter; negative turns the report off.
	SilentAfter time.Duration
}

// DefaultSilentAfter is Options.SilentAfter's default.
const DefaultSilentAfter = time.Minute

// DefaultBackoff is 1 s doubling to 60 s.
func DefaultBackoff(n int) time.Duration {
	if n > 7 {
		return time.Minute
	}
	return min(time.Second<<max(n-1, 0), time.Minute)
}

// Daemon supervises the VMs. All its methods are safe for concurrent use.
type Daemon struct {
	opt Options
	log *slog.Logger

	mu    sync.Mutex
	cfg   *config.Config
	ids   map[alloc.Pair]mac.LinkID
	wired map[alloc.Pair]mac.LinkID // links whose bridge and taps exist (their client is wanted)
	// uplinks maps the MAC of every uplink tap that exists to its VM (its
	// taps live from its start until it stops, across crash restarts).
	uplinks map[string]string
	vms     map[string]*vmState
}

type vmState struct {
	name     string
	vm       *config.VM // the configuration it was started with
	want     bool       // should be running
	state    string
	inst     Instance
	restarts int
	lastExit string
	since    time.Time
	log      *vmlog.File
	console  bool
	// output is set by the serial pump when the running instance has
	// written anything to its serial console.
	output *atomic.Bool
	// stuck are the NIC ids of the running instance whose unplug did not
	// complete (the guest never released the device): QEMU still holds
	// the id, so a later hot-plug of the same link takes another.
	stuck map[string]bool
	// nics is the NIC id each provider-side link has in the running
	// instance, when it is not the plain NICID (see stuck).
	nics map[mac.LinkID]string
	kick chan struct{} // closed by Stop to cut a backoff short
	done chan struct{} // closed when the supervisor goroutine has ended
}

// New returns a daemon with nothing running. It loads the configuration
// once; Start loads it again, so VMs added later can be started.
func New(opt Options) (*Daemon, error) {
	if opt.StopTimeout == 0 {
		opt.StopTimeout = 10 * time.Second
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
	d := &Daemon{opt: opt, log: opt.Log, wired: map[alloc.Pair]mac.LinkID{}, uplinks: map[string]string{}, vms: map[string]*vmState{}}
	if err := d.reloadLocked(); err != nil {
		return nil, err
	}
	return d, nil
}

// reloadLocked reads the configuration again, logging every broken VM.
func (d *Daemon) reloadLocked() error {
	held := make([]alloc.Link, 0, len(d.wired))
	for p, id := range d.wired {
		held = append(held, alloc.Link{Pair: p, ID: id})
	}
	cfg, links, err := d.opt.Links.Load(held)
	if err != nil {
		return err
	}
	for _, e := range cfg.Errors {
		d.log.Error("invalid VM", "err", e)
	}
	d.cfg = cfg
	d.ids = make(map[alloc.Pair]mac.LinkID, len(links))
	for _, l := range links {
		d.ids[l.Pair] = l.ID
	}
	return nil
}

func (d *Daemon) stateLocked(name string) *vmState {
	vs := d.vms[name]
	if vs == nil {
		vs = &vmState{name: name, state: "stopped", log: &vmlog.File{
			Path: filepath.Join(d.opt.State, "logs", name+".log"), Max: d.opt.LogMax}}
		d.vms[name] = vs
	}
	return vs
}

// vmErrorLocked explains why name cannot be started.
func (d *Daemon) vmErrorLocked(name string) error {
	for _, e := range d.cfg.Errors {
		var ve *config.VMError
		if errors.As(e, &ve) && ve.VM == name {
			return e
		}
	}
	return fmt.Errorf("no VM named %q", name)
}

// Start starts name and, first, every provider it depends on. It returns
// once each VM's process has been launched (not once its guest has booted).
func (d *Daemon) Start(name string) error {
	d.mu.Lock()
	if err := d.reloadLocked(); err != nil {
		d.mu.Unlock()
		return err
	}
	if d.cfg.VMs[name] == nil {
		err := d.vmErrorLocked(name)
		d.mu.Unlock()
		return err
	}
	// The chain in start order: every VM name depends on, then name.
	need := map[string]bool{}
	var mark func(string)
	mark = func(n string) {
		if need[n] {
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
		if err := d.startOne(n); err != nil {
			return err
		}
	}
	return nil
}

func (d *Daemon) startOne(name string) error {
	d.mu.Lock()
	vs := d.stateLocked(name)
	if vs.want {
		d.mu.Unlock()
		return nil
	}
	if vs.done != nil {
		// A stop is still finishing; wait for it before starting again.
		done := vs.done
		d.mu.Unlock()
		<-done
		d.mu.Lock()
	}
	vm := d.cfg.VMs[name]
	if vm == nil {
		err := d.vmErrorLocked(name)
		d.mu.Unlock()
		return err
	}
	if err := d.createUplinksLocked(name, vm.Uplinks); err != nil {
		d.mu.Unlock()
		return err
	}
	vs.vm, vs.want, vs.state = vm, true, "starting"
	vs.kick, vs.done = make(chan struct{}), make(chan struct{})
	var errs []error
	for _, p := range vm.Providers {
		if err := d.wireLocked(alloc.Pair{Client: name, Provider: p}); err != nil {
			errs = append(errs, err)
		}
	}
	first := make(chan error, 1)
	go d.supervise(vs, first)
	d.mu.Unlock()
	if err := <-first; err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// createUplinksLocked adds the taps of VM name's uplinks to their host
// bridges. A bridge that is missing (or not a bridge), or a MAC whose tap
// another VM holds (one still running with an older configuration), fails
// the VM's start: what this call created is removed again, and no other VM
// is touched.
func (d *Daemon) createUplinksLocked(name string, ups []config.Uplink) error {
	var made []config.Uplink
	var err error
	for _, u := range ups {
		if other, ok := d.uplinks[u.MAC.String()]; ok && other != name {
			err = fmt.Errorf("start %s: uplink on %s: MAC %s is VM %s's, which still runs", name, u.Iface, u.MAC, other)
			break
		}
		if err = d.opt.Net.CreateUplink(u.Iface, u.MAC); err != nil {
			err = fmt.Errorf("start %s: %w", name, err)
			break
		}
		if _, ok := d.uplinks[u.MAC.String()]; !ok {
			made = append(made, u)
		}
		d.uplinks[u.MAC.String()] = name
		d.log.Info("uplink added", "vm", name, "bridge", u.Iface, "mac", u.MAC.String())
	}
	if err != nil {
		d.deleteUplinksLocked(name, made)
	}
	return err
}

// deleteUplinksLocked removes the taps of VM name's uplinks.
func (d *Daemon) deleteUplinksLocked(name string, ups []config.Uplink) error {
	var errs []error
	for _, u := range ups {
		if d.uplinks[u.MAC.String()] != name {
			continue
		}
		if err := d.opt.Net.DeleteUplink(u.MAC); err != nil {
			errs = append(errs, fmt.Errorf("uplink on %s: %w", u.Iface, err))
			continue
		}
		delete(d.uplinks, u.MAC.String())
		d.log.Info("uplink removed", "vm", name, "bridge", u.Iface, "mac", u.MAC.String())
	}
	return errors.Join(errs...)
}

// wireLocked creates a link's bridge and taps and, if the provider runs,
// hot-plugs the provider's NIC. A provider that is not running gets the NIC
// when it launches.
func (d *Daemon) wireLocked(p alloc.Pair) error {
	id, ok := d.ids[p]
	if !ok {
		return fmt.Errorf("link %s -> %s has no id", p.Provider, p.Client)
	}
	if _, ok := d.wired[p]; ok {
		return nil
	}
	if err := d.opt.Net.Create(id); err != nil {
		return fmt.Errorf("link %s (%s -> %s): %w", id, p.Provider, p.Client, err)
	}
	d.wired[p] = id
	d.log.Info("link wired", "link", id.String(), "client", p.Client, "provider", p.Provider)
	if pv := d.vms[p.Provider]; pv != nil && pv.inst != nil {
		if err := d.hotplugLocked(pv, id); err != nil {
			return err
		}
	}
	return nil
}

func (d *Daemon) hotplugLocked(pv *vmState, id mac.LinkID) error {
	tap, err := d.opt.Net.OpenTap(id, mac.Provider)
	if err != nil {
		return fmt.Errorf("hot-plug link %s into %s: %w", id, pv.name, err)
	}
	defer tap.Close()
	nic := NIC{ID: NICID(id), MAC: id.MAC(mac.Provider), Tap: tap}
	for n := 1; pv.stuck[nic.ID]; n++ {
		nic.ID = NICID(id) + "-" + strconv.Itoa(n)
	}
	if err := pv.inst.Hotplug(nic); err != nil {
		return fmt.Errorf("hot-plug link %s into %s: %w", id, pv.name, err)
	}
	if nic.ID != NICID(id) {
		pv.nics[id] = nic.ID
	}
	d.log.Info("NIC hot-plugged", "vm", pv.name, "link", id.String(), "mac", nic.MAC.String(), "id", nic.ID)
	return nil
}

// unwireLocked unplugs the provider's NIC and deletes the link.
func (d *Daemon) unwireLocked(p alloc.Pair) error {
	id, ok := d.wired[p]
	if !ok {
		return nil
	}
	var errs []error
	if pv := d.vms[p.Provider]; pv != nil && pv.inst != nil {
		nid, ok := pv.nics[id]
		if !ok {
			nid = NICID(id)
		}
		delete(pv.nics, id)
		if err := pv.inst.Unplug(nid); err != nil {
			pv.stuck[nid] = true
			errs = append(errs, fmt.Errorf("unplug link %s from %s: %w", id, p.Provider, err))
		} else {
			d.log.Info("NIC unplugged", "vm", p.Provider, "link", id.String())
		}
	}
	if err := d.opt.Net.Delete(id); err != nil {
		errs = append(errs, fmt.Errorf("delete link %s: %w", id, err))
	}
	delete(d.wired, p)
	d.log.Info("link removed", "link", id.String(), "client", p.Client, "provider", p.Provider)
	return errors.Join(errs...)
}

// specLocked gathers the NICs a VM boots with: its client side of every
// link to its providers, its provider side of every wired link of a client
// that is running or wanted, then its uplinks.
func (d *Daemon) specLocked(vs *vmState) (Spec, error) {
	dir := filepath.Join(d.opt.Run, "vms", vs.name)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return Spec{}, err
	}
	spec := Spec{VM: vs.vm, ConsolePath: d.consolePath(vs.name), QMPPath: filepath.Join(dir, "qmp.sock"),
		PIDPath: filepath.Join(dir, PIDFile)}
	pairs := make([]alloc.Pair, 0, len(d.wired))
	for p := range d.wired {
		if p.Client == vs.name || p.Provider == vs.name {
			pairs = append(pairs, p)
		}
	}
	slices.SortFunc(pairs, func(a, b alloc.Pair) int { return int(d.wired[a]) - int(d.wired[b]) })
	for _, p := range pairs {
		id := d.wired[p]
		side := mac.Client
		if p.Provider == vs.name {
			side = mac.Provider
		}
		tap, err := d.opt.Net.OpenTap(id, side)
		if err != nil {
			closeNICs(spec.NICs)
			return Spec{}, fmt.Errorf("open %s tap of link %s: %w", side, id, err)
		}
		spec.NICs = append(spec.NICs, NIC{ID: NICID(id), MAC: id.MAC(side), Tap: tap})
	}
	// The uplinks after the links. Their taps were made at start and
	// stay across restarts; CreateUplink again puts back what drifted (a
	// bridge deleted and made again lost its ports), and fails while the
	// bridge is missing, so the VM waits in backoff instead of running
	// cut off.
	for i, u := range vs.vm.Uplinks {
		err := d.opt.Net.CreateUplink(u.Iface, u.MAC)
		var tap *os.File
		if err == nil {
			tap, err = d.opt.Net.OpenUplink(u.MAC)
		}
		if err != nil {
			closeNICs(spec.NICs)
			return Spec{}, err
		}
		spec.NICs = append(spec.NICs, NIC{ID: UplinkNICID(i), MAC: u.MAC, Tap: tap})
	}
	return spec, nil
}

func closeNICs(nics []NIC) {
	for _, n := range nics {
		n.Tap.Close()
	}
}

// supervise runs one VM until it is no longer wanted, restarting it with
// backoff when it exits on its own. The first launch's result goes to first.
func (d *Daemon) supervise(vs *vmState, first chan<- error) {
	log := d.log.With("vm", vs.name)
	series := 0 // restarts in the current crash series
	for {
		d.mu.Lock()
		if !vs.want {
			d.mu.Unlock()
			break
		}
		inst, err := d.launchLocked(vs, log)
		d.mu.Unlock()
		if first != nil {
			first <- err
			first = nil
		}
		if err == nil {
			output := vs.output
			pumped := make(chan struct{})
			go func() {
				vmlog.Pump(&activityReader{r: inst.Serial(), seen: output}, vs.name, d.log, vs.log)
				close(pumped)
			}()
			started := time.Now()
			var silent *time.Timer
			if d.opt.SilentAfter > 0 {
				silent = time.AfterFunc(d.opt.SilentAfter, func() {
					if !output.Load() {
						log.Warn("VM has written nothing to its serial console since it was launched; its guest may not boot",
							"pid", inst.PID(), "for", d.opt.SilentAfter)
					}
				})
			}
			werr := inst.Wait()
			if silent != nil {
				silent.Stop()
			}
			<-pumped
			d.mu.Lock()
			vs.inst = nil
			vs.lastExit = exitString(werr)
			wanted := vs.want
			d.mu.Unlock()
			if !wanted {
				log.Info("VM stopped", "exit", exitString(werr))
				break
			}
			if time.Since(started) >= d.opt.StableAfter {
				series = 0
			}
		}
		series++
		delay := d.opt.Backoff(series)
		d.mu.Lock()
		if !vs.want {
			d.mu.Unlock()
			break
		}
		vs.restarts++
		vs.state = "backoff"
		d.mu.Unlock()
		if err != nil {
			log.Error("VM failed to launch; retrying", "err", err, "in", delay, "attempt", series)
		} else {
			log.Error("VM exited unexpectedly; restarting", "exit", vs.lastExit, "in", delay, "restarts_in_a_row", series)
		}
		if series >= 5 {
			log.Error("VM is crash-looping", "restarts_in_a_row", series)
		}
		select {
		case <-time.After(delay):
		case <-vs.kick:
		}
	}
	d.mu.Lock()
	var errs []error
	for p := range d.wired {
		if p.Client == vs.name {
			errs = append(errs, d.unwireLocked(p))
		}
	}
	errs = append(errs, d.deleteUplinksLocked(vs.name, vs.vm.Uplinks))
	if err := errors.Join(errs...); err != nil {
		log.Error("cleaning up after VM", "err", err)
	}
	vs.state = "stopped"
	// The VMM removed its sockets; the per-VM directory goes too.
	os.Remove(filepath.Join(d.opt.Run, "vms", vs.name))
	done := vs.done
	vs.done, vs.kick = nil, nil
	d.mu.Unlock()
	close(done)
}

func (d *Daemon) launchLocked(vs *vmState, log *slog.Logger) (Instance, error) {
	spec, err := d.specLocked(vs)
	if err != nil {
		return nil, err
	}
	defer closeNICs(spec.NICs)
	inst, err := d.opt.VMM.Launch(context.Background(), spec)
	if err != nil {
		return nil, fmt.Errorf("launch %s: %w", vs.name, err)
	}
	vs.inst, vs.state, vs.since = inst, "running", time.Now()
	vs.output = new(atomic.Bool)
	vs.stuck, vs.nics = map[string]bool{}, map[mac.LinkID]string{}
	nics := make([]string, len(spec.NICs))
	for i, n := range spec.NICs {
		nics[i] = n.MAC.String()
	}
	log.Info("VM launched", "pid", inst.PID(), "nics", nics)
	if err := vs.log.WriteLine(vmlog.BootMarker(inst.PID(), vs.since)); err != nil {
		log.Warn("writing VM log file", "err", err)
	}
	return inst, nil
}

func exitString(err error) string {
	if err == nil {
		return "exit status 0"
	}
	return err.Error()
}

// Stop powers name down (killing it after the stop timeout), removes its
// links and unplugs its NICs from its providers. Stopping a VM that is not
// running is not an error. Its clients keep running; their links are
// re-attached when it starts again.
func (d *Daemon) Stop(name string) error {
	d.mu.Lock()
	vs := d.vms[name]
	if vs == nil || vs.done == nil {
		unknown := d.cfg.VMs[name] == nil && vs == nil
		d.mu.Unlock()
		if unknown {
			return fmt.Errorf("no VM named %q", name)
		}
		return nil
	}
	done := vs.done
	inst := vs.inst
	if vs.want {
		vs.want = false
		vs.state = "stopping"
		close(vs.kick)
	}
	d.mu.Unlock()
	var err error
	if inst != nil {
		err = inst.Shutdown(d.opt.StopTimeout)
	}
	<-done
	if err != nil {
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

// PIDFile is the name of a VM's pid file in its run directory
// (RUN/vms/NAME/).
const PIDFile = "qemu.pid"

func (d *Daemon) consolePath(name string) string {
	return filepath.Join(d.opt.Run, "vms", name, "console.sock")
}

// activityReader notes that a VM's serial console has produced output.
type activityReader struct {
	r    io.Reader
	seen *atomic.Bool
}

func (a *activityReader) Read(p []byte) (int, error) {
	n, err := a.r.Read(p)
	if n > 0 && !a.seen.Load() {
		a.seen.Store(true)
	}
	return n, err
}
