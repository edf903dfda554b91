package guest

import (
	"context"
	"encoding/binary"
	"errors"
	"slices"
	"time"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"spectrum-os.org/netcfg/internal/mac"
)

// Watch configures NICs as link notifications arrive on nc, which must have
// joined RTMGRP_LINK before the first scan. It returns when ctx ends, with
// status 0 when every inter-guest NIC it knows of is configured, and 1
// otherwise or when notifications cannot be read. The caller logs the
// final "stopped" line.
func (a *Agent) Watch(ctx context.Context, nc *netlink.Conn) int {
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		select {
		case <-ctx.Done():
			// A deadline in the past makes the blocked Receive return.
			_ = nc.SetReadDeadline(time.Unix(1, 0))
		case <-stop:
		}
	}()
	a.log.Line("spectrum-netcfg: watching for new NICs")
	a.log.Flush()
	for {
		msgs, err := nc.Receive()
		if ctx.Err() != nil {
			break
		}
		var pending []Link
		switch {
		case errors.Is(err, unix.ENOBUFS):
			// The kernel dropped notifications: what changed is
			// unknown, so look at every link again.
			a.log.Line("spectrum-netcfg: link notifications overflowed, listing links again")
			links, err := scanLinks(a.c)
			if err != nil {
				a.log.Line("spectrum-netcfg: error: ", err.Error())
			}
			present := make(map[uint32]bool, len(links))
			for _, l := range links {
				present[l.Index] = true
				if a.needs(l) {
					pending = append(pending, l)
				}
			}
			if err == nil {
				// A removal among the lost notifications.
				a.vanished(present)
			}
		case err != nil:
			a.log.Line("spectrum-netcfg: error: receive link notifications: ", err.Error())
			a.log.Flush()
			return 1
		}
		for _, m := range msgs {
			pending = a.notified(pending, m)
		}
		if len(pending) == 0 {
			a.log.Flush()
			continue
		}
		addrs, routes, err := scanAddrsRoutes(a.c)
		if err != nil {
			a.log.Line("spectrum-netcfg: error: ", err.Error())
			a.log.Flush()
			continue
		}
		a.allRPFilter = scanAllRPFilter(a.c)
		for _, l := range pending {
			_, _ = a.ConfigureNIC(l, addrs, routes)
		}
	}
	a.log.Flush()
	return a.status()
}

// vanished forgets the NICs it knows that are not present any more, as if
// their removal had been notified.
func (a *Agent) vanished(present map[uint32]bool) {
	for index, k := range a.known {
		if present[index] {
			continue
		}
		a.log.NIC(k.name, k.hw, "removed")
		a.routerGone(Link{Index: index, Name: k.name, MAC: k.hw})
		delete(a.known, index)
	}
}

// notified adds the link a notification is about to pending when it needs
// configuring, keeping only the latest state of each link.
func (a *Agent) notified(pending []Link, m netlink.Message) []Link {
	switch m.Header.Type {
	case unix.RTM_DELLINK:
		if len(m.Data) < unix.SizeofIfInfomsg {
			return pending
		}
		index := binary.NativeEndian.Uint32(m.Data[4:8])
		if k, ok := a.known[index]; ok {
			l, err := ParseLink(m.Data)
			if err != nil {
				l = Link{Index: index, Name: k.name, MAC: k.hw}
			}
			a.log.NIC(l.Name, l.MAC, "removed")
			a.routerGone(l)
			delete(a.known, index)
		}
		// A NIC going away is first reported down: drop that too.
		pending = slices.DeleteFunc(pending, func(l Link) bool { return l.Index == index })
	case unix.RTM_NEWLINK:
		l, err := ParseLink(m.Data)
		if err != nil {
			a.log.Line("spectrum-netcfg: error: link notification: ", err.Error())
			return pending
		}
		for i := range pending {
			if pending[i].Index == l.Index {
				pending = append(pending[:i], pending[i+1:]...)
				break
			}
		}
		if a.needs(l) {
			pending = append(pending, l)
		}
	}
	return pending
}

// needs tells whether link l must be (re)configured: an inter-guest NIC
// that is new, whose MAC changed, that failed before, or that lost what
// the agent set (taken down, rp_filter relaxed). The agent's own changes
// notify too; they find the NIC in its wanted state and are ignored.
func (a *Agent) needs(l Link) bool {
	nic, err := mac.Classify(l.MAC)
	if errors.Is(err, mac.ErrForeign) {
		if _, ok := a.known[l.Index]; ok {
			a.routerGone(l) // its MAC changed
		}
		delete(a.known, l.Index)
		return false
	}
	k, ok := a.known[l.Index]
	switch {
	case !ok || k.mac != l.MAC.String():
		return true
	case k.outcome == Refused:
		return false // logged once per MAC
	case k.outcome != Configured:
		return true
	}
	return !l.Up || (nic.Side == mac.Provider && l.RPFilter != 1)
}

func (a *Agent) status() int {
	for _, k := range a.known {
		if k.outcome != Configured {
			return 1
		}
	}
	return 0
}
