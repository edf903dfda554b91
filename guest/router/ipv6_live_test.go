package router_test

import (
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"spectrum-os.org/netcfg/internal/mac"
	"spectrum-os.org/netcfg/internal/nstest"
)

// The router's IPv6 (issue 18): clients' IPv6 leaves by NAT66 with the
// same isolation and anti-spoofing as IPv4. The LAN is dual-stack
// (newLAN: 2001:db8:1::/64 beside 203.0.113.0/24).

// c6 is the IPv6 address of the client on link id (one octet here),
// fd9f:2b8:5010:id::2.
func c6(id byte) string { return mac.LinkID(id).ClientAddr6().String() }

// p6 is the provider's address ::1 on link id's /64.
func p6(id byte) string { return mac.LinkID(id).ProviderAddr6().String() }

// ip6 is an IPv6 packet from src to dst carrying payload of protocol
// next (its checksum is the caller's), hop limit 64.
func ip6(src, dst string, next byte, payload []byte) []byte {
	h := make([]byte, 40, 40+len(payload))
	h[0] = 0x60
	binary.BigEndian.PutUint16(h[4:], uint16(len(payload)))
	h[6], h[7] = next, 64
	s, d := netip.MustParseAddr(src).As16(), netip.MustParseAddr(dst).As16()
	copy(h[8:], s[:])
	copy(h[24:], d[:])
	return append(h, payload...)
}

// pseudo6 is the IPv6 pseudo-header for an upper-layer checksum.
func pseudo6(src, dst string, next byte, n int) []byte {
	s, d := netip.MustParseAddr(src).As16(), netip.MustParseAddr(dst).As16()
	b := append(s[:], d[:]...)
	b = binary.BigEndian.AppendUint32(b, uint32(n))
	return append(b, 0, 0, 0, next)
}

// udp6 is a UDP datagram with a valid checksum.
func udp6(src, dst string, sport, dport uint16, payload []byte) []byte {
	b := make([]byte, 8, 8+len(payload))
	binary.BigEndian.PutUint16(b[0:], sport)
	binary.BigEndian.PutUint16(b[2:], dport)
	binary.BigEndian.PutUint16(b[4:], uint16(8+len(payload)))
	b = append(b, payload...)
	binary.BigEndian.PutUint16(b[6:], csum(pseudo6(src, dst, unix.IPPROTO_UDP, len(b)), b))
	return b
}

// tcp6 is a TCP segment with the given flags and a valid checksum.
func tcp6(src, dst string, sport, dport uint16, flags byte) []byte {
	b := make([]byte, 20)
	binary.BigEndian.PutUint16(b[0:], sport)
	binary.BigEndian.PutUint16(b[2:], dport)
	binary.BigEndian.PutUint32(b[4:], 1000)
	b[12], b[13] = 5<<4, flags
	binary.BigEndian.PutUint16(b[14:], 65535)
	binary.BigEndian.PutUint16(b[16:], csum(pseudo6(src, dst, unix.IPPROTO_TCP, len(b)), b))
	return b
}

// icmp6 is an ICMPv6 message (type, code, body after the 4-byte header)
// from src to dst with a valid checksum.
func icmp6(src, dst string, typ, code byte, body []byte) []byte {
	b := append([]byte{typ, code, 0, 0}, body...)
	binary.BigEndian.PutUint16(b[2:], csum(pseudo6(src, dst, unix.IPPROTO_ICMPV6, len(b)), b))
	return b
}

// sendIPv6 sends whole IPv6 packets from ns out of dev (a raw socket,
// IPPROTO_RAW: the kernel sends them as they are, routed by their
// destination).
func sendIPv6(t *testing.T, ns *nstest.NS, dev string, pkts ...[]byte) {
	t.Helper()
	idx := link(t, ns, dev)
	inNS(t, ns, func() {
		fd, err := unix.Socket(unix.AF_INET6, unix.SOCK_RAW, unix.IPPROTO_RAW)
		if err != nil {
			t.Fatal(err)
		}
		defer unix.Close(fd)
		for _, p := range pkts {
			to := &unix.SockaddrInet6{Addr: [16]byte(p[24:40]), ZoneId: uint32(idx)}
			if err := unix.Sendto(fd, p, 0, to); err != nil {
				t.Fatalf("send raw IPv6 to %v: %v", netip.AddrFrom16(to.Addr), err)
			}
		}
	})
}

// captureIPv6 is captureLink for IPv6.
func captureIPv6(t *testing.T, ns *nstest.NS, dev string) *linkCapture {
	t.Helper()
	return captureEther(t, ns, dev, unix.ETH_P_IPV6)
}

// find returns the captured IPv6 packets f accepts, described.
func (c *linkCapture) find(f func(src, dst netip.Addr, next byte, p []byte) bool) []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for _, p := range c.pkts {
		if len(p) < 40 {
			continue
		}
		src, dst := netip.AddrFrom16([16]byte(p[8:24])), netip.AddrFrom16([16]byte(p[24:40]))
		if f(src, dst, p[6], p[40:]) {
			out = append(out, src.String()+" -> "+dst.String()+" next header "+itoa(int(p[6])))
		}
	}
	return out
}

// TestIPv6NAT66: clients reach an IPv6 host beyond the provider's uplink
// over TCP and UDP, and the host sees the provider's uplink address
// (NAT66); the LAN has no route to the clients' prefix, so only the NAT
// brings the replies back, and no packet with a client's address
// (fd9f:2b8:5010::/48) is ever seen on the LAN's wire.
func TestIPv6NAT66(t *testing.T) {
	n := newAttackNet(t)
	wire := captureIPv6(t, n.lan.ns, "lan0")
	// The clients' ::2 is tentative until its DAD is over (meanwhile
	// the kernel picks ::1 as the source).
	waitDAD(t, n.c1)
	waitDAD(t, n.c2)
	got, err := dialTCP(t, n.c1, webAddr6, 7)
	if err != nil {
		t.Fatalf("client 1 -> [%s]:7: %v", webAddr6, err)
	}
	if host, _, _ := net.SplitHostPort(got); host != uplinkAddr6 {
		t.Errorf("the server saw client 1 at %s, want the provider's uplink %s", got, uplinkAddr6)
	}
	if r, err := udpExchange(t, n.c2, "", 0, webAddr6, 7, []byte("hello from 2")); err != nil || !strings.HasPrefix(string(r), "["+uplinkAddr6+"]:") {
		t.Errorf("client 2 -> [%s]:7 over UDP: %q, %v; want an answer to %s", webAddr6, r, err, uplinkAddr6)
	}
	if out, err := n.lan.ns.TryIP("-6", "route", "get", c6(1)); err == nil {
		t.Errorf("the LAN has a route to the clients: %s", out)
	}
	time.Sleep(100 * time.Millisecond)
	if leaks := wire.find(func(src, _ netip.Addr, _ byte, _ []byte) bool { return mac.ULA.Contains(src) }); len(leaks) > 0 {
		t.Errorf("a client's address on the LAN's wire: %q", leaks)
	}
}

// TestAttackIPv6: what a hostile client tries over IPv6, with the
// provider forwarding IPv6 to a dual-stack LAN. Each row must fail.
func TestAttackIPv6(t *testing.T) {
	n := newAttackNet(t)
	wire := captureIPv6(t, n.lan.ns, "lan0")
	waitDAD(t, n.c1)
	waitDAD(t, n.c2)
	waitDAD(t, n.prov)

	t.Run("another client even with an explicit route", func(t *testing.T) {
		s := listenServices(t, n.c1, 9999)
		// Client 2's IPv6 is forwarded: to the LAN it goes.
		if _, err := udpExchange(t, n.c2, "", 0, webAddr6, 7, []byte("to the LAN")); err != nil {
			t.Fatalf("client 2 -> [%s]:7: %v: the test's set-up is wrong", webAddr6, err)
		}
		// Via fe80::1 on its link, and via its link's ::1: the provider
		// has client 1's /64 on-link, so it would forward.
		n.c2.IP("-6", "route", "add", c6(1)+"/128", "via", "fe80::1", "dev", "eth0")
		for try := range 2 {
			if _, err := sendUDP(t, n.c2, c6(1), 9999, "from client 2", 300*time.Millisecond, nil); err == nil {
				t.Errorf("try %d: client 2 got an answer from client 1 over IPv6", try)
			}
			if _, err := dialFrom(t, n.c2, c6(1), 9999); err == nil {
				t.Errorf("try %d: client 2 connected to client 1 over IPv6", try)
			}
			n.c2.IP("-6", "route", "replace", c6(1)+"/128", "via", p6(2), "dev", "eth0")
		}
		if got := s.seen(); len(got) > 0 {
			t.Errorf("client 1 got %q", got)
		}
	})

	t.Run("forged sources", func(t *testing.T) {
		var lanUDP *net.UDPConn
		inNS(t, n.lan.ns, func() {
			var err error
			if lanUDP, err = net.ListenUDP("udp6", &net.UDPAddr{IP: net.ParseIP(webAddr6), Port: 9}); err != nil {
				t.Fatal(err)
			}
		})
		defer lanUDP.Close()
		ll := linkLocal(t, n.c1, "eth0").String()
		var pkts [][]byte
		for _, src := range []string{
			c6(2),               // another client's
			"2001:db8:1::99",    // the uplink's side
			uplinkAddr6,         // the provider's own uplink address
			"fd12:3456:789a::1", // a ULA of no link
			"fd9f:2b8:5010::53", // the virtual resolver's subnet
			p6(1),               // the provider's own on the link
			"::",                // unspecified
			ll,                  // its own link-local
			"::ffff:100.64.0.1", // IPv4-mapped
			"2001:db8:1::10",    // the server itself
		} {
			pkts = append(pkts, ip6(src, webAddr6, unix.IPPROTO_UDP, udp6(src, webAddr6, 4000, 9, []byte("forged "+src))))
		}
		// Invalid to conntrack: a bare echo reply and a TCP SYN+FIN,
		// which masquerade never sees.
		pkts = append(pkts,
			ip6(c6(1), webAddr6, unix.IPPROTO_ICMPV6, icmp6(c6(1), webAddr6, 129, 0, []byte{0x53, 0x50, 0, 1, 'l', 'e', 'a', 'k'})),
			ip6(c6(1), webAddr6, unix.IPPROTO_TCP, tcp6(c6(1), webAddr6, 1001, 7, 0x03)))
		sendIPv6(t, n.c1, "eth0", pkts...)
		// The genuine one, a barrier.
		sendIPv6(t, n.c1, "eth0", ip6(c6(1), webAddr6, unix.IPPROTO_UDP, udp6(c6(1), webAddr6, 4000, 9, []byte("genuine"))))
		lanUDP.SetReadDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, 100)
		for {
			k, from, err := lanUDP.ReadFromUDP(buf)
			if err != nil {
				t.Fatalf("the genuine datagram did not arrive: %v", err)
			}
			if string(buf[:k]) == "genuine" {
				if from.IP.String() != uplinkAddr6 {
					t.Errorf("the genuine datagram came from %v, want %s", from, uplinkAddr6)
				}
				break
			}
			t.Errorf("the LAN got %q from %v", buf[:k], from)
		}
		time.Sleep(100 * time.Millisecond)
		lanUDP.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		if k, from, err := lanUDP.ReadFromUDP(buf); err == nil {
			t.Errorf("the LAN got %q from %v", buf[:k], from)
		}
		if got := wire.find(func(src, dst netip.Addr, next byte, p []byte) bool {
			return next == unix.IPPROTO_TCP || next == unix.IPPROTO_ICMPV6 && len(p) > 0 && p[0] == 129
		}); len(got) > 0 {
			t.Errorf("invalid packets left the uplink: %q", got)
		}
	})

	t.Run("link-local never forwarded", func(t *testing.T) {
		lanLL := linkLocal(t, n.lan.ns, "lan0").String()
		var ul *net.UDPConn
		inNS(t, n.lan.ns, func() {
			var err error
			if ul, err = net.ListenUDP("udp6", &net.UDPAddr{IP: net.IPv6unspecified, Port: 10}); err != nil {
				t.Fatal(err)
			}
		})
		defer ul.Close()
		// To the LAN's link-local address, handed to the provider as
		// its neighbour: a provider that forwarded it would put it on
		// the uplink.
		n.c1.IP("-6", "neigh", "replace", lanLL, "dev", "eth0", "lladdr", "0a:b3:ec:80:00:01", "nud", "permanent")
		sendIPv6(t, n.c1, "eth0", ip6(c6(1), lanLL, unix.IPPROTO_UDP, udp6(c6(1), lanLL, 4001, 10, []byte("to link-local"))))
		ul.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		if k, from, err := ul.ReadFromUDP(make([]byte, 100)); err == nil {
			t.Errorf("the LAN's link-local address got %d bytes from %v", k, from)
		}
	})

	t.Run("nothing unsolicited reaches a client", func(t *testing.T) {
		s := listenServices(t, n.c1, 9998)
		n.lan.ns.IP("-6", "route", "add", mac.ULA.String(), "via", uplinkAddr6)
		defer n.lan.ns.IP("-6", "route", "del", mac.ULA.String(), "via", uplinkAddr6)
		if _, err := dialFrom(t, n.lan.ns, c6(1), 9998); err == nil {
			t.Error("the LAN connected to client 1 over IPv6")
		}
		sendUDP(t, n.lan.ns, c6(1), 9998, "from outside", 300*time.Millisecond, nil)
		if err := ping(t, n.lan.ns, c6(1)); err == nil {
			t.Error("client 1 answered the LAN's echo request")
		}
		if got := s.seen(); len(got) > 0 {
			t.Errorf("client 1 got %q", got)
		}
	})

	t.Run("echo", func(t *testing.T) {
		for _, tt := range []struct {
			addr string
			ok   bool
		}{
			{"fe80::1%eth0", true}, // its gateway
			{p6(1), true},          // its link's ::1
			{p6(2), false},         // another link's
			{uplinkAddr6, false},   // the uplink's
			{provLL(1) + "%eth0", false},
		} {
			err := ping(t, n.c1, tt.addr)
			if tt.ok && err != nil {
				t.Errorf("echo to %s: %v, want a reply", tt.addr, err)
			}
			if !tt.ok && err == nil {
				t.Errorf("echo to %s answered", tt.addr)
			}
		}
	})

	t.Run("forged ICMPv6 errors", func(t *testing.T) {
		// Client 2's flow [c2]:5000 -> [web]:7, answered.
		if _, err := udpExchange(t, n.c2, "", 5000, webAddr6, 7, []byte("client 2's flow")); err != nil {
			t.Fatalf("client 2's flow: %v", err)
		}
		since := len(wire.find(func(netip.Addr, netip.Addr, byte, []byte) bool { return true }))
		// quote is the start of a UDP datagram src:sport -> dst:dport
		// as an ICMPv6 error quotes it.
		quote := func(src, dst string, sport, dport uint16) []byte {
			return ip6(src, dst, unix.IPPROTO_UDP, udp6(src, dst, sport, dport, []byte("q")))
		}
		errs := func(to string, inner []byte) [][]byte {
			return [][]byte{
				ip6(c6(1), to, unix.IPPROTO_ICMPV6, icmp6(c6(1), to, 1, 4, append([]byte{0, 0, 0, 0}, inner...))),       // port unreachable
				ip6(c6(1), to, unix.IPPROTO_ICMPV6, icmp6(c6(1), to, 2, 0, append([]byte{0, 0, 0x05, 0x00}, inner...))), // packet too big, 1280
				ip6(c6(1), to, unix.IPPROTO_ICMPV6, icmp6(c6(1), to, 1, 1, append([]byte{0, 0, 0, 0}, inner...))),       // administratively prohibited
			}
		}
		sendIPv6(t, n.c1, "eth0", errs(webAddr6, quote(webAddr6, c6(2), 7, 5000))...)
		if _, err := udpExchange(t, n.c1, "", 0, webAddr6, 7, []byte("barrier")); err != nil {
			t.Fatalf("client 1's barrier: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
		all := wire.find(func(_, _ netip.Addr, next byte, p []byte) bool {
			return true
		})
		if errs := wire.find(func(_, _ netip.Addr, next byte, p []byte) bool {
			return next == unix.IPPROTO_ICMPV6 && len(p) > 0 && p[0] < 128
		}); len(errs) > 0 {
			t.Errorf("an ICMPv6 error left the uplink: %q (of %d packets since)", errs, len(all)-since)
		}

		// The provider's own flow out of its uplink.
		pc := providerFlow(t, n.prov, "udp6", uplinkAddr6, webAddr6)
		defer pc.Close()
		inner := quote(uplinkAddr6, webAddr6, 6000, 7)
		sendIPv6(t, n.c1, "eth0", errs(uplinkAddr6, inner)[0], errs(p6(1), inner)[0])
		flowAlive(t, pc)
	})

	t.Run("no client address on the wire", func(t *testing.T) {
		if leaks := wire.find(func(src, _ netip.Addr, _ byte, _ []byte) bool { return mac.ULA.Contains(src) }); len(leaks) > 0 {
			t.Errorf("a client's address on the LAN's wire: %q", leaks)
		}
	})
}

// TestIPv6Unrouted: a provider without an IPv6 route to a destination
// (an IPv4-only uplink) refuses a client's IPv6 to it at once, so a
// dual-stack client falls back without a timeout.
func TestIPv6Unrouted(t *testing.T) {
	n := newAttackNet(t)
	n.prov.IP("-6", "route", "del", "default")
	waitDAD(t, n.c1)
	inNS(t, n.c1, func() {
		start := time.Now()
		c, err := net.DialTimeout("tcp", "[2001:db8:2::10]:7", 10*time.Second)
		if err == nil {
			c.Close()
			t.Fatal("connected with no route")
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() || !errors.Is(err, syscall.ENETUNREACH) && !errors.Is(err, syscall.EHOSTUNREACH) && !errors.Is(err, syscall.ECONNREFUSED) {
			t.Errorf("after %v: %v; want refused at once", time.Since(start), err)
		}
		t.Logf("refused after %v: %v", time.Since(start), err)
	})
}

// uplinkRA joins ns to a new LAN namespace by a veth (up in ns, lan0 in
// the LAN) and has the LAN's router send router advertisements on it
// (lifetime 1800 s, a /64 of 2001:db8::/32), as a SLAAC network does; it
// waits for the default route they give ns, or fails.
func uplinkRA(t *testing.T, ns *nstest.NS, up, macUp, prefix string) {
	t.Helper()
	l := nstest.New(t)
	veth(t, l, "lan0", "52:54:00:00:01:01", ns, up, macUp)
	l.IP("link", "set", "lan0", "up")
	ns.IP("link", "set", up, "up")
	ll := linkLocal(t, l, "lan0")
	hw, _ := net.ParseMAC("52:54:00:00:01:01")
	end := deadline(t)
	for !strings.Contains(string(ns.IP("-6", "route", "show", "default", "dev", up)), "proto ra") {
		if time.Now().After(end) {
			t.Fatalf("no default route from the RA on %s: %s", up, ns.IP("-6", "route"))
		}
		sendRA(t, l, "lan0", ll, hw, netip.MustParseAddr(prefix))
		time.Sleep(200 * time.Millisecond)
	}
}

// TestIPv6ForwardingKeepsRA: an uplink configured by SLAAC keeps its
// default route from router advertisements when the router turns IPv6
// forwarding on (the kernel deletes it from a NIC whose accept_ra is 1:
// the router makes it 2 first), and an uplink that comes after the start
// takes advertisements too (conf/default); forwarding goes back to what
// it was at SIGTERM.
func TestIPv6ForwardingKeepsRA(t *testing.T) {
	ns := nstest.New(t)
	ns.AddTap("eth1", "0a:b3:ec:80:12:34")
	uplinkRA(t, ns, "up0", "52:54:00:00:02:01", "2001:db8:10::")
	checkSysctl(t, ns, "net.ipv6.conf.up0.accept_ra", "1")
	a := startAgent(t, ns, "nameserver 192.0.2.53\n")
	checkSysctl(t, ns, "net.ipv6.conf.all.forwarding", "1")
	time.Sleep(100 * time.Millisecond)
	if r := string(ns.IP("-6", "route", "show", "default", "dev", "up0")); !strings.Contains(r, "proto ra") {
		t.Errorf("up0 lost its default route from the RA when forwarding went on: %q", r)
	}
	checkSysctl(t, ns, "net.ipv6.conf.up0.accept_ra", "2")
	checkSysctl(t, ns, "net.ipv6.conf.eth1.accept_ra", "0")
	// A NIC that comes later, with forwarding on.
	uplinkRA(t, ns, "up1", "52:54:00:00:02:02", "2001:db8:11::")
	checkSysctl(t, ns, "net.ipv6.conf.up1.accept_ra", "2")
	if code := a.stop(); code != 0 {
		t.Errorf("exit status %d, want 0", code)
	}
	checkSysctl(t, ns, "net.ipv6.conf.all.forwarding", "0")
	if r := string(ns.IP("-6", "route", "show", "default", "dev", "up0")); !strings.Contains(r, "proto ra") {
		t.Errorf("up0 lost its default route from the RA at SIGTERM: %q", r)
	}
}

// TestRouterWithoutIPv6: a kernel without IPv6 (ipv6.disable=1: no
// /proc/sys/net/ipv6, shown to the router here by an empty directory
// mounted over it) routes IPv4 as always and says so in one line; the
// table records no IPv6 forwarding setting.
func TestRouterWithoutIPv6(t *testing.T) {
	ns := nstest.New(t)
	ns.AddTap("eth1", "0a:b3:ec:80:12:34")
	a := startAgentSh(t, ns, "mount -t tmpfs none /proc/sys/net/ipv6", "nameserver 192.0.2.53\n")
	a.waitLine("spectrum-netcfg: watching for new NICs")
	// IPv4's line, then that one, and nothing about IPv6 forwarding.
	lines := a.lines()
	i := slices.Index(lines, "spectrum-router: set net.ipv4.ip_forward 1, was 0")
	if i < 0 || i+1 == len(lines) || lines[i+1] != "spectrum-router: no IPv6 in this kernel (no /proc/sys/net/ipv6/conf/all/forwarding): routing IPv4 only" ||
		slices.ContainsFunc(lines, func(l string) bool {
			return strings.Contains(l, "ipv6") && !strings.Contains(l, "no IPv6 in this kernel")
		}) {
		t.Errorf("console:\n%s", strings.Join(lines, "\n"))
	}
	checkSysctl(t, ns, "net.ipv4.ip_forward", "1")
	checkSysctl(t, ns, "net.ipv6.conf.all.forwarding", "0")
	rs, _ := readRuleset(t, ns)
	for name := range rs.Chains {
		if strings.HasPrefix(name, "ipv6_forwarding-was-") {
			t.Errorf("table has chain %s on a kernel without IPv6", name)
		}
	}
	if _, ok := rs.Chains["ip_forward-was-0"]; !ok {
		t.Errorf("no chain ip_forward-was-0: %v", rs.Chains)
	}
	n := len(a.lines())
	if code := a.stop(); code != 0 {
		t.Errorf("exit status %d, want 0", code)
	}
	if got := a.linesSince(n); slices.ContainsFunc(got, func(l string) bool { return strings.Contains(l, "ipv6") }) {
		t.Errorf("console after SIGTERM: %q", got)
	}
	checkSysctl(t, ns, "net.ipv4.ip_forward", "0")
}

// pathMTU sends a datagram of size bytes (don't fragment) from ns to
// addr, UDP port 9, every 100 ms until the socket's path MTU (IP_MTU,
// IPV6_MTU) is below size, and returns it; or the MTU at the end of a
// few seconds.
func pathMTU(t *testing.T, ns *nstest.NS, addr string, size int) int {
	t.Helper()
	dst := netip.MustParseAddr(addr)
	var c *net.UDPConn
	inNS(t, ns, func() {
		var err error
		if c, err = net.DialUDP("udp", nil, &net.UDPAddr{IP: dst.AsSlice(), Port: 9}); err != nil {
			t.Fatal(err)
		}
	})
	defer c.Close()
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	level, opt, disc, do := unix.IPPROTO_IP, unix.IP_MTU, unix.IP_MTU_DISCOVER, unix.IP_PMTUDISC_DO
	if dst.Is6() {
		level, opt, disc, do = unix.IPPROTO_IPV6, unix.IPV6_MTU, unix.IPV6_MTU_DISCOVER, unix.IPV6_PMTUDISC_DO
	}
	mtu := 0
	rc.Control(func(fd uintptr) { err = unix.SetsockoptInt(int(fd), level, disc, do) })
	if err != nil {
		t.Fatal(err)
	}
	for range 30 {
		c.Write(make([]byte, size-28-20*btoi(dst.Is6()))) // the IP packet size bytes
		time.Sleep(100 * time.Millisecond)
		rc.Control(func(fd uintptr) { mtu, err = unix.GetsockoptInt(int(fd), level, opt) })
		if err != nil {
			t.Fatal(err)
		}
		if mtu < size {
			break
		}
	}
	return mtu
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// synMSS is the MSS option of the TCP SYNs (not SYN+ACK) among the
// captured packets of family v6, from src.
func synMSS(c *linkCapture, v6 bool, src string) []int {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []int
	for _, p := range c.pkts {
		var s netip.Addr
		var tcp []byte
		switch {
		case v6 && len(p) >= 60 && p[0]>>4 == 6 && p[6] == unix.IPPROTO_TCP:
			s, tcp = netip.AddrFrom16([16]byte(p[8:24])), p[40:]
		case !v6 && len(p) >= 40 && p[0]>>4 == 4 && p[9] == unix.IPPROTO_TCP:
			hl := int(p[0]&15) * 4
			s, tcp = netip.AddrFrom4([4]byte(p[12:16])), p[hl:]
		default:
			continue
		}
		if s.String() != src || len(tcp) < 20 || tcp[13]&0x12 != 0x02 {
			continue
		}
		opts := tcp[20:min(int(tcp[12]>>4)*4, len(tcp))]
		for len(opts) >= 2 && opts[0] != 0 {
			if opts[0] == 1 {
				opts = opts[1:]
				continue
			}
			if opts[0] == 2 && opts[1] == 4 && len(opts) >= 4 {
				out = append(out, int(binary.BigEndian.Uint16(opts[2:])))
			}
			if opts[1] < 2 || int(opts[1]) > len(opts) {
				break
			}
			opts = opts[opts[1]:]
		}
	}
	return out
}

// TestMTU (issue 18): packet too big (ICMPv6) and fragmentation needed
// (ICMP) reach a client, from a router beyond the provider's uplink (a
// hop at MTU 1280 behind the LAN) and from the provider itself (its
// uplink at MTU 1280): the client's path MTU drops to 1280 for the
// destination. And a client's TCP SYN leaves the uplink with its MSS
// clamped to the route's MTU, 1240 in IPv4 and 1220 in IPv6 at 1280
// (1460 and 1440 as the client sent them at 1500).
func TestMTU(t *testing.T) {
	n := newAttackNet(t)
	waitDAD(t, n.c1)
	// far: a host behind the LAN's router, the hop to it at 1280.
	far := nstest.New(t)
	veth(t, n.lan.ns, "far0", "52:54:00:00:03:01", far, "eth0", "52:54:00:00:03:02")
	for _, ns := range []*nstest.NS{n.lan.ns, far} {
		nic := map[bool]string{true: "far0", false: "eth0"}[ns == n.lan.ns]
		ns.IP("link", "set", nic, "mtu", "1280", "up")
	}
	n.lan.ns.IP("addr", "add", "198.51.100.1/24", "dev", "far0")
	n.lan.ns.IP("addr", "add", "2001:db8:2::1/64", "dev", "far0", "nodad")
	far.IP("addr", "add", "198.51.100.10/24", "dev", "eth0")
	far.IP("addr", "add", "2001:db8:2::10/64", "dev", "eth0", "nodad")
	far.IP("route", "add", "default", "via", "198.51.100.1")
	far.IP("-6", "route", "add", "default", "via", "2001:db8:2::1")
	sysctl(t, n.lan.ns, "net.ipv4.ip_forward=1")
	sysctl(t, n.lan.ns, "net.ipv6.conf.all.forwarding=1")

	for _, addr := range []string{"198.51.100.10", "2001:db8:2::10"} {
		if mtu := pathMTU(t, n.c1, addr, 1400); mtu != 1280 {
			t.Errorf("client 1's path MTU to %s (beyond the LAN, behind a hop at 1280): %d, want 1280", addr, mtu)
		}
	}

	// The uplink at 1280: first the SYNs, from a client that has not
	// learnt the path MTU yet.
	n.prov.IP("link", "set", "up0", "mtu", "1280")
	n.lan.ns.IP("link", "set", "lan0", "mtu", "1280")
	w4, w6 := captureLink(t, n.lan.ns, "lan0"), captureIPv6(t, n.lan.ns, "lan0")
	for _, addr := range []string{webAddr, webAddr6} {
		if got, err := dialTCP(t, n.c1, addr, 7); err != nil {
			t.Errorf("client 1 -> %s:7: %q, %v", addr, got, err)
		}
	}
	time.Sleep(100 * time.Millisecond)
	if got := synMSS(w4, false, uplinkAddr); !slices.Equal(got, []int{1240}) {
		t.Errorf("the SYN's MSS on the LAN (IPv4): %v, want [1240]", got)
	}
	if got := synMSS(w6, true, uplinkAddr6); !slices.Equal(got, []int{1220}) {
		t.Errorf("the SYN's MSS on the LAN (IPv6): %v, want [1220]", got)
	}
	// The path MTU after the SYNs: a client that knows it sends a
	// smaller MSS itself.
	for _, addr := range []string{webAddr, webAddr6} {
		if mtu := pathMTU(t, n.c1, addr, 1400); mtu != 1280 {
			t.Errorf("client 1's path MTU to %s (the provider's uplink at 1280): %d, want 1280", addr, mtu)
		}
	}
}
