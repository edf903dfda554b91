package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"sync"
	"time"

	"spectrum-os.org/netcfg/host/alloc"
	"spectrum-os.org/netcfg/host/config"
	"spectrum-os.org/netcfg/internal/mac"
)

// fakeVMM records launches; each instance "runs" until killed or crashed.
type fakeVMM struct {
	mu       sync.Mutex
	launches []string // "name:mac,mac"
	insts    map[string]*fakeInst
	events   []string
	// spew, if set, writes the serial output of each launched VM instead
	// of one "booted" line; silent launches VMs that write nothing.
	spew   func(w io.Writer)
	silent bool
	// crashAfterSpew, if set, makes each instance exit with it as soon as
	// spew has written its output.
	crashAfterSpew error
	// Hooks a test sets to fail or hold a call; nil hooks do nothing.
	// launchErr fails a launch; onShutdown runs before a shutdown ends
	// the instance; onHotplug and onUnplug run before those calls and fail
	// them with their error.
	launchErr func(spec Spec) error
	// launchDelay is how long each launch takes (QEMU's start-up).
	launchDelay time.Duration
	onShutdown  func(name string)
	onHotplug   func(ctx context.Context, name string, nic NIC) error
	onUnplug    func(ctx context.Context, name, id string) error
	// alive counts each VM's instances that have not exited; maxAlive is
	// the most there ever were at once.
	alive, maxAlive map[string]int
}

func (f *fakeVMM) event(s string) {
	f.mu.Lock()
	f.events = append(f.events, s)
	f.mu.Unlock()
}

func (f *fakeVMM) Launch(ctx context.Context, spec Spec) (Instance, error) {
	var macs []string
	for _, n := range spec.NICs {
		if n.Tap == nil {
			return nil, errors.New("NIC without tap")
		}
		macs = append(macs, n.MAC.String())
	}
	f.mu.Lock()
	delay := f.launchDelay
	f.mu.Unlock()
	time.Sleep(delay)
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.launchErr != nil {
		if err := f.launchErr(spec); err != nil {
			return nil, err
		}
	}
	// A pipe in the kernel, as QEMU's serial console is: what the guest
	// wrote stays readable after it exits.
	pr, pw, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	inst := &fakeInst{f: f, name: spec.VM.Name, serial: pr, w: pw, exit: make(chan error, 1), nics: map[string]string{}}
	for _, n := range spec.NICs {
		inst.nics[n.ID] = n.MAC.String()
	}
	if f.alive == nil {
		f.alive, f.maxAlive = map[string]int{}, map[string]int{}
	}
	f.alive[spec.VM.Name]++
	f.maxAlive[spec.VM.Name] = max(f.maxAlive[spec.VM.Name], f.alive[spec.VM.Name])
	f.launches = append(f.launches, fmt.Sprintf("%s:%v", spec.VM.Name, macs))
	f.events = append(f.events, "launch "+spec.VM.Name)
	if f.insts == nil {
		f.insts = map[string]*fakeInst{}
	}
	f.insts[spec.VM.Name] = inst
	switch {
	case f.spew != nil:
		spew, crash := f.spew, f.crashAfterSpew
		go func() {
			spew(pw)
			if crash != nil {
				inst.end(crash)
			}
		}()
	case !f.silent:
		go fmt.Fprintf(pw, "booted %s\n", spec.VM.Name)
	}
	return inst, nil
}

// hook returns the VMM with its hooks as they are now.
func (f *fakeVMM) hook() fakeVMM {
	f.mu.Lock()
	defer f.mu.Unlock()
	return fakeVMM{onShutdown: f.onShutdown, onHotplug: f.onHotplug, onUnplug: f.onUnplug}
}

// set changes the VMM's hooks while VMs run.
func (f *fakeVMM) set(change func(f *fakeVMM)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	change(f)
}

func (f *fakeVMM) launchCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.launches)
}

func (f *fakeVMM) inst(name string) *fakeInst {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.insts[name]
}

type fakeInst struct {
	f      *fakeVMM
	name   string
	serial *os.File
	w      *os.File
	exit   chan error
	once   sync.Once
	mu     sync.Mutex
	nics   map[string]string
	// holdNICs makes Unplug time out with the NIC still in place, as a
	// guest that never releases a hot-unplugged device.
	holdNICs bool
}

func (i *fakeInst) PID() int              { return 4242 }
func (i *fakeInst) Serial() io.ReadCloser { return i.serial }
func (i *fakeInst) Wait() error           { return <-i.exit }

// end makes the instance exit with err: its guest's side of the serial
// console closes, as a process's does when it exits.
func (i *fakeInst) end(err error) {
	i.once.Do(func() {
		i.w.Close()
		i.f.mu.Lock()
		i.f.alive[i.name]--
		i.f.mu.Unlock()
		i.exit <- err
	})
}

func (i *fakeInst) Hotplug(ctx context.Context, n NIC) error {
	if h := i.f.hook().onHotplug; h != nil {
		if err := h(ctx, i.name, n); err != nil {
			return err
		}
	}
	i.mu.Lock()
	defer i.mu.Unlock()
	if _, ok := i.nics[n.ID]; ok {
		return fmt.Errorf("duplicate NIC id %s", n.ID)
	}
	i.nics[n.ID] = n.MAC.String()
	i.f.event("hotplug " + i.name + " " + n.MAC.String())
	return nil
}
func (i *fakeInst) Unplug(ctx context.Context, id string) error {
	if h := i.f.hook().onUnplug; h != nil {
		if err := h(ctx, i.name, id); err != nil {
			return err
		}
	}
	i.mu.Lock()
	defer i.mu.Unlock()
	if _, ok := i.nics[id]; !ok {
		return fmt.Errorf("no NIC %s", id)
	}
	if i.holdNICs {
		return fmt.Errorf("unplug %s: guest did not release the device: %w", id, context.DeadlineExceeded)
	}
	delete(i.nics, id)
	i.f.event("unplug " + i.name + " " + id)
	return nil
}
func (i *fakeInst) Shutdown(context.Context) error {
	i.f.event("shutdown " + i.name)
	if h := i.f.hook().onShutdown; h != nil {
		h(i.name)
	}
	i.end(nil)
	return nil
}
func (i *fakeInst) NICs() []string {
	i.mu.Lock()
	defer i.mu.Unlock()
	var out []string
	for _, m := range i.nics {
		out = append(out, m)
	}
	slices.Sort(out)
	return out
}

// fakeNet keeps the set of links that exist, and of uplink taps.
type fakeNet struct {
	mu    sync.Mutex
	links map[mac.LinkID]bool
	// createErr, if set, fails Create after it made the bridge (a link
	// left half made).
	createErr func(id mac.LinkID) error
	// bridges are the host bridges there are: an uplink on another fails.
	bridges map[string]bool
	taps    map[string]string // uplink taps: MAC -> bridge
	events  []string          // "add MAC bridge", "delete MAC": the uplink taps made and removed
}

func (n *fakeNet) CreateUplink(br string, m net.HardwareAddr) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if !n.bridges[br] {
		return fmt.Errorf("uplink: host bridge %s: no such interface", br)
	}
	if n.taps == nil {
		n.taps = map[string]string{}
	}
	if _, ok := n.taps[m.String()]; !ok {
		n.events = append(n.events, "add "+m.String()+" "+br)
	}
	n.taps[m.String()] = br
	return nil
}

func (n *fakeNet) OpenUplink(m net.HardwareAddr) (*os.File, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if _, ok := n.taps[m.String()]; !ok {
		return nil, fmt.Errorf("no uplink tap for %s", m)
	}
	return os.Open(os.DevNull)
}

func (n *fakeNet) DeleteUplink(m net.HardwareAddr) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if _, ok := n.taps[m.String()]; ok {
		n.events = append(n.events, "delete "+m.String())
	}
	delete(n.taps, m.String())
	return nil
}

func (n *fakeNet) uplinkEvents() []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return slices.Clone(n.events)
}

func (n *fakeNet) Create(id mac.LinkID) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.links == nil {
		n.links = map[mac.LinkID]bool{}
	}
	n.links[id] = true
	if n.createErr != nil {
		return n.createErr(id)
	}
	return nil
}

func (n *fakeNet) OpenTap(id mac.LinkID, side mac.Side) (*os.File, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if !n.links[id] {
		return nil, fmt.Errorf("link %s does not exist", id)
	}
	return os.Open(os.DevNull)
}

func (n *fakeNet) Delete(id mac.LinkID) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	delete(n.links, id)
	return nil
}

func (n *fakeNet) Cleanup(keep map[mac.LinkID]bool) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	for id := range n.links {
		if !keep[id] {
			delete(n.links, id)
		}
	}
	return nil
}

func (n *fakeNet) count() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return len(n.links)
}

// staticLinks is a configuration given as a map of VM to providers. Held
// links keep their ids; other pairs get the lowest free ids from 01:01 on,
// in pair order.
type staticLinks struct {
	vms     map[string][]string
	uplinks map[string][]config.Uplink // by VM; a test may change it between calls
	pci     map[string][]config.PCIUplink
}

func (s staticLinks) Load(held []alloc.Link) (*config.Config, []alloc.Link, error) {
	cfg := &config.Config{VMs: map[string]*config.VM{}}
	var names []string
	for n := range s.vms {
		names = append(names, n)
	}
	slices.Sort(names)
	// Providers first: repeat until every VM is placed (tests have no
	// cycles); a VM whose provider is missing is left out.
	placed := map[string]bool{}
	for progress := true; progress; {
		progress = false
		for _, n := range names {
			if placed[n] {
				continue
			}
			ok := true
			for _, p := range s.vms[n] {
				ok = ok && placed[p]
			}
			if ok {
				placed[n] = true
				progress = true
				cfg.Order = append(cfg.Order, n)
			}
		}
	}
	ids := map[alloc.Pair]mac.LinkID{}
	used := map[mac.LinkID]bool{}
	for _, l := range held {
		ids[l.Pair], used[l.ID] = l.ID, true
	}
	next := mac.LinkID(0x0101)
	for _, n := range cfg.Order {
		cfg.VMs[n] = &config.VM{Name: n, Providers: slices.Sorted(slices.Values(s.vms[n])), Uplinks: s.uplinks[n], PCI: s.pci[n]}
		for _, p := range cfg.VMs[n].Providers {
			pair := alloc.Pair{Client: n, Provider: p}
			if _, ok := ids[pair]; ok {
				continue
			}
			for used[next] {
				next++
			}
			ids[pair], used[next] = next, true
		}
	}
	links := make([]alloc.Link, 0, len(ids))
	for p, id := range ids {
		links = append(links, alloc.Link{Pair: p, ID: id})
	}
	slices.SortFunc(links, func(a, b alloc.Link) int { return int(a.ID) - int(b.ID) })
	return cfg, links, nil
}

// liveConfig is a configuration a test changes while the daemon runs:
// VMs come and go, and a VM in bad is invalid (an error of the
// configuration, as a broken directory is).
type liveConfig struct {
	mu    sync.Mutex
	vms   map[string][]string
	bad   map[string]bool
	loads int // calls of Load
}

func (c *liveConfig) change(f func(vms map[string][]string, bad map[string]bool)) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.bad == nil {
		c.bad = map[string]bool{}
	}
	f(c.vms, c.bad)
}

func (c *liveConfig) Load(held []alloc.Link) (*config.Config, []alloc.Link, error) {
	c.mu.Lock()
	c.loads++
	vms := map[string][]string{}
	var bad []string
	for n, ps := range c.vms {
		if c.bad[n] {
			bad = append(bad, n)
			continue
		}
		vms[n] = slices.Clone(ps)
	}
	c.mu.Unlock()
	cfg, links, err := staticLinks{vms: vms}.Load(held)
	for _, n := range bad {
		cfg.Errors = append(cfg.Errors, &config.VMError{VM: n, Path: n + "/blk/root.img", Err: errors.New("a symlink out of the VM's directory")})
	}
	return cfg, links, err
}

// nicIDs are the ids of the instance's NICs, sorted.
func (i *fakeInst) nicIDs() []string {
	i.mu.Lock()
	defer i.mu.Unlock()
	var out []string
	for id := range i.nics {
		out = append(out, id)
	}
	slices.Sort(out)
	return out
}
