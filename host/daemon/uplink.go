package daemon

import (
	"errors"
	"fmt"
	"maps"
	"slices"

	"spectrum-os.org/netcfg/host/config"
)

// A VM's uplinks (uplinks/net/<bridge>) are taps of spectrumd's own on the
// user's host bridges. The VM's owner makes them when the VM starts, keeps
// them across crash restarts (same tap, same MAC), and removes them when
// it stops; Daemon.uplinks says which VM holds each MAC, so two VMs never
// share one (a VM may still run with an older configuration).

// syncUplinks makes the taps of the VM's configured uplinks and removes
// those of uplinks it no longer has. A bridge that is missing (or not a
// bridge), or a MAC another VM holds, is an error naming it; what this
// call made is then removed again, and no other VM is touched.
func (o *owner) syncUplinks() error {
	want := map[string]bool{}
	for _, u := range o.vm.Uplinks {
		want[u.MAC.String()] = true
	}
	for _, m := range slices.Sorted(maps.Keys(o.ups)) {
		if !want[m] {
			if err := o.deleteUplink(o.ups[m]); err != nil {
				o.log.Error("removing a former uplink", "err", err)
			}
		}
	}
	var made []config.Uplink
	var err error
	for _, u := range o.vm.Uplinks {
		m := u.MAC.String()
		if _, ok := o.ups[m]; ok {
			continue
		}
		o.d.mu.Lock()
		other, held := o.d.uplinks[m]
		held = held && other != o.name // a tap of its own that could not be removed
		if !held {
			o.d.uplinks[m] = o.name
		}
		o.d.mu.Unlock()
		if held {
			err = fmt.Errorf("uplink on %s: MAC %s is VM %s's, which still runs", u.Iface, u.MAC, other)
			break
		}
		if err = o.d.opt.Net.CreateUplink(u.Iface, u.MAC); err != nil {
			o.d.mu.Lock()
			delete(o.d.uplinks, m)
			o.d.mu.Unlock()
			break
		}
		o.ups[m] = u
		made = append(made, u)
		o.log.Info("uplink added", "bridge", u.Iface, "mac", m)
	}
	if err != nil {
		for _, u := range made {
			if derr := o.deleteUplink(u); derr != nil {
				o.log.Error("removing an uplink", "err", derr)
			}
		}
	}
	return err
}

// deleteUplink removes the tap of one of the VM's uplinks. A tap that
// cannot be removed stays held by the VM's name, so no other VM takes its
// MAC; the VM's next start takes it over.
func (o *owner) deleteUplink(u config.Uplink) error {
	m := u.MAC.String()
	delete(o.ups, m)
	if err := o.d.opt.Net.DeleteUplink(u.MAC); err != nil {
		return fmt.Errorf("uplink on %s: %w", u.Iface, err)
	}
	o.d.mu.Lock()
	if o.d.uplinks[m] == o.name {
		delete(o.d.uplinks, m)
	}
	o.d.mu.Unlock()
	o.log.Info("uplink removed", "bridge", u.Iface, "mac", m)
	return nil
}

// deleteUplinks removes every uplink tap of the VM.
func (o *owner) deleteUplinks() {
	var errs []error
	for _, m := range slices.Sorted(maps.Keys(o.ups)) {
		errs = append(errs, o.deleteUplink(o.ups[m]))
	}
	if err := errors.Join(errs...); err != nil {
		o.log.Error("removing the VM's uplinks", "err", err)
	}
}
