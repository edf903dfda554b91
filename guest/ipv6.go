package guest

import (
	"encoding/binary"
	"net/netip"
	"slices"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"spectrum-os.org/netcfg/internal/mac"
)

// Kernel constants golang.org/x/sys/unix does not name (linux/if_link.h,
// linux/ipv6.h).
const (
	iflaInet6Conf       = 2  // IFLA_INET6_CONF: the link's devconf, s32 each
	devconfDisableIPv6  = 26 // DEVCONF_DISABLE_IPV6, an index from 0
	ifaFlagNoDAD        = 0x02
	ipv6DefaultMetric   = 1024 // what the kernel gives a route added without one
	ipv6InterfaceIDBits = 64
)

// inet6State reads a link's IPv6 state from the AF_INET6 part of its
// IFLA_AF_SPEC: that the kernel sends it at all means it has IPv6.
func inet6State(ad *netlink.AttributeDecoder) IPv6State {
	st := IPv6On
	for ad.Next() {
		if ad.Type() != iflaInet6Conf {
			continue
		}
		b := ad.Bytes()
		if o := devconfDisableIPv6 * 4; len(b) >= o+4 && binary.NativeEndian.Uint32(b[o:o+4]) != 0 {
			st = IPv6Disabled
		}
	}
	return st
}

// String says why a link has no IPv6, for the console.
func (s IPv6State) String() string {
	switch s {
	case NoIPv6Kernel:
		return "no IPv6 in the kernel"
	case IPv6Disabled:
		return "disable_ipv6 is set on it"
	}
	return "on"
}

// want6 is the IPv6 half of a NIC's configuration (docs/DESIGN.md, "IPv6"):
// the addresses, and for a client its default route via the link-local
// gateway with the same metric as IPv4's.
func want6(nic mac.NIC, index uint32) (addrs []netip.Prefix, routes []Route) {
	if nic.Side == mac.Provider {
		return []netip.Prefix{
			netip.PrefixFrom(mac.LinkLocalGateway, ipv6InterfaceIDBits),
			netip.PrefixFrom(nic.Link.ProviderAddr6(), ipv6InterfaceIDBits),
		}, nil
	}
	return []netip.Prefix{netip.PrefixFrom(nic.Link.ClientAddr6(), ipv6InterfaceIDBits)},
		[]Route{{
			Table: unix.RT_TABLE_MAIN, Dst: netip.PrefixFrom(netip.IPv6Unspecified(), 0),
			Gateway: mac.LinkLocalGateway, OIF: index, Priority: index,
			Protocol: unix.RTPROT_STATIC, Scope: unix.RT_SCOPE_UNIVERSE, Type: unix.RTN_UNICAST,
		}}
}

// managedAddr6 tells whether an IPv6 address has a shape the agent gives
// an inter-guest NIC: the link-local gateway, or ::1 or ::2 of a link's /64.
func managedAddr6(p netip.Prefix) bool {
	if p.Bits() != ipv6InterfaceIDBits {
		return false
	}
	if p.Addr() == mac.LinkLocalGateway {
		return true
	}
	b := p.Addr().As16()
	return mac.ULA.Contains(p.Addr()) && binary.BigEndian.Uint64(b[8:]) <= 2 && b[15] != 0
}

// managedRoute6 tells whether an IPv6 route on link index has the shape the
// agent adds: a default route via the link-local gateway.
func managedRoute6(r Route, index uint32) bool {
	return r.OIF == index && r.Table == unix.RT_TABLE_MAIN && r.Dst.Bits() == 0 && r.Gateway == mac.LinkLocalGateway
}

// plan6 is Plan's IPv6 half: the changes to l's IPv6 addresses and routes,
// given the whole system's. routesGone says that l's routes are gone (it
// is down) even where the table still shows them.
func plan6(l Link, nic mac.NIC, addrs []Addr, routes []Route, routesGone bool) []Action {
	wantAddrs, wantRoutes := want6(nic, l.Index)
	var acts []Action
	haveRoute := make([]bool, len(wantRoutes))
	for _, r := range routes {
		if !r.Dst.Addr().Is6() || !managedRoute6(r, l.Index) {
			continue
		}
		i := slices.IndexFunc(wantRoutes, func(want Route) bool { return sameRoute(r, want) })
		switch {
		case i < 0:
			acts = append(acts, Action{Kind: DelRoute, Index: l.Index, Route: r})
		case !routesGone:
			haveRoute[i] = true
		}
	}
	haveAddr := make([]bool, len(wantAddrs))
	for _, a := range addrs {
		if a.Index != l.Index || !a.Prefix.Addr().Is6() || !managedAddr6(a.Prefix) {
			continue
		}
		if i := slices.Index(wantAddrs, a.Prefix); i >= 0 {
			haveAddr[i] = true
			continue
		}
		acts = append(acts, Action{Kind: DelAddr, Index: l.Index, Prefix: a.Prefix})
	}
	for i, p := range wantAddrs {
		if !haveAddr[i] {
			acts = append(acts, Action{Kind: AddAddr, Index: l.Index, Prefix: p})
		}
	}
	for i, r := range wantRoutes {
		if !haveRoute[i] {
			acts = append(acts, Action{Kind: AddRoute, Index: l.Index, Route: r})
		}
	}
	return acts
}
