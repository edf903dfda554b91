package dnsfwd

import (
	"errors"
	"net/netip"
	"sync"
	"time"
)

// Never upstreams, beyond what netip's IsGlobalUnicast leaves out
// (multicast, link-local, unspecified, 255.255.255.255): "this network"
// and the reserved 240/4, which no resolver lives in.
var notUpstream = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),
	netip.MustParsePrefix("240.0.0.0/4"),
}

// CheckUpstream tells whether a may ever be an upstream, by the address
// alone: unicast, global or private (RFC 1918, ULA), or loopback (a
// resolver on the provider itself: systemd-resolved's 127.0.0.53), and
// not in clients, the clients' own addresses (a client's DNS server is no
// resolver for the others). IPv4-mapped IPv6 is judged as the IPv4 address
// it maps. Where a passes, the Config's Check still decides, by where it
// routes, before each query.
func CheckUpstream(a netip.Addr, clients []netip.Prefix) error {
	a = a.Unmap()
	switch {
	case !a.IsValid():
		return errors.New("no address")
	case a.Zone() != "":
		return errors.New("a scoped address")
	case a.IsLoopback():
		return nil
	case a.IsMulticast():
		return errors.New("a multicast address")
	case a.IsLinkLocalUnicast():
		return errors.New("a link-local address")
	case !a.IsGlobalUnicast():
		return errors.New("not a unicast address")
	}
	for _, p := range notUpstream {
		if p.Contains(a) {
			return errors.New("in " + p.String() + ", where no resolver is")
		}
	}
	for _, p := range clients {
		if p.Contains(a) {
			return errors.New("a client address (" + p.String() + ")")
		}
	}
	return nil
}

// checkEvery is how long a route check's verdict stands: a route that
// changes (a chained provider's uplink comes up) is seen within it, and a
// flood of queries costs one route lookup a second.
const checkEvery = time.Second

// upstreams is the forwarder's list of upstreams and what it knows of
// each: given whole by SetUpstreams, read at every query.
type upstreams struct {
	mu    sync.Mutex
	list  []upstream
	check func(netip.Addr) error
	log   func(string)
	now   func() time.Time
}

type upstream struct {
	addr    netip.Addr
	checked time.Time // zero: never
	err     error     // the last check's verdict
	said    bool      // the verdict was logged
}

// set replaces the list.
func (u *upstreams) set(addrs []netip.Addr) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.list = u.list[:0:0]
	for _, a := range addrs {
		u.list = append(u.list, upstream{addr: a.Unmap()})
	}
}

// pick returns the upstreams that may be used now, in order (none: the
// query is refused). A verdict that changes is logged.
func (u *upstreams) pick() []netip.Addr {
	u.mu.Lock()
	defer u.mu.Unlock()
	now := u.now()
	var ok []netip.Addr
	for i := range u.list {
		up := &u.list[i]
		if up.checked.IsZero() || now.Sub(up.checked) >= checkEvery {
			err := u.check(up.addr)
			if !up.said || (err == nil) != (up.err == nil) || err != nil && err.Error() != up.err.Error() {
				up.said = true
				if err != nil {
					u.log("upstream " + up.addr.String() + " not used: " + err.Error())
				} else if !up.checked.IsZero() {
					u.log("upstream " + up.addr.String() + " usable again")
				}
			}
			up.checked, up.err = now, err
		}
		if up.err == nil {
			ok = append(ok, up.addr)
		}
	}
	return ok
}
