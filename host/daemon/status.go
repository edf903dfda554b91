package daemon

import (
	"cmp"
	"fmt"
	"io"
	"net"
	"slices"
	"strings"
	"sync"
	"time"

	"spectrum-os.org/netcfg/host/alloc"
	"spectrum-os.org/netcfg/host/control"
	"spectrum-os.org/netcfg/host/vmlog"
	"spectrum-os.org/netcfg/internal/mac"
)

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
		return control.VMStatus{}, d.vmErrorLocked(name)
	}
	return d.statusLocked(name), nil
}

func (d *Daemon) statusLocked(name string) control.VMStatus {
	st := control.VMStatus{Name: name, State: "stopped"}
	if vs := d.vms[name]; vs != nil {
		st.State, st.Restarts, st.LastExit = vs.state, vs.restarts, vs.lastExit
		if vs.inst != nil {
			st.PID, st.Since = vs.inst.PID(), vs.since
			if d.opt.SilentAfter > 0 && !vs.output.Load() && time.Since(vs.since) >= d.opt.SilentAfter {
				st.NoOutputSince = vs.since
			}
		}
	}
	for p, id := range d.ids {
		switch name {
		case p.Client:
			st.Links = append(st.Links, control.LinkStatus{Peer: p.Provider, Role: "client", ID: id.String(), MAC: id.MAC(mac.Client).String()})
		case p.Provider:
			st.Links = append(st.Links, control.LinkStatus{Peer: p.Client, Role: "provider", ID: id.String(), MAC: id.MAC(mac.Provider).String()})
		}
	}
	slices.SortFunc(st.Links, func(a, b control.LinkStatus) int {
		return cmp.Or(strings.Compare(a.Role, b.Role), strings.Compare(a.Peer, b.Peer))
	})
	vm := d.cfg.VMs[name]
	if vs := d.vms[name]; vs != nil && vs.done != nil {
		vm = vs.vm // started: the configuration it runs with
	}
	if vm != nil {
		for _, u := range vm.Uplinks {
			st.Uplinks = append(st.Uplinks, control.UplinkStatus{Iface: u.Iface, MAC: u.MAC.String()})
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
	if d.cfg.VMs[name] == nil && d.vms[name] == nil {
		return nil, d.vmErrorLocked(name)
	}
	return d.stateLocked(name).log, nil
}

// Console connects to the VM's virtio-console, one user at a time.
func (d *Daemon) Console(name string) (io.ReadWriteCloser, error) {
	d.mu.Lock()
	vs := d.vms[name]
	if vs == nil || vs.inst == nil {
		defer d.mu.Unlock()
		if d.cfg.VMs[name] == nil && vs == nil {
			return nil, d.vmErrorLocked(name)
		}
		return nil, fmt.Errorf("VM %s is not running", name)
	}
	if vs.console {
		d.mu.Unlock()
		return nil, fmt.Errorf("the console of %s is in use by another client; only one at a time", name)
	}
	vs.console = true
	path := d.consolePath(name)
	d.mu.Unlock()
	c, err := net.DialTimeout("unix", path, 5*time.Second)
	if err != nil {
		d.mu.Lock()
		vs.console = false
		d.mu.Unlock()
		return nil, fmt.Errorf("console of %s: %w", name, err)
	}
	return &consoleConn{Conn: c, release: func() {
		d.mu.Lock()
		vs.console = false
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
