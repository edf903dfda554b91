package link

import (
	"bytes"
	"fmt"
	"net"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// lockPort makes the bridge accept from a VM's tap only frames whose source
// MAC is the VM's own, m, so a VM cannot pass itself off as another VM (a
// client as another client or as the provider; an uplink as another host of
// the LAN), and a forged MAC cannot poison the bridge's forwarding table and
// steal others' traffic. It uses the bridge's own port locking (Linux 5.18+,
// no tc or netfilter modules needed): the port does not learn, m is a
// static forwarding entry on it, and a locked port drops every
// frame whose source MAC has no entry pointing to that port. Each change is
// logged; applying twice changes nothing.
func (n *Net) lockPort(tap netlink.Link, m net.HardwareAddr) error {
	name := tap.Attrs().Name
	pi, err := n.h.LinkGetProtinfo(tap)
	if err != nil {
		return fmt.Errorf("bridge port flags of %s: %w", name, err)
	}
	if pi.Learning {
		if err := n.h.LinkSetLearning(tap, false); err != nil {
			return fmt.Errorf("turn off learning on %s: %w", name, err)
		}
		n.log.Info("link: bridge port learns no MACs", "name", name)
	}
	fdb, err := n.h.NeighList(tap.Attrs().Index, unix.AF_BRIDGE)
	if err != nil {
		return fmt.Errorf("forwarding entries of %s: %w", name, err)
	}
	have := false
	for _, e := range fdb {
		// The bridge's entries (MasterIndex set) come back without
		// NTF_MASTER in a dump; static ones are NUD_NOARP.
		if bytes.Equal(e.HardwareAddr, m) && e.MasterIndex != 0 && e.State&netlink.NUD_NOARP != 0 && e.Vlan == 0 {
			have = true
		}
	}
	if !have {
		if err := n.h.NeighSet(&netlink.Neigh{
			LinkIndex: tap.Attrs().Index, Family: unix.AF_BRIDGE,
			Flags: netlink.NTF_MASTER, State: netlink.NUD_NOARP, HardwareAddr: m,
		}); err != nil {
			return fmt.Errorf("add static forwarding entry %s on %s: %w", m, name, err)
		}
		n.log.Info("link: static forwarding entry", "name", name, "mac", m.String())
	}
	var locked bool
	if err := n.inNS(func() (err error) { locked, err = portLocked(tap.Attrs().Index); return err }); err != nil {
		return fmt.Errorf("bridge port flags of %s: %w", name, err)
	}
	if !locked {
		if err := n.inNS(func() error { return setPortLocked(tap.Attrs().Index) }); err != nil {
			return fmt.Errorf("lock bridge port %s: %w", name, err)
		}
		n.log.Info("link: bridge port locked to its MAC", "name", name, "mac", m.String())
	}
	return nil
}

// setPortLocked sets IFLA_BRPORT_LOCKED on a bridge port (netlink has no
// call for it) through a netlink socket of the calling thread's namespace.
func setPortLocked(index int) error {
	req := nl.NewNetlinkRequest(unix.RTM_SETLINK, unix.NLM_F_ACK)
	msg := nl.NewIfInfomsg(unix.AF_BRIDGE)
	msg.Index = int32(index)
	req.AddData(msg)
	pi := nl.NewRtAttr(unix.IFLA_PROTINFO|unix.NLA_F_NESTED, nil)
	pi.AddRtAttr(unix.IFLA_BRPORT_LOCKED, []byte{1})
	req.AddData(pi)
	_, err := req.Execute(unix.NETLINK_ROUTE, 0)
	return err
}

// portLocked reads IFLA_BRPORT_LOCKED of a bridge port from a dump of the
// bridge ports of the calling thread's namespace.
func portLocked(index int) (bool, error) {
	req := nl.NewNetlinkRequest(unix.RTM_GETLINK, unix.NLM_F_DUMP)
	req.AddData(nl.NewIfInfomsg(unix.AF_BRIDGE))
	msgs, err := req.Execute(unix.NETLINK_ROUTE, unix.RTM_NEWLINK)
	if err != nil {
		return false, err
	}
	for _, m := range msgs {
		ifi := nl.DeserializeIfInfomsg(m)
		if int(ifi.Index) != index {
			continue
		}
		attrs, err := nl.ParseRouteAttr(m[ifi.Len():])
		if err != nil {
			return false, err
		}
		for _, a := range attrs {
			if a.Attr.Type&^unix.NLA_F_NESTED != unix.IFLA_PROTINFO {
				continue
			}
			infos, err := nl.ParseRouteAttr(a.Value)
			if err != nil {
				return false, err
			}
			for _, i := range infos {
				if i.Attr.Type == unix.IFLA_BRPORT_LOCKED && len(i.Value) > 0 {
					return i.Value[0] != 0, nil
				}
			}
		}
		return false, nil
	}
	return false, fmt.Errorf("no bridge port with index %d", index)
}
