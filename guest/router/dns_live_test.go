package router_test

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	"golang.org/x/net/dns/dnsmessage"

	"spectrum-os.org/netcfg/guest/router"
	"spectrum-os.org/netcfg/internal/nstest"
)

// dnsTo starts the router's lines about its DNS decision.
const dnsTo = "spectrum-router: DNS to " + router.Resolver + " and " + router.Resolver6 + " "

// TestAttackResolverUpstream: the provider's resolv.conf (which a client
// posing as its DHCP server could write) names upstreams the forwarder
// must never send to: another client (its address in either family, or
// an address routed to its link), either virtual resolver on a provider
// that is no one's client (it would go out of the uplink into shared
// address space, or a ULA nobody routes), the uplink's broadcast,
// multicast, the provider's own gateway address, a link-local address,
// "this network", 240/4. Each query, to either virtual resolver, is
// REFUSED at once, and nothing reaches those places. A resolver on the
// provider's loopback (systemd-resolved's stub) and an IPv6 one behind an
// IPv4 client's query are fine.
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
	n.c2.IP("addr", "add", "fd9f:2b8:5010:2::53/128", "dev", "eth0", "nodad")
	waitDAD(t, n.c2)
	inNS(t, n.c2, func() {
		serveDNS(t, "fd9f:2b8:5010:2::2", [4]byte{192, 0, 2, 66})
		serveDNS(t, "fd9f:2b8:5010:2::53", [4]byte{192, 0, 2, 66})
	})
	// The LAN runs one at each virtual resolver's address (newLAN's
	// uplink is dual-stack).
	n.lan.ns.IP("addr", "add", "100.127.255.53/32", "dev", "lan0")
	n.lan.ns.IP("addr", "add", router.Resolver6+"/128", "dev", "lan0", "nodad")
	inNS(t, n.lan.ns, func() {
		serveDNS(t, "100.127.255.53", [4]byte{192, 0, 2, 66})
		serveDNS(t, router.Resolver6, [4]byte{192, 0, 2, 66})
	})
	waitDAD(t, n.c1)
	lanCap, lanCap6 := captureLink(t, n.lan.ns, "lan0"), captureIPv6(t, n.lan.ns, "lan0")
	c2Cap, c2Cap6 := captureLink(t, n.c2, "eth0"), captureIPv6(t, n.c2, "eth0")

	const prefix = dnsTo
	for _, tt := range []struct{ ns, line string }{
		{"100.64.0.2", "is refused: /etc/resolv.conf names no nameserver that may be used"},
		{"fd9f:2b8:5010:2::2", "is refused: /etc/resolv.conf names no nameserver that may be used"},
		{"fd9f:2b8:5010:2::53", "is refused: /etc/resolv.conf names no nameserver that may be used"},
		{router.Resolver6, "goes to " + router.Resolver6 + " (first nameserver of /etc/resolv.conf: this provider's own provider, while it routes through a client NIC)"},
		{"fe80::1%p2", "is refused: /etc/resolv.conf names no nameserver that may be used"},
		{"ff02::fb", "is refused: /etc/resolv.conf names no nameserver that may be used"},
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
		for _, res := range []string{router.Resolver, router.Resolver6} {
			for _, tcp := range []bool{false, true} {
				if a, err := queryAt(t, n.c1, res, dnsmessage.TypeA, tcp, 0); err != rcodeError(dnsmessage.RCodeRefused) {
					t.Errorf("nameserver %s: query to %s (tcp %v): %v, %v; want REFUSED at once", tt.ns, res, tcp, a, err)
				}
			}
		}
	}
	forbidden := []string{"100.64.0.2", "198.51.100.7", "100.127.255.53", "203.0.113.255", "224.0.0.251", "169.254.0.1", "0.1.2.3", "240.0.0.1",
		"fd9f:2b8:5010:2::2", "fd9f:2b8:5010:2::53", router.Resolver6, "ff02::fb"}
	for _, p := range lanCap.to(func(d netip.Addr) bool { return slices.Contains(forbidden, d.String()) }) {
		t.Errorf("the LAN got %s", p)
	}
	for _, p := range c2Cap.to(func(d netip.Addr) bool { return slices.Contains(forbidden, d.String()) }) {
		t.Errorf("client 2 got %s", p)
	}
	in6 := func(_, d netip.Addr, _ byte, _ []byte) bool { return slices.Contains(forbidden, d.String()) }
	for _, p := range lanCap6.find(in6) {
		t.Errorf("the LAN got %s", p)
	}
	for _, p := range c2Cap6.find(in6) {
		t.Errorf("client 2 got %s", p)
	}
	// Why, for the upstreams refused by their route.
	log := n.pa.log()
	for _, want := range []string{
		"spectrum-router: DNS upstream 198.51.100.7 not used: routes through p2, a provider link",
		"spectrum-router: DNS upstream 100.127.255.53 not used: routes through up0, not a client NIC: this provider is no one's client",
		"spectrum-router: DNS upstream " + router.Resolver6 + " not used: routes through up0, not a client NIC: this provider is no one's client",
		"spectrum-router: /etc/resolv.conf names nameserver fd9f:2b8:5010:2::2, never used: a client address (fd9f:2b8:5010::/48)",
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

	// An IPv6 resolver on the LAN, asked for an IPv4 client; the first
	// nameserver, forbidden, is passed over.
	l = n.pa.setResolv("nameserver 100.127.255.53\nnameserver " + dns6Addr + "\n")
	n.pa.waitLineAfter(l, prefix+"goes to the first of 100.127.255.53, "+dns6Addr+" it may use (nameservers of /etc/resolv.conf)")
	for _, tcp := range []bool{false, true} {
		if a, err := query(t, n.c1, tcp, 0); err != nil || a != netip.MustParseAddr("192.0.2.6") {
			t.Errorf("IPv6 resolver (tcp %v): %v, %v; want 192.0.2.6", tcp, a, err)
		}
	}
}

// TestDNSBothFamilies (issue 18): a client that names only the virtual
// resolvers, 100.127.255.53 and fd9f:2b8:5010::53, resolves A and AAAA
// through either, over UDP and TCP, whatever family the provider's own
// upstream is: an IPv4 one while the provider's uplink has only IPv4, then
// an IPv6 one while it has only IPv6. With no upstream, every query to
// either is REFUSED at once (a silent drop shows as a timeout).
func TestDNSBothFamilies(t *testing.T) {
	n := newAttackNet(t)
	waitDAD(t, n.c1)
	// The uplink IPv4-only, its resolver an IPv4 one.
	n.prov.IP("-6", "route", "del", "default", "via", lanGateway6)
	n.prov.IP("addr", "del", uplinkAddr6+"/64", "dev", "up0")
	check := func(upstream string, want [4]byte) {
		t.Helper()
		for _, res := range []string{router.Resolver, router.Resolver6} {
			for _, qt := range []dnsmessage.Type{dnsmessage.TypeA, dnsmessage.TypeAAAA} {
				w := netip.AddrFrom4(want)
				if qt == dnsmessage.TypeAAAA {
					w = aaaa(want)
				}
				for _, tcp := range []bool{false, true} {
					if a, err := queryAt(t, n.c1, res, qt, tcp, 0); err != nil || a != w {
						t.Errorf("upstream %s: %v query to %s (tcp %v): %v, %v; want %v", upstream, qt, res, tcp, a, err, w)
					}
				}
			}
		}
	}
	check(dns1Addr, [4]byte{192, 0, 2, 1})

	// The uplink becomes IPv6-only, its resolver an IPv6 one.
	n.prov.IP("addr", "del", uplinkAddr+"/24", "dev", "up0")
	n.prov.IP("addr", "add", uplinkAddr6+"/64", "dev", "up0", "nodad")
	n.prov.IP("-6", "route", "add", "default", "via", lanGateway6)
	l := n.pa.setResolv("nameserver " + dns6Addr + "\n")
	n.pa.waitLineAfter(l, dnsTo+"goes to "+dns6Addr+" (first nameserver of /etc/resolv.conf)")
	check(dns6Addr, [4]byte{192, 0, 2, 6})

	l = n.pa.setResolv("")
	n.pa.waitLineAfter(l, dnsTo+"is refused: /etc/resolv.conf names no nameserver")
	for _, res := range []string{router.Resolver, router.Resolver6} {
		for _, tcp := range []bool{false, true} {
			if a, err := queryAt(t, n.c1, res, dnsmessage.TypeAAAA, tcp, 0); err != rcodeError(dnsmessage.RCodeRefused) {
				t.Errorf("no upstream: query to %s (tcp %v): %v, %v; want REFUSED at once", res, tcp, a, err)
			}
		}
	}
}

// TestDNSWithoutIPv6: on a provider whose kernel has no IPv6 (socket
// for AF_INET6 fails with EAFNOSUPPORT, as with ipv6.disable=1; a
// seccomp filter gives that answer), the router starts, says once that
// its forwarder serves IPv4 only, and clients resolve through
// 100.127.255.53.
func TestDNSWithoutIPv6(t *testing.T) {
	prov := nstest.New(t)
	newLAN(t, prov)
	pa := startAgentWith(t, prov, withoutIPv6, "", "nameserver "+dns1Addr+"\n")
	pa.waitLine("spectrum-netcfg: watching for new NICs")
	pa.waitLine("spectrum-router: DNS forwarder on IPv4 only: this kernel has no IPv6 (address family not supported by protocol)")
	pa.waitLine("spectrum-router: DNS to " + router.Resolver + " goes to " + dns1Addr + " (first nameserver of /etc/resolv.conf)")
	c1 := client(t, prov, pa, "p1", 1)
	for _, tcp := range []bool{false, true} {
		if a, err := query(t, c1, tcp, 0); err != nil || a != netip.MustParseAddr("192.0.2.1") {
			t.Errorf("query (tcp %v): %v, %v; want 192.0.2.1", tcp, a, err)
		}
	}
	if code := pa.stop(); code != 0 {
		t.Errorf("exit status %d; console:\n%s", code, pa.log())
	}
}
