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
	pr, pw := io.Pipe()
	inst := &fakeInst{f: f, name: spec.VM.Name, serial: pr, w: pw, exit: make(chan error, 1), nics: map[string]string{}}
	for _, n := range spec.NICs {
		inst.nics[n.ID] = n.MAC.String()
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.launches = append(f.launches, fmt.Sprintf("%s:%v", spec.VM.Name, macs))
	f.events = append(f.events, "launch "+spec.VM.Name)
	if f.insts == nil {
		f.insts = map[string]*fakeInst{}
	}
	f.insts[spec.VM.Name] = inst
	switch {
	case f.spew != nil:
		go f.spew(pw)
	case !f.silent:
		go fmt.Fprintf(pw, "booted %s\n", spec.VM.Name)
	}
	return inst, nil
}

func (f *fakeVMM) inst(name string) *fakeInst {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.insts[name]
}

type fakeInst struct {
	f      *fakeVMM
	name   string
	serial io.Reader
	w      *io.PipeWriter
	exit   chan error
	once   sync.Once
	mu     sync.Mutex
	nics   map[string]string
	// holdNICs makes Unplug time out with the NIC still in place, as a
	// guest that never releases a hot-unplugged device.
	holdNICs bool
}

func (i *fakeInst) PID() int          { return 4242 }
func (i *fakeInst) Serial() io.Reader { return i.serial }
func (i *fakeInst) Wait() error       { return <-i.exit }
func (i *fakeInst) end(err error) {
	i.once.Do(func() { i.w.Close(); i.exit <- err })
}
func (i *fakeInst) Hotplug(n NIC) error {
	i.mu.Lock()
	defer i.mu.Unlock()
	if _, ok := i.nics[n.ID]; ok {
		return fmt.Errorf("duplicate NIC id %s", n.ID)
	}
	i.nics[n.ID] = n.MAC.String()
	i.f.event("hotplug " + i.name + " " + n.MAC.String())
	return nil
}
func (i *fakeInst) Unplug(id string) error {
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
func (i *fakeInst) Shutdown(time.Duration) error {
	i.f.event("shutdown " + i.name)
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

// staticLinks is a configuration given as a map of VM to providers, with
// link ids numbered in pair order.
type staticLinks struct {
	vms     map[string][]string
	uplinks map[string][]config.Uplink // by VM; a test may change it between calls
}

func (s staticLinks) Load(held []alloc.Link) (*config.Config, []alloc.Link, error) {
	cfg := &config.Config{VMs: map[string]*config.VM{}}
	var names []string
	for n := range s.vms {
		names = append(names, n)
	}
	slices.Sort(names)
	// Providers first: repeat until every VM is placed (tests have no cycles).
	placed := map[string]bool{}
	for len(cfg.Order) < len(names) {
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
				cfg.Order = append(cfg.Order, n)
			}
		}
	}
	var links []alloc.Link
	id := mac.LinkID(0x0100)
	for _, n := range names {
		cfg.VMs[n] = &config.VM{Name: n, Providers: slices.Sorted(slices.Values(s.vms[n])), Uplinks: s.uplinks[n]}
		for _, p := range cfg.VMs[n].Providers {
			id++
			links = append(links, alloc.Link{Pair: alloc.Pair{Client: n, Provider: p}, ID: id})
		}
	}
	return cfg, links, nil
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
