package guest

import (
	"net/netip"
	"slices"
	"strconv"

	"github.com/jsimonetti/rtnetlink/v2"
	"golang.org/x/sys/unix"

	"spectrum-os.org/netcfg/internal/mac"
)

// The address ranges the agent manages on an inter-guest NIC. An address of
// the managed shape that is not the one the NIC's current MAC asks for is
// stale (left by an earlier MAC) and is removed.
var (
	clientRange  = netip.MustParsePrefix("100.64.0.0/16")
	gatewayRange = netip.MustParsePrefix("169.254.0.0/16")
)

// ActionKind is one kind of change the agent makes to a NIC.
type ActionKind uint8

// The kinds of change, in the order Plan emits them: strict reverse-path
// filtering goes on before the link comes up, stale state goes before new
// state is added, and the address goes before the route that uses it.
const (
	SetRPFilter ActionKind = iota
	LinkUp
	DelRoute
	DelAddr
	AddAddr
	AddRoute
	// LinkDown is never planned: the agent takes a provider NIC down
	// that is up when the router cannot cover it (fail closed).
	LinkDown
)

// Action is one change to one NIC.
type Action struct {
	Kind   ActionKind
	Index  uint32       // the NIC's ifindex
	Prefix netip.Prefix // DelAddr, AddAddr
	Route  Route        // DelRoute, AddRoute
	Old    int          // SetRPFilter: the value it replaces (-1: unknown)
}

// String is the action as logged after the NIC's name and MAC.
func (a Action) String() string {
	switch a.Kind {
	case SetRPFilter:
		return "set rp_filter 1 (strict), was " + strconv.Itoa(a.Old)
	case LinkUp:
		return "set link up"
	case LinkDown:
		return "set link down"
	case DelRoute:
		return "removed route " + a.Route.String()
	case DelAddr:
		return "removed " + a.Prefix.String()
	case AddAddr:
		return "added " + a.Prefix.String()
	case AddRoute:
		return "added route " + a.Route.String()
	}
	return "action(" + strconv.Itoa(int(a.Kind)) + ")"
}

// String formats a route the way ip route shows it, for the log.
func (r Route) String() string {
	s := r.Dst.String()
	if r.Dst.Bits() == 0 {
		s = "default"
	}
	if r.Gateway.IsValid() {
		s += " via " + r.Gateway.String()
	}
	if r.Scope == unix.RT_SCOPE_LINK {
		s += " scope link"
	}
	if r.Priority != 0 {
		s += " metric " + strconv.FormatUint(uint64(r.Priority), 10)
	}
	if r.Flags&unix.RTNH_F_ONLINK != 0 {
		s += " onlink"
	}
	return s
}

// Wanted is the configuration the DESIGN gives an inter-guest NIC.
type Wanted struct {
	Addr     netip.Prefix
	Routes   []Route // the first is the one Describe names
	RPFilter bool    // strict reverse-path filtering (providers)
}

// Want derives a NIC's configuration from its MAC and its ifindex.
func Want(nic mac.NIC, index uint32) Wanted {
	if nic.Side == mac.Provider {
		return Wanted{
			Addr:     netip.PrefixFrom(nic.Link.Gateway(), 32),
			Routes:   []Route{linkRoute(nic.Link.ClientAddr(), index)},
			RPFilter: true,
		}
	}
	// The metric is the ifindex so that several client links never clash.
	// The host route to the link's own gateway keeps traffic for that
	// provider on this link: without it a VM with several providers would
	// send everything, replies to the second provider included, out of
	// the default route with the lowest metric.
	return Wanted{
		Addr: nic.Link.ClientPrefix(),
		Routes: []Route{{
			Table: unix.RT_TABLE_MAIN, Dst: netip.PrefixFrom(netip.IPv4Unspecified(), 0),
			Gateway: nic.Link.Gateway(), OIF: index, Priority: index,
			Protocol: unix.RTPROT_STATIC, Scope: unix.RT_SCOPE_UNIVERSE, Type: unix.RTN_UNICAST,
			Flags: unix.RTNH_F_ONLINK,
		}, linkRoute(nic.Link.Gateway(), index)},
	}
}

// linkRoute is a /32 route to dst straight out of link index.
func linkRoute(dst netip.Addr, index uint32) Route {
	return Route{
		Table: unix.RT_TABLE_MAIN, Dst: netip.PrefixFrom(dst, 32),
		OIF: index, Protocol: unix.RTPROT_STATIC, Scope: unix.RT_SCOPE_LINK, Type: unix.RTN_UNICAST,
	}
}

// Describe is the NIC's configuration in one phrase, for the outcome line.
func (w Wanted) Describe(side mac.Side) string {
	if side == mac.Provider {
		return "provider " + w.Addr.String() + " for client " + w.Routes[0].Dst.Addr().String()
	}
	return "client " + w.Addr.String() + " via " + w.Routes[0].Gateway.String()
}

// managedAddr tells whether an address has the shape the agent gives an
// inter-guest NIC.
func managedAddr(p netip.Prefix) bool {
	return p.Addr().Is4() && ((p.Bits() == 16 && clientRange.Contains(p.Addr())) ||
		(p.Bits() == 32 && gatewayRange.Contains(p.Addr())))
}

// managedRoute tells whether a route on link index has the shape the agent
// adds: a default route via a link gateway, a provider's host route to its
// client, or a client's host route to its gateway.
func managedRoute(r Route, index uint32) bool {
	if r.OIF != index || r.Table != unix.RT_TABLE_MAIN || !r.Dst.Addr().Is4() {
		return false
	}
	switch {
	case r.Dst.Bits() == 0:
		return r.Gateway.IsValid() && gatewayRange.Contains(r.Gateway)
	case r.Dst.Bits() == 32:
		return !r.Gateway.IsValid() && (clientRange.Contains(r.Dst.Addr()) || gatewayRange.Contains(r.Dst.Addr()))
	}
	return false
}

func sameRoute(a, b Route) bool {
	return a.Table == b.Table && a.Dst == b.Dst && a.Gateway == b.Gateway && a.OIF == b.OIF &&
		a.Priority == b.Priority && a.Scope == b.Scope && a.Type == b.Type && a.Tos == b.Tos &&
		a.Flags&unix.RTNH_F_ONLINK == b.Flags&unix.RTNH_F_ONLINK
}

// Plan lists the changes that bring link l, which carries nic, to its wanted
// state, given the IPv4 addresses and main-table routes of the whole system.
// It only ever touches l, and on l only what has the managed shape. An empty
// plan means the NIC is already configured.
func Plan(l Link, nic mac.NIC, addrs []Addr, routes []Route) []Action {
	w := Want(nic, l.Index)
	var acts []Action
	if w.RPFilter && l.RPFilter != 1 {
		acts = append(acts, Action{Kind: SetRPFilter, Index: l.Index, Old: l.RPFilter})
	}
	// Routes through a link that is down are gone, so one that is down
	// needs its route again even if the table still showed it.
	if !l.Up {
		acts = append(acts, Action{Kind: LinkUp, Index: l.Index})
	}
	haveRoute := make([]bool, len(w.Routes))
	for _, r := range routes {
		if !managedRoute(r, l.Index) {
			continue
		}
		i := slices.IndexFunc(w.Routes, func(want Route) bool { return sameRoute(r, want) })
		switch {
		case i < 0:
			acts = append(acts, Action{Kind: DelRoute, Index: l.Index, Route: r})
		case l.Up:
			haveRoute[i] = true
		}
	}
	haveAddr, delSameSubnet := false, false
	for _, a := range addrs {
		if a.Index != l.Index || !managedAddr(a.Prefix) {
			continue
		}
		if a.Prefix == w.Addr {
			haveAddr = true
			continue
		}
		acts = append(acts, Action{Kind: DelAddr, Index: l.Index, Prefix: a.Prefix})
		if a.Prefix.Masked() == w.Addr.Masked() {
			// Without promote_secondaries, removing a primary address
			// also removes the secondaries of its subnet, which the
			// wanted address may be: add it again after the removal.
			delSameSubnet = true
		}
	}
	if !haveAddr || delSameSubnet {
		acts = append(acts, Action{Kind: AddAddr, Index: l.Index, Prefix: w.Addr})
	}
	for i, r := range w.Routes {
		if !haveRoute[i] {
			acts = append(acts, Action{Kind: AddRoute, Index: l.Index, Route: r})
		}
	}
	if l.IPv6 == IPv6On {
		acts = append(acts, plan6(l, nic, addrs, routes, !l.Up)...)
	}
	return acts
}

func addrMessage(index uint32, p netip.Prefix) *rtnetlink.AddressMessage {
	ip := p.Addr().AsSlice()
	if p.Addr().Is6() {
		// No duplicate address detection: each link has one peer, which
		// a duplicate could only cut off from itself, and a tentative
		// address would make the first packets fail.
		scope := uint8(unix.RT_SCOPE_UNIVERSE)
		if p.Addr().IsLinkLocalUnicast() {
			scope = unix.RT_SCOPE_LINK
		}
		// The flag goes in IFA_FLAGS too: rtnetlink always sends that
		// attribute, and the kernel takes it over the header's.
		return &rtnetlink.AddressMessage{
			Family: unix.AF_INET6, PrefixLength: uint8(p.Bits()), Index: index, Flags: ifaFlagNoDAD,
			Scope: scope, Attributes: &rtnetlink.AddressAttributes{Address: ip, Flags: ifaFlagNoDAD},
		}
	}
	attrs := &rtnetlink.AddressAttributes{Address: ip, Local: ip}
	if p.Bits() < 31 {
		// The broadcast address `ip addr add ... brd +` would set.
		b := p.Masked().Addr().As4()
		for i := p.Bits(); i < 32; i++ {
			b[i/8] |= 0x80 >> (i % 8)
		}
		attrs.Broadcast = b[:]
	}
	return &rtnetlink.AddressMessage{
		Family: unix.AF_INET, PrefixLength: uint8(p.Bits()), Index: index,
		Scope: unix.RT_SCOPE_UNIVERSE, Attributes: attrs,
	}
}

func routeMessage(r Route) *rtnetlink.RouteMessage {
	family := uint8(unix.AF_INET)
	if r.Dst.Addr().Is6() {
		family = unix.AF_INET6
	}
	m := &rtnetlink.RouteMessage{
		Family: family, DstLength: uint8(r.Dst.Bits()), Tos: r.Tos, Table: unix.RT_TABLE_MAIN,
		Protocol: r.Protocol, Scope: r.Scope, Type: r.Type, Flags: r.Flags & unix.RTNH_F_ONLINK,
		Attributes: rtnetlink.RouteAttributes{OutIface: r.OIF, Priority: r.Priority},
	}
	if r.Table > 255 {
		m.Table = unix.RT_TABLE_UNSPEC
		m.Attributes.Table = r.Table
	}
	if r.Dst.Bits() > 0 {
		m.Attributes.Dst = r.Dst.Addr().AsSlice()
	}
	if r.Gateway.IsValid() {
		m.Attributes.Gateway = r.Gateway.AsSlice()
	}
	return m
}
