package daemon

import (
	"cmp"
	"fmt"
	"io"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"spectrum-os.org/netcfg/host/alloc"
	"spectrum-os.org/netcfg/host/config"
	"spectrum-os.org/netcfg/host/control"
	"spectrum-os.org/netcfg/host/vmlog"
	"spectrum-os.org/netcfg/internal/mac"
)

// snapshot is what readers see of a VM, written by its owner under
// Daemon.mu as its state changes: List, Status, Logs and Console read only
// this, never the owner, so they answer whatever the owner is waiting for.
type snapshot struct {
	state    string
	pid      int // 0 unless a process runs
	since    time.Time
	restarts int
	lastExit string
	err      string // why the VM failed, or why its last relaunch failed
	// output is set by the serial pump once the running instance has
	// written anything to its serial console.
	output *atomic.Bool
	// vm is the configuration the VM was started (or last relaunched)
	// with, while it is wanted.
	vm *config.VM
}

// List reports every configured VM and every VM still running.
func (d *Daemon) List() []control.VMStatus {
	d.mu.Lock()
	defer d.mu.Unlock()
	names := slices.Clone(d.cfg.Order)
	for n := range d.vms {
		if d.cfg.VMs[n] == nil {
			names = append(names, n)
		}
	}
	slices.Sort(names)
	out := make([]control.VMStatus, 0, len(names))
	for _, n := range names {
		out = append(out, d.statusLocked(n))
	}
	return out
}

// Status reports one VM.
func (d *Daemon) Status(name string) (control.VMStatus, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.cfg.VMs[name] == nil && d.vms[name] == nil {
		return control.VMStatus{}, d.whyNotLocked(name)
	}
	return d.statusLocked(name), nil
}

func (d *Daemon) statusLocked(name string) control.VMStatus {
	st := control.VMStatus{Name: name, State: stateStopped}
	if e := d.vms[name]; e != nil {
		s := e.snap
		st.State, st.Restarts, st.LastExit, st.Error = s.state, s.restarts, s.lastExit, s.err
		if s.pid != 0 {
			st.PID, st.Since = s.pid, s.since
			if d.opt.SilentAfter > 0 && s.output != nil && !s.output.Load() && time.Since(s.since) >= d.opt.SilentAfter {
				st.NoOutputSince = s.since
			}
		}
	}
	for p, id := range d.ids {
		switch name {
		case p.Client:
			st.Links = append(st.Links, linkStatus(p.Provider, mac.Client, id))
		case p.Provider:
			st.Links = append(st.Links, linkStatus(p.Client, mac.Provider, id))
		}
	}
	slices.SortFunc(st.Links, func(a, b control.LinkStatus) int {
		return cmp.Or(strings.Compare(a.Role, b.Role), strings.Compare(a.Peer, b.Peer))
	})
	vm := d.cfg.VMs[name]
	if e := d.vms[name]; e != nil && e.snap.vm != nil {
		vm = e.snap.vm // started: the configuration it runs with
	}
	if vm != nil {
		for _, u := range vm.Uplinks {
			st.Uplinks = append(st.Uplinks, control.UplinkStatus{Iface: u.Iface, MAC: u.MAC.String()})
		}
		for _, u := range vm.PCI {
			st.PCI = append(st.PCI, u.Addr)
		}
	}
	if vm := d.cfg.VMs[name]; vm != nil {
		// The directory as last loaded, whether or not the VM runs with it.
		for _, w := range vm.Warnings {
			st.Warnings = append(st.Warnings, w.Path+": "+w.Msg)
		}
	}
	return st
}

// LinkID returns the id of the link between client and provider, for tests
// and tools.
func (d *Daemon) LinkID(client, provider string) (mac.LinkID, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	id, ok := d.ids[alloc.Pair{Client: client, Provider: provider}]
	return id, ok
}

// Logs returns the VM's log file.
func (d *Daemon) Logs(name string) (*vmlog.File, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.configuredLocked(name) && d.vms[name] == nil {
		return nil, d.whyNotLocked(name)
	}
	return d.entryLocked(name).log, nil
}

// Console connects to the VM's virtio-console, one user at a time.
func (d *Daemon) Console(name string) (io.ReadWriteCloser, error) {
	d.mu.Lock()
	e := d.vms[name]
	if e == nil || e.snap.pid == 0 {
		defer d.mu.Unlock()
		if d.cfg.VMs[name] == nil && e == nil {
			return nil, d.whyNotLocked(name)
		}
		return nil, fmt.Errorf("VM %s is not running", name)
	}
	if e.console {
		d.mu.Unlock()
		return nil, fmt.Errorf("the console of %s is in use by another client; only one at a time", name)
	}
	e.console = true
	path := d.consolePath(name)
	d.mu.Unlock()
	c, err := net.DialTimeout("unix", path, 5*time.Second)
	if err != nil {
		d.mu.Lock()
		e.console = false
		d.mu.Unlock()
		return nil, fmt.Errorf("console of %s: %w", name, err)
	}
	return &consoleConn{Conn: c, release: func() {
		d.mu.Lock()
		e.console = false
		d.mu.Unlock()
	}}, nil
}

type consoleConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *consoleConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}

// linkStatus is one end of link id as status shows it: the NIC and the
// addresses spectrum-netcfg gives it from its MAC (docs/DESIGN.md's MAC
// scheme, both families), so that a user can tell which VM an address in
// a log or a capture is without asking the guest.
func linkStatus(peer string, side mac.Side, id mac.LinkID) control.LinkStatus {
	l := control.LinkStatus{Peer: peer, Role: side.String(), ID: id.String(), MAC: id.MAC(side).String()}
	var addrs []netip.Prefix
	if side == mac.Client {
		addrs = []netip.Prefix{id.ClientPrefix(), netip.PrefixFrom(id.ClientAddr6(), 64)}
		l.Gateways = []string{id.Gateway().String(), mac.LinkLocalGateway.String()}
	} else {
		addrs = []netip.Prefix{netip.PrefixFrom(id.Gateway(), 32), netip.PrefixFrom(id.ProviderAddr6(), 64),
			netip.PrefixFrom(mac.LinkLocalGateway, 64)}
	}
	for _, a := range addrs {
		l.Addrs = append(l.Addrs, a.String())
	}
	return l
}
