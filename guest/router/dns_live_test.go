package router_test

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	"golang.org/x/net/dns/dnsmessage"
)

// TestAttackResolverUpstream: the provider's resolv.conf (which a client
// posing as its DHCP server could write) names upstreams the forwarder
// must never send to: another client (its address, or an address routed
// to its link), the virtual resolver on a provider that is no one's
// client (it would go out of the uplink into shared address space), the
// uplink's broadcast, multicast, the provider's own gateway address, "this
// network", 240/4. Each query is REFUSED at once, and nothing reaches
// those places. A resolver on the provider's loopback (systemd-resolved's
// stub) and an IPv6 one behind an IPv4 client's query are fine.
func TestAttackResolverUpstream(t *testing.T) {
	n := newAttackNet(t)
	// Client 2 runs resolvers: at its own address, and at an address
	// the provider routes to its link.
	n.c2.IP("addr", "add", "198.51.100.7/32", "dev", "eth0")
	n.prov.IP("route", "add", "198.51.100.7/32", "dev", "p2")
	inNS(t, n.c2, func() {
		serveDNS(t, "100.64.0.2", [4]byte{192, 0, 2, 66})
		serveDNS(t, "198.51.100.7", [4]byte{192, 0, 2, 66})
	})
	// The LAN runs one at the virtual resolver's address.
	n.lan.ns.IP("addr", "add", "100.127.255.53/32", "dev", "lan0")
	inNS(t, n.lan.ns, func() { serveDNS(t, "100.127.255.53", [4]byte{192, 0, 2, 66}) })
	lanCap := captureLink(t, n.lan.ns, "lan0")
	c2Cap := captureLink(t, n.c2, "eth0")

	const prefix = "spectrum-router: DNS to 100.127.255.53 "
	for _, tt := range []struct{ ns, line string }{
		{"100.64.0.2", "is refused: /etc/resolv.conf names no nameserver that may be used"},
		{"198.51.100.7", "goes to 198.51.100.7 (first nameserver of /etc/resolv.conf)"},
		{"100.127.255.53", "goes to 100.127.255.53 (first nameserver of /etc/resolv.conf: this provider's own provider, while it routes through a client NIC)"},
		{"203.0.113.255", "goes to 203.0.113.255 (first nameserver of /etc/resolv.conf)"},
		{"224.0.0.251", "is refused: /etc/resolv.conf names no nameserver that may be used"},
		{"169.254.0.1", "is refused: /etc/resolv.conf names no nameserver that may be used"},
		{"0.1.2.3", "is refused: /etc/resolv.conf names no nameserver that may be used"},
		{"240.0.0.1", "is refused: /etc/resolv.conf names no nameserver that may be used"},
	} {
		l := n.pa.setResolv("nameserver " + tt.ns + "\n")
		n.pa.waitLineAfter(l, prefix+tt.line)
		for _, tcp := range []bool{false, true} {
			if a, err := query(t, n.c1, tcp, 0); err != rcodeError(dnsmessage.RCodeRefused) {
				t.Errorf("nameserver %s: query (tcp %v): %v, %v; want REFUSED at once", tt.ns, tcp, a, err)
			}
		}
	}
	forbidden := []string{"100.64.0.2", "198.51.100.7", "100.127.255.53", "203.0.113.255", "224.0.0.251", "169.254.0.1", "0.1.2.3", "240.0.0.1"}
	for _, p := range lanCap.to(func(d netip.Addr) bool { return slices.Contains(forbidden, d.String()) }) {
		t.Errorf("the LAN got %s", p)
	}
	for _, p := range c2Cap.to(func(d netip.Addr) bool { return slices.Contains(forbidden, d.String()) }) {
		t.Errorf("client 2 got %s", p)
	}
	// Why, for the upstreams refused by their route.
	log := n.pa.log()
	for _, want := range []string{
		"spectrum-router: DNS upstream 198.51.100.7 not used: routes through p2, a provider link",
		"spectrum-router: DNS upstream 100.127.255.53 not used: routes through up0, not a client NIC: this provider is no one's client",
		"spectrum-router: DNS upstream 203.0.113.255 not used: a route of type broadcast",
	} {
		if !strings.Contains(log, want+"\n") {
			t.Errorf("no line %q on the console", want)
		}
	}

	// A resolver on the provider's own loopback.
	inNS(t, n.prov, func() { serveDNS(t, "127.0.0.53", [4]byte{192, 0, 2, 3}) })
	l := n.pa.setResolv("nameserver 127.0.0.53\noptions edns0 trust-ad\n")
	n.pa.waitLineAfter(l, prefix+"goes to 127.0.0.53 (first nameserver of /etc/resolv.conf)")
	for _, tcp := range []bool{false, true} {
		if a, err := query(t, n.c1, tcp, 0); err != nil || a != netip.MustParseAddr("192.0.2.3") {
			t.Errorf("loopback resolver (tcp %v): %v, %v; want 192.0.2.3", tcp, a, err)
		}
	}

	// An IPv6 resolver on the LAN (newLAN's uplink is dual-stack), asked
	// for an IPv4 client; the first nameserver, forbidden, is passed over.
	n.lan.ns.IP("addr", "add", "2001:db8:1::53/64", "dev", "lan0", "nodad")
	inNS(t, n.lan.ns, func() { serveDNS(t, "2001:db8:1::53", [4]byte{192, 0, 2, 6}) })
	l = n.pa.setResolv("nameserver 100.127.255.53\nnameserver 2001:db8:1::53\n")
	n.pa.waitLineAfter(l, prefix+"goes to the first of 100.127.255.53, 2001:db8:1::53 it may use (nameservers of /etc/resolv.conf)")
	for _, tcp := range []bool{false, true} {
		if a, err := query(t, n.c1, tcp, 0); err != nil || a != netip.MustParseAddr("192.0.2.6") {
			t.Errorf("IPv6 resolver (tcp %v): %v, %v; want 192.0.2.6", tcp, a, err)
		}
	}
}
