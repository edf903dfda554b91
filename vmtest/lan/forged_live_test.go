package lan_test

import (
	"context"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv6"

	"spectrum-os.org/netcfg/internal/nstest"
	"spectrum-os.org/netcfg/vmtest/lan"
)

// TestForgedRAIgnored is the attacker's test of the network manager's
// IPv6 side: a host on the LAN's bridge sends router advertisements that
// RFC 4861 says no router sends, each naming a resolver of its own, the
// same way a forger off the link (routed in, so its hop limit is below
// 255) or one posing with a global source would. The client must take
// none of them: no log line, no resolv.conf entry with their resolvers.
// A barrier advertisement sent after them the way a router on the link
// does (hop limit 255, link-local source) is taken, so the forged ones
// were read and dropped, not lost.
func TestForgedRAIgnored(t *testing.T) {
	nstest.RequirePrivileged(t)
	if _, err := lan.Dnsmasq(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	host := nstest.New(t)
	const bridge = "lanbr0"
	// An IPv4-only LAN: no advertisement but the test's own.
	l, err := lan.Start(lan.Config{HostNS: host.Name, Bridge: bridge})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	c := newClientWith(t, ctx, host, bridge, clientOpts{ipv6: true})
	c.lease(t, ctx)
	// The client has sent its solicitations and heard nothing.
	if strings.Contains(c.log.String(), " ra from=") {
		t.Fatalf("an advertisement before the test's own:\n%s", c.log)
	}

	bad := nstest.New(t)
	host.IP("link", "add", "bad-br", "type", "veth", "peer", "name", "bad0", "netns", bad.Name)
	host.IP("link", "set", "bad-br", "master", bridge, "up")
	bad.IP("addr", "add", "fe80::bad/64", "dev", "bad0", "nodad")
	bad.IP("addr", "add", "2001:db8:bad::1/64", "dev", "bad0", "nodad")
	bad.IP("link", "set", "bad0", "up")
	var pc *ipv6.PacketConn
	var ifindex int
	if err := lan.Do(bad.Path(), func() error {
		ifi, err := net.InterfaceByName("bad0")
		if err != nil {
			return err
		}
		ifindex = ifi.Index
		conn, err := icmp.ListenPacket("ip6:ipv6-icmp", "::")
		if err != nil {
			return err
		}
		pc = conn.IPv6PacketConn()
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	ra := func(dns string) []byte {
		a := netip.MustParseAddr(dns).As16()
		b := []byte{134, 0, 0, 0, 64, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, // not a default router, no DHCPv6
			25, 3, 0, 0, 0, 0, 0x0e, 0x10} // RDNSS, an hour
		return append(b, a[:]...)
	}
	send := func(what string, hop int, src, dns string) {
		t.Helper()
		cm := &ipv6.ControlMessage{HopLimit: hop, IfIndex: ifindex, Src: net.ParseIP(src)}
		for range 3 {
			if _, err := pc.WriteTo(ra(dns), cm, &net.IPAddr{IP: net.ParseIP("ff02::1")}); err != nil {
				t.Fatalf("%s: %v", what, err)
			}
		}
	}
	forged := []struct{ what, dns string }{
		{"from off the link (hop limit 64)", "2001:db8:bad::53"},
		{"from a global source", "2001:db8:bad::54"},
	}
	send(forged[0].what, 64, "fe80::bad", forged[0].dns)
	send(forged[1].what, 255, "2001:db8:bad::1", forged[1].dns)
	const barrier = "2001:db8:900d::53"
	send("barrier", 255, "fe80::bad", barrier)
	for !strings.Contains(c.log.String(), "ra from=fe80::bad ") {
		select {
		case <-ctx.Done():
			t.Fatalf("the barrier advertisement was not taken: %v\n%s", ctx.Err(), c.log)
		case <-time.After(50 * time.Millisecond):
		}
	}
	for _, f := range forged {
		if strings.Contains(c.log.String(), f.dns) {
			t.Errorf("the client took an advertisement %s:\n%s", f.what, c.log)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for got := nameservers(t, c.resolv); !strings.Contains(strings.Join(got, " "), barrier); got = nameservers(t, c.resolv) {
		if time.Now().After(deadline) {
			t.Fatalf("resolv.conf nameservers %q: no %s from the barrier", got, barrier)
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, ns := range nameservers(t, c.resolv) {
		for _, f := range forged {
			if ns == f.dns {
				t.Errorf("resolv.conf names %s, from an advertisement %s", ns, f.what)
			}
		}
	}
}
