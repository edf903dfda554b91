package guest

import (
	"context"
	"encoding/binary"
	"errors"
	"slices"
	"strconv"
	"time"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"spectrum-os.org/netcfg/internal/mac"
)

// Watch configures NICs as link notifications arrive on nc, which must have
// joined RTMGRP_LINK before the first scan. It returns when ctx ends, with
// status 0 when every inter-guest NIC it knows of is configured, and 1
// otherwise or when notifications cannot be read.
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
			for _, l := range links {
				if a.needs(l) {
					pending = append(pending, l)
				}
			}
		case err != nil:
			a.log.Line("spectrum-netcfg: error: receive link notifications: ", err.Error())
			a.log.Line("spectrum-netcfg: stopped, status 1")
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
	status := a.status()
	a.log.Line("spectrum-netcfg: stopped, status ", strconv.Itoa(status))
	a.log.Flush()
	return status
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
		if _, ok := a.known[index]; ok {
			if l, err := ParseLink(m.Data); err == nil {
				a.log.NIC(l.Name, l.MAC, "removed")
			}
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
