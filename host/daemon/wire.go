package daemon

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"

	"spectrum-os.org/netcfg/host/alloc"
	"spectrum-os.org/netcfg/internal/mac"
)

// A link belongs to its client: the client's owner makes it before its VM
// launches and removes it once its VM has stopped. The provider's owner
// only plugs the provider side into its running VM, when the client asks
// (by message) or when the provider launches (cold-plug).

// wire makes the VM's link to each of its providers and has each provider
// plug its side in. Links made before (a relaunch) are made again if they
// vanished and plugged again if their provider lost them; links to
// providers no longer configured are removed. It stops at the first
// failure, whose error names the link; the caller decides whether to undo
// the rest (a first start does).
func (o *owner) wire() error {
	want := map[alloc.Pair]bool{}
	for _, prov := range o.vm.Providers {
		want[alloc.Pair{Client: o.name, Provider: prov}] = true
	}
	for _, p := range o.minePairs() {
		if !want[p] {
			if err := o.unwire(p); err != nil {
				o.log.Error("removing a link to a former provider", "err", err)
			}
		}
	}
	for _, prov := range o.vm.Providers {
		p := alloc.Pair{Client: o.name, Provider: prov}
		id, had := o.mine[p]
		if !had {
			var err error
			if id, err = o.d.reserve(p); err != nil {
				return err
			}
			o.mine[p] = id
		}
		if err := o.d.opt.Net.Create(id); err != nil {
			return fmt.Errorf("link %s (%s -> %s): %w", id, prov, o.name, err)
		}
		if err := o.ask(p, id, true); err != nil {
			return fmt.Errorf("link %s (%s -> %s): %w", id, prov, o.name, err)
		}
		if !had {
			o.log.Info("link wired", "link", id.String(), "client", o.name, "provider", prov)
		}
	}
	return nil
}

func (o *owner) minePairs() []alloc.Pair {
	ps := make([]alloc.Pair, 0, len(o.mine))
	for p := range o.mine {
		ps = append(ps, p)
	}
	slices.SortFunc(ps, func(a, b alloc.Pair) int { return int(o.mine[a]) - int(o.mine[b]) })
	return ps
}

// unwire has the provider unplug its side of link p and removes the link.
func (o *owner) unwire(p alloc.Pair) error {
	id := o.mine[p]
	var errs []error
	if err := o.ask(p, id, false); err != nil {
		errs = append(errs, err)
	}
	if err := o.d.opt.Net.Delete(id); err != nil {
		errs = append(errs, fmt.Errorf("delete link %s: %w", id, err))
	}
	o.d.release(p)
	delete(o.mine, p)
	o.log.Info("link removed", "link", id.String(), "client", p.Client, "provider", p.Provider)
	return errors.Join(errs...)
}

// unwireAll removes every link the VM made. An unplug that fails (a guest
// that keeps the device) does not keep the link: its provider's owner
// notes the NIC id as stuck.
func (o *owner) unwireAll() {
	var errs []error
	for _, p := range o.minePairs() {
		errs = append(errs, o.unwire(p))
	}
	if err := errors.Join(errs...); err != nil {
		o.log.Error("removing the VM's links", "err", err)
	}
}

// ask marks link p live (plug) or not, and has p's provider plug or unplug
// its side if it runs; it waits for the provider's answer, answering its
// own clients meanwhile. A provider with no owner runs nothing: it picks
// the link up (or not) when it launches, and the lock taken here with the
// one it takes to read the live links makes sure one of the two happens.
func (o *owner) ask(p alloc.Pair, id mac.LinkID, plug bool) error {
	d := o.d
	d.mu.Lock()
	if l := d.links[p]; l != nil {
		l.live = plug
	}
	var po *owner
	if e := d.vms[p.Provider]; e != nil {
		po = e.owner
	}
	if po != nil {
		po.inflight.Add(1)
	}
	d.mu.Unlock()
	if po == nil {
		return nil
	}
	reply := make(chan error, 1)
	req := nicReq{plug: plug, id: id, client: o.name, reply: reply}
	send := po.nic
	for {
		select {
		case send <- req:
			send = nil
		case err := <-reply:
			return err
		case r := <-o.nic:
			o.inflight.Add(-1)
			r.reply <- o.plug(r)
		}
	}
}

// plug answers a client's request for its link's NIC in this VM.
func (o *owner) plug(r nicReq) error {
	switch {
	case o.inst == nil:
		return nil // nothing runs: the next launch cold-plugs what is live
	case !o.want:
		// Stopping: nothing is plugged into a VM on its way down, and
		// what it had goes with it.
		delete(o.plugged, r.id)
		return nil
	case r.plug:
		return o.hotplug(r.id, r.client)
	default:
		return o.unplug(r.id, r.client)
	}
}

func (o *owner) hotplug(id mac.LinkID, client string) error {
	if _, ok := o.plugged[id]; ok {
		return nil // cold-plugged at launch, or plugged before
	}
	tap, err := o.d.opt.Net.OpenTap(id, mac.Provider)
	if err != nil {
		return fmt.Errorf("hot-plug into %s: %w", o.name, err)
	}
	defer tap.Close()
	nic := NIC{ID: NICID(id), MAC: id.MAC(mac.Provider), Tap: tap}
	for n := 1; o.stuck[nic.ID]; n++ {
		nic.ID = NICID(id) + "-" + strconv.Itoa(n)
	}
	ctx, cancel := context.WithTimeout(context.Background(), o.d.opt.NICTimeout)
	defer cancel()
	inst := o.inst
	if err := bounded(ctx, func() error { return inst.Hotplug(ctx, nic) }); err != nil {
		// It may have been half made: never use that id again in this
		// instance.
		o.stuck[nic.ID] = true
		return fmt.Errorf("hot-plug into %s: %w", o.name, err)
	}
	o.plugged[id] = nic.ID
	o.log.Info("NIC hot-plugged", "link", id.String(), "client", client, "mac", nic.MAC.String(), "id", nic.ID)
	return nil
}

func (o *owner) unplug(id mac.LinkID, client string) error {
	nid, ok := o.plugged[id]
	if !ok {
		return nil
	}
	delete(o.plugged, id)
	ctx, cancel := context.WithTimeout(context.Background(), o.d.opt.NICTimeout)
	defer cancel()
	inst := o.inst
	if err := bounded(ctx, func() error { return inst.Unplug(ctx, nid) }); err != nil {
		// The guest may still hold the device, and QEMU its id: a later
		// hot-plug of the same link takes another.
		o.stuck[nid] = true
		return fmt.Errorf("unplug link %s from %s: %w", id, o.name, err)
	}
	o.log.Info("NIC unplugged", "link", id.String(), "client", client)
	return nil
}

// reserve records link p as being made, with the id the configuration
// gives it, so that reloads hold its id from now on.
func (d *Daemon) reserve(p alloc.Pair) (mac.LinkID, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	id, ok := d.ids[p]
	if !ok {
		return 0, fmt.Errorf("link %s -> %s has no id", p.Provider, p.Client)
	}
	for q, l := range d.links {
		if l.id == id && q != p {
			return 0, fmt.Errorf("link %s -> %s: id %s is still held by link %s -> %s", p.Provider, p.Client, id, q.Provider, q.Client)
		}
	}
	if l := d.links[p]; l != nil {
		return l.id, nil
	}
	d.links[p] = &hostLink{id: id}
	d.linkGen++
	return id, nil
}

// release forgets link p once it is removed.
func (d *Daemon) release(p alloc.Pair) {
	d.mu.Lock()
	delete(d.links, p)
	d.mu.Unlock()
}

func (d *Daemon) isLive(p alloc.Pair) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	l := d.links[p]
	return l != nil && l.live
}
