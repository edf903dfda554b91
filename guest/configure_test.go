package guest

import (
	"errors"
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"

	"spectrum-os.org/netcfg/internal/mac"
)

var (
	client = mac.NIC{Side: mac.Client, Link: 0xa546}
	prov   = mac.NIC{Side: mac.Provider, Link: 0xa546}
)

func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }

func defaultVia(gw string, oif, metric uint32) Route {
	return Route{
		Table: unix.RT_TABLE_MAIN, Dst: pfx("0.0.0.0/0"), Gateway: netip.MustParseAddr(gw), OIF: oif, Priority: metric,
		Protocol: unix.RTPROT_STATIC, Scope: unix.RT_SCOPE_UNIVERSE, Type: unix.RTN_UNICAST, Flags: unix.RTNH_F_ONLINK,
	}
}

func hostRoute(dst string, oif uint32) Route {
	return Route{
		Table: unix.RT_TABLE_MAIN, Dst: pfx(dst), OIF: oif,
		Protocol: unix.RTPROT_STATIC, Scope: unix.RT_SCOPE_LINK, Type: unix.RTN_UNICAST,
	}
}

func kernelRoute(dst string, oif uint32) Route {
	return Route{Table: unix.RT_TABLE_MAIN, Dst: pfx(dst), OIF: oif, Protocol: unix.RTPROT_KERNEL, Scope: unix.RT_SCOPE_LINK, Type: unix.RTN_UNICAST}
}

func TestPlan(t *testing.T) {
	const idx = 3
	up := Link{Index: idx, Name: "eth0", Up: true, RPFilter: 0}
	down := Link{Index: idx, Name: "eth0", Up: false, RPFilter: 0}
	upStrict := Link{Index: idx, Name: "eth0", Up: true, RPFilter: 1}
	wantRoute := defaultVia("169.254.165.70", idx, idx)
	gwRoute := hostRoute("169.254.165.70/32", idx)
	for _, tt := range []struct {
		name   string
		link   Link
		nic    mac.NIC
		addrs  []Addr
		routes []Route
		want   []Action
	}{
		{
			name: "fresh client", link: down, nic: client,
			want: []Action{
				{Kind: LinkUp, Index: idx},
				{Kind: AddAddr, Index: idx, Prefix: pfx("100.64.165.70/16")},
				{Kind: AddRoute, Index: idx, Route: wantRoute},
				{Kind: AddRoute, Index: idx, Route: gwRoute},
			},
		},
		{
			name: "configured client", link: up, nic: client,
			addrs:  []Addr{{idx, pfx("100.64.165.70/16")}},
			routes: []Route{wantRoute, gwRoute, kernelRoute("100.64.0.0/16", idx)},
		},
		{
			name: "configured client with linkdown flag and another protocol", link: up, nic: client,
			addrs: []Addr{{idx, pfx("100.64.165.70/16")}},
			routes: func() []Route {
				r := wantRoute
				r.Flags |= unix.RTNH_F_LINKDOWN
				r.Protocol = unix.RTPROT_BOOT
				return []Route{r, gwRoute}
			}(),
		},
		{
			name: "client taken down: the route is gone with it", link: down, nic: client,
			addrs:  []Addr{{idx, pfx("100.64.165.70/16")}},
			routes: []Route{wantRoute, gwRoute},
			want: []Action{
				{Kind: LinkUp, Index: idx},
				{Kind: AddRoute, Index: idx, Route: wantRoute},
				{Kind: AddRoute, Index: idx, Route: gwRoute},
			},
		},
		{
			name: "client whose MAC changed", link: up, nic: client,
			addrs:  []Addr{{idx, pfx("100.64.1.2/16")}, {idx, pfx("10.0.0.5/24")}},
			routes: []Route{defaultVia("169.254.1.2", idx, idx), hostRoute("169.254.1.2/32", idx), kernelRoute("100.64.0.0/16", idx), kernelRoute("10.0.0.0/24", idx)},
			want: []Action{
				{Kind: DelRoute, Index: idx, Route: defaultVia("169.254.1.2", idx, idx)},
				{Kind: DelRoute, Index: idx, Route: hostRoute("169.254.1.2/32", idx)},
				{Kind: DelAddr, Index: idx, Prefix: pfx("100.64.1.2/16")},
				{Kind: AddAddr, Index: idx, Prefix: pfx("100.64.165.70/16")},
				{Kind: AddRoute, Index: idx, Route: wantRoute},
				{Kind: AddRoute, Index: idx, Route: gwRoute},
			},
		},
		{
			name: "stale primary with the wanted address as secondary: re-add after removal", link: up, nic: client,
			addrs:  []Addr{{idx, pfx("100.64.1.2/16")}, {idx, pfx("100.64.165.70/16")}},
			routes: []Route{wantRoute, gwRoute},
			want: []Action{
				{Kind: DelAddr, Index: idx, Prefix: pfx("100.64.1.2/16")},
				{Kind: AddAddr, Index: idx, Prefix: pfx("100.64.165.70/16")},
			},
		},
		{
			name: "default route with the wrong metric", link: up, nic: client,
			addrs:  []Addr{{idx, pfx("100.64.165.70/16")}},
			routes: []Route{defaultVia("169.254.165.70", idx, 100), gwRoute},
			want: []Action{
				{Kind: DelRoute, Index: idx, Route: defaultVia("169.254.165.70", idx, 100)},
				{Kind: AddRoute, Index: idx, Route: wantRoute},
			},
		},
		{
			name: "others' state is not ours", link: up, nic: client,
			addrs: []Addr{
				{idx, pfx("100.64.165.70/16")},
				{idx, pfx("100.64.7.7/24")},     // our range, another shape
				{idx, pfx("169.254.9.9/16")},    // link-local, another shape
				{idx + 1, pfx("100.64.1.1/16")}, // another NIC's
			},
			routes: []Route{
				wantRoute,
				gwRoute,
				defaultVia("10.0.0.1", idx, 50),         // not via a link gateway
				defaultVia("169.254.1.1", idx+1, idx+1), // another NIC's
				hostRoute("100.64.3.3/32", idx+1),       // another NIC's
				{Table: 100, Dst: pfx("0.0.0.0/0"), Gateway: netip.MustParseAddr("169.254.1.1"), OIF: idx}, // another table
			},
		},
		{
			name: "fresh provider", link: down, nic: prov,
			want: []Action{
				{Kind: SetRPFilter, Index: idx, Old: 0},
				{Kind: LinkUp, Index: idx},
				{Kind: AddAddr, Index: idx, Prefix: pfx("169.254.165.70/32")},
				{Kind: AddRoute, Index: idx, Route: hostRoute("100.64.165.70/32", idx)},
			},
		},
		{
			name: "configured provider", link: upStrict, nic: prov,
			addrs:  []Addr{{idx, pfx("169.254.165.70/32")}},
			routes: []Route{hostRoute("100.64.165.70/32", idx)},
		},
		{
			name: "provider with loose rp_filter", link: Link{Index: idx, Up: true, RPFilter: 2}, nic: prov,
			addrs:  []Addr{{idx, pfx("169.254.165.70/32")}},
			routes: []Route{hostRoute("100.64.165.70/32", idx)},
			want:   []Action{{Kind: SetRPFilter, Index: idx, Old: 2}},
		},
		{
			name: "client that became a provider", link: up, nic: prov,
			addrs:  []Addr{{idx, pfx("100.64.165.70/16")}},
			routes: []Route{wantRoute, gwRoute, kernelRoute("100.64.0.0/16", idx)},
			want: []Action{
				{Kind: SetRPFilter, Index: idx, Old: 0},
				{Kind: DelRoute, Index: idx, Route: wantRoute},
				{Kind: DelRoute, Index: idx, Route: gwRoute},
				{Kind: DelAddr, Index: idx, Prefix: pfx("100.64.165.70/16")},
				{Kind: AddAddr, Index: idx, Prefix: pfx("169.254.165.70/32")},
				{Kind: AddRoute, Index: idx, Route: hostRoute("100.64.165.70/32", idx)},
			},
		},
		{
			name: "provider whose MAC changed", link: upStrict, nic: prov,
			addrs:  []Addr{{idx, pfx("169.254.1.2/32")}},
			routes: []Route{hostRoute("100.64.1.2/32", idx)},
			want: []Action{
				{Kind: DelRoute, Index: idx, Route: hostRoute("100.64.1.2/32", idx)},
				{Kind: DelAddr, Index: idx, Prefix: pfx("169.254.1.2/32")},
				{Kind: AddAddr, Index: idx, Prefix: pfx("169.254.165.70/32")},
				{Kind: AddRoute, Index: idx, Route: hostRoute("100.64.165.70/32", idx)},
			},
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got := Plan(tt.link, tt.nic, tt.addrs, tt.routes)
			if diff := cmp.Diff(tt.want, got, cmp.Comparer(func(a, b netip.Prefix) bool { return a == b }),
				cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
				t.Errorf("Plan mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestActionString(t *testing.T) {
	for _, tt := range []struct {
		a    Action
		want string
	}{
		{Action{Kind: SetRPFilter, Old: 0}, "set rp_filter 1 (strict), was 0"},
		{Action{Kind: SetRPFilter, Old: -1}, "set rp_filter 1 (strict), was -1"},
		{Action{Kind: LinkUp}, "set link up"},
		{Action{Kind: AddAddr, Prefix: pfx("100.64.165.70/16")}, "added 100.64.165.70/16"},
		{Action{Kind: DelAddr, Prefix: pfx("169.254.1.2/32")}, "removed 169.254.1.2/32"},
		{Action{Kind: AddRoute, Route: defaultVia("169.254.165.70", 3, 3)}, "added route default via 169.254.165.70 metric 3 onlink"},
		{Action{Kind: DelRoute, Route: hostRoute("100.64.1.2/32", 3)}, "removed route 100.64.1.2/32 scope link"},
		{Action{Kind: 99}, "action(99)"},
	} {
		if got := tt.a.String(); got != tt.want {
			t.Errorf("%+v.String() = %q, want %q", tt.a, got, tt.want)
		}
	}
}

func TestAddrMessageBroadcast(t *testing.T) {
	for _, tt := range []struct {
		p    string
		want string // "" for none
	}{
		{"100.64.165.70/16", "100.64.255.255"},
		{"10.1.2.3/24", "10.1.2.255"},
		{"169.254.1.2/32", ""},
	} {
		m := addrMessage(3, pfx(tt.p))
		got := ""
		if m.Attributes.Broadcast != nil {
			got = m.Attributes.Broadcast.String()
		}
		if got != tt.want {
			t.Errorf("broadcast of %s = %q, want %q", tt.p, got, tt.want)
		}
		if m.Index != 3 || int(m.PrefixLength) != pfx(tt.p).Bits() || m.Family != unix.AF_INET {
			t.Errorf("addrMessage(%s) = %+v", tt.p, m)
		}
	}
}

// TestRouteMessageRoundTrip: what Apply sends decodes back to the route.
func TestRouteMessageRoundTrip(t *testing.T) {
	for _, r := range []Route{defaultVia("169.254.165.70", 3, 3), hostRoute("100.64.165.70/32", 4)} {
		b, err := routeMessage(r).MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		got, ok, err := parseRoute(b)
		if err != nil || !ok {
			t.Fatalf("parseRoute: %v, %v", ok, err)
		}
		if !sameRoute(got, r) || got.Protocol != r.Protocol {
			t.Errorf("round trip of %v = %+v, want %+v", r, got, r)
		}
	}
}

func TestErrorsUnwrap(t *testing.T) {
	ae := &ActionError{Action: Action{Kind: AddRoute, Route: hostRoute("100.64.1.2/32", 3)}, Err: unix.ENETDOWN}
	ne := &NICError{Name: "eth0", MAC: mac.LinkID(0x0102).MAC(mac.Provider), Err: errors.Join(ae)}
	if !errors.Is(ne, unix.ENETDOWN) {
		t.Errorf("errors.Is(%v, ENETDOWN) = false", ne)
	}
	var got *ActionError
	if !errors.As(ne, &got) || got.Action.Kind != AddRoute {
		t.Errorf("errors.As(%v, *ActionError) = %v", ne, got)
	}
	want := "eth0 0a:b3:ec:80:01:02: added route 100.64.1.2/32 scope link: network is down"
	if ne.Error() != want {
		t.Errorf("Error() = %q, want %q", ne.Error(), want)
	}
}

func TestPlan6(t *testing.T) {
	const idx = 3
	up := Link{Index: idx, Name: "eth0", Up: true, RPFilter: 1, IPv6: IPv6On}
	v4 := func(nic mac.NIC) ([]Addr, []Route) {
		w := Want(nic, idx)
		return []Addr{{idx, w.Addr}}, w.Routes
	}
	def6 := Route{
		Table: unix.RT_TABLE_MAIN, Dst: pfx("::/0"), Gateway: mac.LinkLocalGateway, OIF: idx, Priority: idx,
		Protocol: unix.RTPROT_STATIC, Scope: unix.RT_SCOPE_UNIVERSE, Type: unix.RTN_UNICAST,
	}
	for _, tt := range []struct {
		name   string
		link   Link
		nic    mac.NIC
		addrs  []Addr
		routes []Route
		want   []Action
	}{
		{
			name: "client", link: up, nic: client,
			want: []Action{
				{Kind: AddAddr, Index: idx, Prefix: pfx("fd9f:2b8:5010:a546::2/64")},
				{Kind: AddRoute, Index: idx, Route: def6},
			},
		},
		{
			name: "client configured", link: up, nic: client,
			addrs:  []Addr{{idx, pfx("fd9f:2b8:5010:a546::2/64")}, {idx, pfx("fe80::8b3:ecff:fe00:a546/64")}},
			routes: []Route{def6, kernelRoute("fd9f:2b8:5010:a546::/64", idx)},
		},
		{
			name: "client of another link before: its address and route go", link: up, nic: client,
			addrs:  []Addr{{idx, pfx("fd9f:2b8:5010:102::2/64")}, {idx, pfx("2001:db8::7/64")}},
			routes: []Route{{Table: unix.RT_TABLE_MAIN, Dst: pfx("::/0"), Gateway: mac.LinkLocalGateway, OIF: idx, Priority: 1024}},
			want: []Action{
				{Kind: DelRoute, Index: idx, Route: Route{Table: unix.RT_TABLE_MAIN, Dst: pfx("::/0"), Gateway: mac.LinkLocalGateway, OIF: idx, Priority: 1024}},
				{Kind: DelAddr, Index: idx, Prefix: pfx("fd9f:2b8:5010:102::2/64")},
				{Kind: AddAddr, Index: idx, Prefix: pfx("fd9f:2b8:5010:a546::2/64")},
				{Kind: AddRoute, Index: idx, Route: def6},
			},
		},
		{
			name: "provider", link: up, nic: prov,
			want: []Action{
				{Kind: AddAddr, Index: idx, Prefix: pfx("fe80::1/64")},
				{Kind: AddAddr, Index: idx, Prefix: pfx("fd9f:2b8:5010:a546::1/64")},
			},
		},
		{
			name: "IPv6 off: IPv4 only", link: Link{Index: idx, Up: true, RPFilter: 1, IPv6: IPv6Disabled}, nic: client,
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			a4, r4 := v4(tt.nic)
			got := Plan(tt.link, tt.nic, append(a4, tt.addrs...), append(r4, tt.routes...))
			if diff := cmp.Diff(tt.want, got, cmp.Comparer(func(a, b netip.Prefix) bool { return a == b }),
				cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
				t.Errorf("Plan mismatch (-want +got):\n%s", diff)
			}
		})
	}
}
