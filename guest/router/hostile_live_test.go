package router_test

import (
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"
	"golang.org/x/sys/unix"

	"spectrum-os.org/netcfg/guest/router"
	"spectrum-os.org/netcfg/internal/mac"
	"spectrum-os.org/netcfg/internal/nstest"
)

// The attacker's tests (issue 17): what a hostile client does to its
// provider, from a client namespace, against the real spectrum-router.

// attackNet is a provider with a LAN beyond its uplink and two clients,
// c1 (link id 1, gateway 169.254.0.1, provider NIC p1) and c2 (id 2).
type attackNet struct {
	prov, c1, c2 *nstest.NS
	lan          *lan
	pa           *agent
}

func newAttackNet(t *testing.T) *attackNet {
	t.Helper()
	n := &attackNet{prov: nstest.New(t)}
	n.lan = newLAN(t, n.prov)
	n.pa = startAgent(t, n.prov, "nameserver "+dns1Addr+"\n")
	n.c1 = client(t, n.prov, n.pa, "p1", 1)
	n.c2 = client(t, n.prov, n.pa, "p2", 2)
	return n
}

// csum is the Internet checksum of the parts.
func csum(parts ...[]byte) uint16 {
	var sum uint32
	for _, p := range parts {
		for i := 0; i < len(p); i += 2 {
			if i+1 < len(p) {
				sum += uint32(binary.BigEndian.Uint16(p[i:]))
			} else {
				sum += uint32(p[i]) << 8
			}
		}
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}

// ip4 is an IPv4 packet from src to dst carrying payload of protocol
// proto (the payload's checksum is the caller's), TTL 64.
func ip4(src, dst string, proto byte, payload []byte) []byte {
	h := make([]byte, 20)
	h[0] = 0x45
	binary.BigEndian.PutUint16(h[2:], uint16(20+len(payload)))
	h[8], h[9] = 64, proto
	s, d := netip.MustParseAddr(src).As4(), netip.MustParseAddr(dst).As4()
	copy(h[12:], s[:])
	copy(h[16:], d[:])
	binary.BigEndian.PutUint16(h[10:], csum(h))
	return append(h, payload...)
}

// pseudo4 is the IPv4 pseudo-header for a transport checksum.
func pseudo4(src, dst string, proto byte, n int) []byte {
	s, d := netip.MustParseAddr(src).As4(), netip.MustParseAddr(dst).As4()
	return append(append(s[:], d[:]...), 0, proto, byte(n>>8), byte(n))
}

// udp4 is a UDP datagram with a valid checksum.
func udp4(src, dst string, sport, dport uint16, payload []byte) []byte {
	b := make([]byte, 8, 8+len(payload))
	binary.BigEndian.PutUint16(b[0:], sport)
	binary.BigEndian.PutUint16(b[2:], dport)
	binary.BigEndian.PutUint16(b[4:], uint16(8+len(payload)))
	b = append(b, payload...)
	binary.BigEndian.PutUint16(b[6:], csum(pseudo4(src, dst, 17, len(b)), b))
	return b
}

// sendIPv4 sends whole IPv4 packets from ns through a raw socket
// (IP_HDRINCL): the kernel routes them by their destination and sends
// them as they are.
func sendIPv4(t *testing.T, ns *nstest.NS, pkts ...[]byte) {
	t.Helper()
	inNS(t, ns, func() {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW, unix.IPPROTO_RAW)
		if err != nil {
			t.Fatal(err)
		}
		defer unix.Close(fd)
		for _, p := range pkts {
			var d [4]byte
			copy(d[:], p[16:20])
			if err := unix.Sendto(fd, p, 0, &unix.SockaddrInet4{Addr: d}); err != nil {
				t.Fatalf("send raw: %v", err)
			}
		}
	})
}

func src4(p []byte) netip.Addr { return netip.AddrFrom4([4]byte(p[12:16])) }

// dnsQuery is an A query for web.example.
func dnsQuery(t *testing.T) []byte {
	t.Helper()
	b := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: 4243, RecursionDesired: true})
	b.StartQuestions()
	b.Question(dnsmessage.Question{Name: dnsmessage.MustNewName("web.example."), Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET})
	q, err := b.Finish()
	if err != nil {
		t.Fatal(err)
	}
	return q
}

// listenUDP listens on UDP port in ns.
func listenUDP(t *testing.T, ns *nstest.NS, port int) *net.UDPConn {
	t.Helper()
	var l *net.UDPConn
	inNS(t, ns, func() {
		var err error
		if l, err = net.ListenUDP("udp", &net.UDPAddr{Port: port}); err != nil {
			t.Fatal(err)
		}
	})
	t.Cleanup(func() { l.Close() })
	return l
}

// linkCapture records every IPv4 packet (or IPv6, captureIPv6) seen on a
// NIC (AF_PACKET), in either direction, whoever it is for.
type linkCapture struct {
	mu   sync.Mutex
	pkts [][]byte // IP packets, without the Ethernet header
}

func captureLink(t *testing.T, ns *nstest.NS, dev string) *linkCapture {
	t.Helper()
	return captureEther(t, ns, dev, unix.ETH_P_IP)
}

// captureEther is captureLink for the packets of Ethernet type typ.
func captureEther(t *testing.T, ns *nstest.NS, dev string, typ uint16) *linkCapture {
	t.Helper()
	idx := link(t, ns, dev)
	c := &linkCapture{}
	var fd int
	inNS(t, ns, func() {
		var err error
		if fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_DGRAM, int(hton16(typ))); err != nil {
			t.Fatal(err)
		}
		if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: hton16(typ), Ifindex: idx}); err != nil {
			t.Fatal(err)
		}
	})
	f := os.NewFile(uintptr(fd), "capture "+dev)
	t.Cleanup(func() { f.Close() })
	go func() {
		buf := make([]byte, 65536)
		for {
			n, err := f.Read(buf)
			if err != nil {
				return
			}
			// ARP and the rest have no IP version there.
			if v := buf[0] >> 4; n >= 20 && v == 4 || n >= 40 && v == 6 {
				c.mu.Lock()
				c.pkts = append(c.pkts, append([]byte(nil), buf[:n]...))
				c.mu.Unlock()
			}
		}
	}()
	return c
}

func hton16(v uint16) uint16 { return v<<8 | v>>8 }

// ipHeader is a captured packet's addresses and protocol (IPv6: the first
// next header).
func ipHeader(p []byte) (src, dst netip.Addr, proto byte) {
	if p[0]>>4 == 6 {
		return netip.AddrFrom16([16]byte(p[8:24])), netip.AddrFrom16([16]byte(p[24:40])), p[6]
	}
	return src4(p), netip.AddrFrom4([4]byte(p[16:20])), p[9]
}

// toProto returns the captured IPv4 packets of protocol proto to dst.
func (c *linkCapture) toProto(dst string, proto byte) [][]byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out [][]byte
	for _, p := range c.pkts {
		if p[0]>>4 == 4 && p[9] == proto && netip.AddrFrom4([4]byte(p[16:20])).String() == dst {
			out = append(out, p)
		}
	}
	return out
}

// to returns the captured packets, of either family, whose destination f
// accepts.
func (c *linkCapture) to(f func(dst netip.Addr) bool) []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for _, p := range c.pkts {
		if src, dst, proto := ipHeader(p); f(dst) {
			out = append(out, src.String()+" -> "+dst.String()+" proto "+itoa(int(proto)))
		}
	}
	return out
}

// TestHostileResolverForgedSource: a client sends DNS queries to the
// virtual resolver with another client's source address, and with an
// outside one (strict rp_filter off on its link, so that only the router
// stands in the way): no answer may go to the other client (a reflection,
// or eating its share of a per-client limit), nor anything out of the
// uplink for the outside address.
func TestHostileResolverForgedSource(t *testing.T) {
	n := newAttackNet(t)
	sysctl(t, n.prov, "net.ipv4.conf.p1.rp_filter=0")
	sysctl(t, n.prov, "net.ipv4.conf.all.rp_filter=0")
	cap := captureLink(t, n.lan.ns, "lan0")
	// Client 2 listens where the answers to the forged queries would go.
	l := listenUDP(t, n.c2, 5300)
	q := dnsQuery(t)
	const c2, outside = "100.64.0.2", "198.51.100.77"
	var pkts [][]byte
	for i := range 50 {
		pkts = append(pkts, ip4(c2, "100.127.255.53", 17, udp4(c2, "100.127.255.53", 5300, 53, q)))
		pkts = append(pkts, ip4(outside, "100.127.255.53", 17, udp4(outside, "100.127.255.53", uint16(5300+i), 53, q)))
	}
	sendIPv4(t, n.c1, pkts...)
	l.SetReadDeadline(time.Now().Add(time.Second))
	if _, from, err := l.ReadFromUDP(make([]byte, 512)); err == nil {
		t.Errorf("client 2 got an answer to a query client 1 forged in its name, from %v", from)
	}
	// Client 2's own queries still work.
	for range 5 {
		if a, err := query(t, n.c2, false, 0); err != nil || a != netip.MustParseAddr("192.0.2.1") {
			t.Errorf("client 2's query after the forged ones: %v, %v", a, err)
		}
	}
	for _, p := range cap.to(func(d netip.Addr) bool { return d.String() == outside }) {
		t.Errorf("an answer to a query forged from %s left the uplink: %s", outside, p)
	}
}

// TestHostileResolver6ForgedSource (issue 18): TestHostileResolverForgedSource
// over IPv6. Client 2 has a query's connection to fd9f:2b8:5010::53 from
// its port 5300, its socket still open; client 1 sends queries to
// fd9f:2b8:5010::53 with client 2's address and that port (conntrack
// would redirect them on client 2's entry, as client 2's), with another
// address of its own link's /64 and with an outside one. None is
// answered, nothing for the outside address leaves the uplink, and client
// 2's own queries are still answered.
func TestHostileResolver6ForgedSource(t *testing.T) {
	n := newAttackNet(t)
	wire := captureIPv6(t, n.lan.ns, "lan0")
	q := dnsQuery(t)
	res := &net.UDPAddr{IP: mac.Resolver6.AsSlice(), Port: 53}
	c2 := mac.LinkID(2).ClientAddr6()
	waitDAD(t, n.c2)
	var c2c *net.UDPConn
	var err error
	inNS(t, n.c2, func() { c2c, err = net.ListenUDP("udp6", &net.UDPAddr{IP: c2.AsSlice(), Port: 5300}) })
	if err != nil {
		t.Fatal(err)
	}
	defer c2c.Close()
	buf := make([]byte, 512)
	if _, err := c2c.WriteToUDP(q, res); err != nil {
		t.Fatal(err)
	}
	c2c.SetReadDeadline(time.Now().Add(2 * time.Second))
	if m, _, err := c2c.ReadFromUDP(buf); err != nil {
		t.Fatalf("client 2's own query: %v", err)
	} else if a, err := answerAddr(buf[:m], dnsmessage.TypeA); err != nil || a != netip.MustParseAddr("192.0.2.1") {
		t.Fatalf("client 2's own query: %v, %v", a, err)
	}

	const own, outside = "fd9f:2b8:5010:1::77", "2001:db8:77::77"
	var socks []*net.UDPConn
	for _, a := range []struct {
		addr netip.Addr
		port int
	}{{c2, 5300}, {netip.MustParseAddr(own), 5301}, {netip.MustParseAddr(outside), 5302}} {
		n.c1.IP("addr", "add", a.addr.String()+"/128", "dev", "eth0", "nodad")
		var c *net.UDPConn
		inNS(t, n.c1, func() { c, err = net.ListenUDP("udp6", &net.UDPAddr{IP: a.addr.AsSlice(), Port: a.port}) })
		if err != nil {
			t.Fatal(err)
		}
		socks = append(socks, c)
	}
	for range 20 {
		for _, c := range socks {
			c.WriteToUDP(q, res)
		}
	}
	for _, c := range append(socks, c2c) {
		c.SetReadDeadline(time.Now().Add(time.Second))
		if _, from, err := c.ReadFromUDP(buf); err == nil {
			t.Errorf("an answer from %v reached %v", from, c.LocalAddr())
		}
		c.Close()
	}
	for range 5 {
		if a, err := queryAt(t, n.c2, router.Resolver6, dnsmessage.TypeA, false, 0); err != nil || a != netip.MustParseAddr("192.0.2.1") {
			t.Errorf("client 2's query after the forged ones: %v, %v", a, err)
		}
	}
	for _, p := range wire.find(func(_, d netip.Addr, _ byte, _ []byte) bool { return d.String() == outside }) {
		t.Errorf("an answer to a query forged from %s left the uplink: %s", outside, p)
	}
}

// TestHostileResolverTCPHold: a client opens 300 TCP connections to the
// virtual resolver and holds them open, sending nothing (a slowloris);
// another client's queries, over UDP and TCP, must still be answered.
func TestHostileResolverTCPHold(t *testing.T) {
	n := newAttackNet(t)
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	inNS(t, n.c1, func() {
		for range 300 {
			c, err := net.DialTimeout("tcp", "100.127.255.53:53", time.Second)
			if err != nil {
				break // refused or limited: fine
			}
			conns = append(conns, c)
		}
	})
	t.Logf("client 1 holds %d connections to the resolver", len(conns))
	for _, tcp := range []bool{false, true} {
		for range 5 {
			if a, err := query(t, n.c2, tcp, 0); err != nil || a != netip.MustParseAddr("192.0.2.1") {
				t.Errorf("client 2's query (tcp %v) while client 1 holds %d connections: %v, %v", tcp, len(conns), a, err)
			}
		}
	}
}

// TestHostileIPv6Isolation: with IPv6 forwarding on in the provider (as
// its OS or a later router may have it), a client sends to another
// client's IPv6 address (its link's ULA ::2, through its default route
// via fe80::1) over UDP and TCP: nothing may arrive. The provider does
// forward IPv6: a host behind a NIC that is not a provider link reaches
// the LAN through it.
func TestHostileIPv6Isolation(t *testing.T) {
	n := newAttackNet(t)
	sysctl(t, n.prov, "net.ipv6.conf.all.forwarding=1")
	n.prov.IP("addr", "add", "fd17:2::1/64", "dev", "up0", "nodad")
	n.lan.ns.IP("addr", "add", "fd17:2::10/64", "dev", "lan0", "nodad")
	n.lan.ns.IP("route", "add", "fd17::/16", "via", "fd17:2::1")
	other := nstest.New(t)
	veth(t, n.prov, "x1", "52:54:00:00:00:11", other, "eth0", "52:54:00:00:00:12")
	n.prov.IP("link", "set", "x1", "up")
	n.prov.IP("addr", "add", "fd17:3::1/64", "dev", "x1", "nodad")
	other.IP("link", "set", "eth0", "up")
	other.IP("addr", "add", "fd17:3::2/64", "dev", "eth0", "nodad")
	other.IP("route", "add", "default", "via", "fd17:3::1")
	var lanUDP *net.UDPConn
	inNS(t, n.lan.ns, func() {
		var err error
		if lanUDP, err = net.ListenUDP("udp6", &net.UDPAddr{IP: net.ParseIP("fd17:2::10"), Port: 9}); err != nil {
			t.Fatal(err)
		}
	})
	defer lanUDP.Close()
	inNS(t, other, func() {
		c, err := net.Dial("udp6", "[fd17:2::10]:9")
		if err != nil {
			t.Fatal(err)
		}
		c.Write([]byte("other"))
		c.Close()
	})
	lanUDP.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, _, err := lanUDP.ReadFromUDP(make([]byte, 100)); err != nil {
		t.Fatalf("the other host's IPv6 datagram was not forwarded (%v): the test's set-up is wrong", err)
	}

	c2addr := mac.LinkID(2).ClientAddr6().String()
	var ul *net.UDPConn
	var tl net.Listener
	inNS(t, n.c2, func() {
		var err error
		if ul, err = net.ListenUDP("udp6", &net.UDPAddr{Port: 9999}); err != nil {
			t.Fatal(err)
		}
		if tl, err = net.Listen("tcp6", "[::]:9999"); err != nil {
			t.Fatal(err)
		}
	})
	defer ul.Close()
	defer tl.Close()
	inNS(t, n.c1, func() {
		if c, err := net.Dial("udp6", "["+c2addr+"]:9999"); err == nil {
			c.Write([]byte("from client 1"))
			c.Close()
		}
		if c, err := net.DialTimeout("tcp6", "["+c2addr+"]:9999", 2*time.Second); err == nil {
			t.Errorf("client 1 connected to client 2 over IPv6")
			c.Close()
		}
	})
	ul.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if n, from, err := ul.ReadFromUDP(make([]byte, 100)); err == nil {
		t.Errorf("client 2 got %d bytes over IPv6 from %v", n, from)
	}
}

// provLL is the provider's IPv6 link-local address on link id's NIC
// (modified EUI-64 of 0a:b3:ec:80:00:id).
func provLL(id byte) string { return "fe80::8b3:ecff:fe80:" + strconv.FormatUint(uint64(id), 16) }

// waitDAD waits until no IPv6 address of ns is tentative.
func waitDAD(t *testing.T, ns *nstest.NS) {
	t.Helper()
	end := deadline(t)
	for strings.TrimSpace(string(ns.IP("-6", "addr", "show", "tentative"))) != "" {
		if time.Now().After(end) {
			t.Fatalf("IPv6 addresses still tentative: %s", ns.IP("-6", "addr"))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// services listens in ns on TCP and UDP [::]:port (both families, every
// address, as a careless service does) and records what reaches it.
type services struct {
	mu   sync.Mutex
	got  []string
	tl   net.Listener
	ul   *net.UDPConn
	port int
}

func listenServices(t *testing.T, ns *nstest.NS, port int) *services {
	t.Helper()
	s := &services{port: port}
	inNS(t, ns, func() {
		var err error
		if s.tl, err = net.Listen("tcp", "[::]:"+itoa(port)); err != nil {
			t.Fatal(err)
		}
		if s.ul, err = net.ListenUDP("udp", &net.UDPAddr{Port: port}); err != nil {
			t.Fatal(err)
		}
	})
	t.Cleanup(func() { s.tl.Close(); s.ul.Close() })
	go func() {
		for {
			c, err := s.tl.Accept()
			if err != nil {
				return
			}
			s.add("tcp from " + c.RemoteAddr().String() + " to " + c.LocalAddr().String())
			c.Write([]byte("provider service\n"))
			c.Close()
		}
	}()
	go func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := s.ul.ReadFromUDP(buf)
			if err != nil {
				return
			}
			s.add("udp " + string(buf[:n]) + " from " + from.String())
			s.ul.WriteToUDP(buf[:n], from)
		}
	}()
	return s
}

func (s *services) add(e string) {
	s.mu.Lock()
	s.got = append(s.got, e)
	s.mu.Unlock()
}

func (s *services) seen() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.got...)
}

// dialFrom tries a TCP connection from ns to addr:port and returns how
// long it took and the error (nil: connected).
func dialFrom(t *testing.T, ns *nstest.NS, addr string, port int) (time.Duration, error) {
	t.Helper()
	var err error
	var took time.Duration
	inNS(t, ns, func() {
		start := time.Now()
		var c net.Conn
		c, err = net.DialTimeout("tcp", net.JoinHostPort(addr, itoa(port)), 3*time.Second)
		took = time.Since(start)
		if err == nil {
			c.Close()
		}
	})
	return took, err
}

// sendUDP sends one datagram from ns to addr:port (with options set on the
// socket first by ctl, if not nil) and waits up to wait for an answer.
func sendUDP(t *testing.T, ns *nstest.NS, addr string, port int, payload string, wait time.Duration, ctl func(fd int) error) ([]byte, error) {
	t.Helper()
	var c *net.UDPConn
	var err error
	inNS(t, ns, func() {
		d := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
			var cerr error
			rc.Control(func(fd uintptr) {
				cerr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_BROADCAST, 1)
				if cerr == nil && ctl != nil {
					cerr = ctl(int(fd))
				}
			})
			return cerr
		}}
		var nc net.Conn
		if nc, err = d.Dial("udp", net.JoinHostPort(addr, itoa(port))); err == nil {
			c = nc.(*net.UDPConn)
		}
	})
	if err != nil {
		return nil, err
	}
	defer c.Close()
	if _, err := c.Write([]byte(payload)); err != nil {
		return nil, err
	}
	c.SetReadDeadline(time.Now().Add(wait))
	buf := make([]byte, 1500)
	n, err := c.Read(buf)
	return buf[:n], err
}

// fastReject is how soon a refused probe must fail: a reset or an ICMP
// error comes back in a round trip, a drop only at the dial's timeout.
const fastReject = time.Second

// TestHostileProviderServices is row 1 of issue 17 at the addresses
// TestAttackProviderServices does not try: a client tries a service of
// its provider's bound to [::] (TCP and UDP) at an IPv6 address of the
// uplink's (through the provider's link-local), at the link's ULA ::1 and
// another link's, and at the
// virtual resolver's address on a port that is not DNS. None may answer;
// TCP must fail fast (reset or ICMP unreachable), not time out.
func TestHostileProviderServices(t *testing.T) {
	n := newAttackNet(t)
	const port = 2222
	svc := listenServices(t, n.prov, port)
	n.prov.IP("addr", "add", "fd17:1::2/64", "dev", "up0", "nodad")
	waitDAD(t, n.prov)
	waitDAD(t, n.c1)
	n.c1.IP("-6", "route", "add", "fd17:1::/64", "via", provLL(1), "dev", "eth0")
	// The service answers where it may: the provider itself.
	if _, err := dialFrom(t, n.prov, uplinkAddr, port); err != nil {
		t.Fatalf("the provider's own service does not answer it: %v", err)
	}
	for _, a := range []string{
		"fd17:1::2",                            // an IPv6 address of the uplink's
		mac.LinkID(1).ProviderAddr6().String(), // the link's ULA ::1
		mac.LinkID(2).ProviderAddr6().String(), // another link's
		"100.127.255.53",                       // the virtual resolver, not DNS
	} {
		took, err := dialFrom(t, n.c1, a, port)
		switch {
		case err == nil:
			t.Errorf("TCP [%s]:%d: client 1 connected to its provider's service", a, port)
		case took > fastReject:
			t.Errorf("TCP [%s]:%d: failed after %v (%v): dropped, want a fast reject", a, port, took.Round(time.Millisecond), err)
		}
		if r, err := sendUDP(t, n.c1, a, port, "probe "+a, 500*time.Millisecond, nil); err == nil {
			t.Errorf("UDP [%s]:%d: the provider's service answered %q", a, port, r)
		}
	}
	for _, s := range svc.seen() {
		if !strings.Contains(s, " from "+uplinkAddr+":") && !strings.Contains(s, "from ["+uplinkAddr) {
			t.Errorf("the provider's service got a client's probe: %s", s)
		}
	}
}

// TestHostileProviderBroadcast: a client sends UDP to the provider's
// broadcast and multicast addresses, where a service bound to 0.0.0.0 or
// [::] (mDNS, LLMNR, a DHCP client or server, ...) hears them: the
// limited broadcast and all-nodes on its link, the uplink's subnet
// broadcast through its gateway, mDNS's groups. Nothing may reach the
// provider's sockets.
func TestHostileProviderBroadcast(t *testing.T) {
	n := newAttackNet(t)
	const port = 5353
	svc := listenServices(t, n.prov, port)
	// A service that joined mDNS's groups, as an mDNS responder does, on
	// every provider NIC.
	inNS(t, n.prov, func() {
		fd, err := svc.ul.SyscallConn()
		if err != nil {
			t.Fatal(err)
		}
		fd.Control(func(fd uintptr) {
			for _, dev := range []string{"p1", "p2", "up0"} {
				ifi, err := net.InterfaceByName(dev)
				if err != nil {
					t.Fatal(err)
				}
				mreq := &unix.IPMreqn{Multiaddr: [4]byte{224, 0, 0, 251}, Ifindex: int32(ifi.Index)}
				if err := unix.SetsockoptIPMreqn(int(fd), unix.IPPROTO_IP, unix.IP_ADD_MEMBERSHIP, mreq); err != nil {
					t.Fatal(err)
				}
				m6 := &unix.IPv6Mreq{Multiaddr: [16]byte{0xff, 0x02, 15: 0xfb}, Interface: uint32(ifi.Index)}
				if err := unix.SetsockoptIPv6Mreq(int(fd), unix.IPPROTO_IPV6, unix.IPV6_JOIN_GROUP, m6); err != nil {
					t.Fatal(err)
				}
			}
		})
	})
	waitDAD(t, n.c1)
	bindEth0 := func(fd int) error { return unix.SetsockoptString(fd, unix.SOL_SOCKET, unix.SO_BINDTODEVICE, "eth0") }
	n.c1.IP("route", "add", "203.0.113.255/32", "via", "169.254.0.1", "dev", "eth0", "onlink")
	// A numeric zone: Go's cache of NIC names is the process's, not the
	// namespace's.
	zone := "%" + itoa(link(t, n.c1, "eth0"))
	for _, a := range []string{"255.255.255.255", "203.0.113.255", "224.0.0.251", "ff02::1" + zone, "ff02::fb" + zone} {
		sendUDP(t, n.c1, a, port, "probe "+a, 300*time.Millisecond, bindEth0)
	}
	// The same from the provider's own LAN, to see that the service
	// hears broadcasts at all.
	sendUDP(t, n.lan.ns, "203.0.113.255", port, "control", time.Second, func(fd int) error {
		return unix.SetsockoptString(fd, unix.SOL_SOCKET, unix.SO_BINDTODEVICE, "lan0")
	})
	time.Sleep(300 * time.Millisecond)
	control := false
	for _, s := range svc.seen() {
		if strings.HasPrefix(s, "udp control ") {
			control = true
			continue
		}
		t.Errorf("the provider's service heard a client: %s", s)
	}
	if !control {
		t.Errorf("the provider's service did not hear the LAN's broadcast: the test's set-up is wrong")
	}
}

// TestHostileDHCPFromClient: a client plays DHCP server to its provider
// (the provider's OS might run a DHCP client on the NIC): a BOOTP reply
// from port 67 to port 68, broadcast on its link and unicast to its
// gateway, must not reach the provider's port 68.
func TestHostileDHCPFromClient(t *testing.T) {
	n := newAttackNet(t)
	svc := listenServices(t, n.prov, 68)
	from67 := func(fd int) error {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); err != nil {
			return err
		}
		if err := unix.SetsockoptString(fd, unix.SOL_SOCKET, unix.SO_BINDTODEVICE, "eth0"); err != nil {
			return err
		}
		return unix.Bind(fd, &unix.SockaddrInet4{Port: 67})
	}
	for _, a := range []string{"255.255.255.255", "169.254.0.1"} {
		sendUDP(t, n.c1, a, 68, "bootp reply to "+a, 300*time.Millisecond, from67)
	}
	time.Sleep(200 * time.Millisecond)
	for _, s := range svc.seen() {
		t.Errorf("the provider's DHCP client port got a client's datagram: %s", s)
	}
}

// tcp4 is a TCP segment with the given flags and a valid checksum.
func tcp4(src, dst string, sport, dport uint16, seq, ack uint32, flags byte) []byte {
	b := make([]byte, 20)
	binary.BigEndian.PutUint16(b[0:], sport)
	binary.BigEndian.PutUint16(b[2:], dport)
	binary.BigEndian.PutUint32(b[4:], seq)
	binary.BigEndian.PutUint32(b[8:], ack)
	b[12], b[13] = 5<<4, flags
	binary.BigEndian.PutUint16(b[14:], 65535)
	binary.BigEndian.PutUint16(b[16:], csum(pseudo4(src, dst, 6, len(b)), b))
	return b
}

// icmp4 is an ICMP message of type and code with body (after the
// 4-byte header) and a valid checksum.
func icmp4(typ, code byte, body []byte) []byte {
	b := append([]byte{typ, code, 0, 0}, body...)
	binary.BigEndian.PutUint16(b[2:], csum(b))
	return b
}

// TestHostileInvalidLeaks is row 5 of issue 17: packets conntrack finds
// invalid (an unsolicited ICMP echo reply, a TCP SYN+FIN, a bare ACK, a
// RST, no flags, an ICMP error quoting no flow) from a client must not
// leave the uplink, NATed or not.
func TestHostileInvalidLeaks(t *testing.T) {
	n := newAttackNet(t)
	wire := captureLink(t, n.lan.ns, "lan0")
	const c1 = "100.64.0.1"
	sendIPv4(t, n.c1,
		ip4(c1, webAddr, 1, icmp4(0, 0, []byte{0x53, 0x50, 0, 1, 'l', 'e', 'a', 'k'})), // echo reply
		ip4(c1, webAddr, 6, tcp4(c1, webAddr, 1001, 7, 1000, 0, 0x03)),                 // SYN+FIN
		ip4(c1, webAddr, 6, tcp4(c1, webAddr, 1002, 7, 1000, 2000, 0x10)),              // bare ACK
		ip4(c1, webAddr, 6, tcp4(c1, webAddr, 1003, 7, 1000, 2000, 0x04)),              // RST
		ip4(c1, webAddr, 6, tcp4(c1, webAddr, 1004, 7, 1000, 0, 0x29)),                 // FIN+PSH+URG (xmas)
		// A port unreachable quoting a flow there never was.
		ip4(c1, webAddr, 1, icmp4(3, 3, append([]byte{0, 0, 0, 0}, quoteUDP(webAddr, c1, 7, 1007)...))),
		ip4(c1, webAddr, 6, tcp4(c1, webAddr, 1006, 7, 1000, 0, 0x00)), // no flags
	)
	// A barrier: a genuine connection after them.
	if _, err := dialTCP(t, n.c1, webAddr, 7); err != nil {
		t.Fatalf("client 1's genuine connection: %v", err)
	}
	time.Sleep(200 * time.Millisecond)
	for _, p := range wire.toProto(webAddr, unix.IPPROTO_ICMP) {
		if len(p) > 20 && p[20] == 0 {
			t.Errorf("an unsolicited echo reply left the uplink from %v", src4(p))
		}
		if len(p) > 20 && p[20] == 3 {
			t.Errorf("an ICMP error quoting no flow left the uplink from %v", src4(p))
		}
	}
	for _, p := range wire.toProto(webAddr, unix.IPPROTO_TCP) {
		if len(p) < 40 {
			continue
		}
		// The forged segments' source ports are below the ephemeral
		// range: NATed or not, they are theirs.
		// The bare ACK may leave NATed: conntrack takes it for a
		// connection picked up mid-stream (nf_conntrack_tcp_loose), a
		// new one, under the link's limits.
		sport := binary.BigEndian.Uint16(p[20:])
		if sport == 1002 && src4(p).String() == uplinkAddr {
			continue
		}
		if sport >= 1001 && sport <= 1006 || src4(p).String() != uplinkAddr {
			t.Errorf("an invalid TCP segment left the uplink: from %v:%d flags %#x", src4(p), sport, p[33])
		}
	}
}

// raBody is a Router Advertisement after its type, code and checksum
// (RFC 4861 4.2): router preference high (RFC 4191), lifetime 1800 s, and
// a Prefix Information option for the /64 pfx with L and A set.
func raBody(pfx netip.Prefix) []byte {
	b := []byte{64, 0x08, 0x07, 0x08, 0, 0, 0, 0, 0, 0, 0, 0}
	b = append(b, 3, 4, 64, 0xc0)
	b = binary.BigEndian.AppendUint32(b, 86400)
	b = binary.BigEndian.AppendUint32(b, 14400)
	b = append(b, 0, 0, 0, 0)
	a := pfx.Addr().As16()
	return append(b, a[:]...)
}

// sendICMP6 sends an ICMPv6 message (type, code, body; the kernel sums
// it) from ns to dst on NIC dev, hop limit 255 as NDP requires, with the
// IPv6 extension header ext (a sticky option such as IPV6_HOPOPTS or
// IPV6_DSTOPTS, given with its bytes; 0 for none).
func sendICMP6(t *testing.T, ns *nstest.NS, dev, dst string, typ byte, body []byte, ext int, extHdr []byte) {
	t.Helper()
	idx := link(t, ns, dev)
	inNS(t, ns, func() {
		fd, err := unix.Socket(unix.AF_INET6, unix.SOCK_RAW, unix.IPPROTO_ICMPV6)
		if err != nil {
			t.Fatal(err)
		}
		defer unix.Close(fd)
		for _, o := range [][2]int{{unix.IPV6_MULTICAST_HOPS, 255}, {unix.IPV6_UNICAST_HOPS, 255}, {unix.IPV6_MULTICAST_IF, idx}} {
			if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, o[0], o[1]); err != nil {
				t.Fatal(err)
			}
		}
		if ext != 0 {
			if err := unix.SetsockoptString(fd, unix.IPPROTO_IPV6, ext, string(extHdr)); err != nil {
				t.Fatalf("extension header %d: %v", ext, err)
			}
		}
		to := &unix.SockaddrInet6{Addr: netip.MustParseAddr(dst).As16(), ZoneId: uint32(idx)}
		if err := unix.Sendto(fd, append([]byte{typ, 0, 0, 0}, body...), 0, to); err != nil {
			t.Fatalf("send ICMPv6 type %d: %v", typ, err)
		}
	})
}

// TestHostileRouterAdvertisement is row 2 of issue 17 in the forms
// TestAttackRouterAdvertisement does not send: a client's Router
// Advertisements (preference high, a prefix with A=1) behind a
// hop-by-hop options header and behind a destination options header (a
// rule that looks for ICMPv6 right after the IPv6 header misses those;
// the kernel's NDP takes them), and one sent to the provider's
// link-local rather than to all nodes. The provider must take no
// route (default or the prefix's) and no address.
func TestHostileRouterAdvertisement(t *testing.T) {
	n := newAttackNet(t)
	waitDAD(t, n.c1)
	waitDAD(t, n.prov)
	pad := []byte{0, 0, 1, 4, 0, 0, 0, 0} // next header (the kernel's), length 0, PadN(4)
	for i, v := range []struct {
		name string
		ext  int
		dst  string
	}{
		{"unicast", 0, provLL(1)},
		{"hop-by-hop options", unix.IPV6_HOPOPTS, "ff02::1"},
		{"destination options", unix.IPV6_DSTOPTS, "ff02::1"},
	} {
		pfx := netip.MustParsePrefix("2001:db8:17:" + itoa(i+1) + "::/64")
		t.Run(v.name, func(t *testing.T) {
			var hdr []byte
			if v.ext != 0 {
				hdr = pad
			}
			for range 2 {
				sendICMP6(t, n.c1, "eth0", v.dst, 134, raBody(pfx), v.ext, hdr)
			}
			time.Sleep(300 * time.Millisecond)
			if r := strings.TrimSpace(string(n.prov.IP("-6", "route", "show", "match", pfx.Addr().Next().String()))); strings.Contains(r, pfx.String()) {
				t.Errorf("the provider took the RA's prefix as a route: %s", r)
			}
			if a := strings.TrimSpace(string(n.prov.IP("-6", "addr", "show", "to", pfx.String()))); a != "" {
				t.Errorf("the provider took an address from the RA: %s", a)
			}
		})
	}
	// The provider's own default route is the LAN's (newLAN's, static).
	if r := strings.TrimSpace(string(n.prov.IP("-6", "route", "show", "default"))); r != "default via "+lanGateway6+" dev up0 metric 1024 pref medium" {
		t.Errorf("the provider took a default route from the RAs: %s", r)
	}
}

// quoteUDP is the start of an IPv4 packet src:sport -> dst:dport (UDP) as
// an ICMP error quotes it: its header and 8 bytes.
func quoteUDP(src, dst string, sport, dport uint16) []byte {
	return ip4(src, dst, 17, udp4(src, dst, sport, dport, nil))
}

// TestHostileSpoofedReplies: a client sends its provider datagrams forged
// as replies of the provider's own UDP flow out of its uplink (a DNS
// forwarder's to its upstream, say): from the LAN server's address and
// port to the provider's uplink address and the flow's port, with strict
// rp_filter off on the link so that the router's own source check is what
// stops them. Conntrack takes them for the flow's replies; they must not
// reach the provider's socket (a client poisoning its provider's DNS).
func TestHostileSpoofedReplies(t *testing.T) {
	n := newAttackNet(t)
	sysctl(t, n.prov, "net.ipv4.conf.p1.rp_filter=0")
	sysctl(t, n.prov, "net.ipv4.conf.all.rp_filter=0")
	var c *net.UDPConn
	inNS(t, n.prov, func() {
		var err error
		c, err = net.DialUDP("udp", &net.UDPAddr{IP: net.ParseIP(uplinkAddr), Port: 6000}, &net.UDPAddr{IP: net.ParseIP(webAddr), Port: 7})
		if err != nil {
			t.Fatal(err)
		}
	})
	defer c.Close()
	buf := make([]byte, 512)
	c.Write([]byte("the provider's own flow"))
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(buf); err != nil {
		t.Fatalf("the provider's flow to %s: %v", webAddr, err)
	}
	// The client takes the server's address as its own to send from it.
	n.c1.IP("addr", "add", webAddr+"/32", "dev", "eth0")
	inNS(t, n.c1, func() {
		d, err := net.DialUDP("udp", &net.UDPAddr{IP: net.ParseIP(webAddr), Port: 7}, &net.UDPAddr{IP: net.ParseIP(uplinkAddr), Port: 6000})
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		for range 3 {
			d.Write([]byte("forged answer"))
		}
	})
	c.SetReadDeadline(time.Now().Add(time.Second))
	if k, err := c.Read(buf); err == nil {
		t.Errorf("the provider's socket %s:6000 took client 1's forged reply: %q", uplinkAddr, buf[:k])
	}
}

// TestHostileRouterListeners: whatever the router itself listens on (its
// DNS forwarder's sockets, any other) is a service for no one directly:
// each listening TCP or UDP socket in the provider's namespace, tried on
// its own port from a client at its gateway (both families), the uplink's
// addresses and the virtual resolvers', and from the LAN at the uplink's
// addresses, must not answer. DNS reaches the forwarder only redirected
// from the virtual resolvers' port 53.
func TestHostileRouterListeners(t *testing.T) {
	n := newAttackNet(t)
	waitDAD(t, n.c1)
	// The router is up and serving: a query through it works.
	if a, err := query(t, n.c1, false, 0); err != nil || a != netip.MustParseAddr("192.0.2.1") {
		t.Fatalf("query: %v, %v; want 192.0.2.1", a, err)
	}
	out, err := n.prov.Command(t.Context(), "ss", "-Hlntu").Output()
	if err != nil {
		t.Fatalf("ss: %v", err)
	}
	q := dnsQuery(t)
	listeners := 0
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(line) // proto state recv-q send-q local peer
		if len(f) < 5 {
			continue
		}
		local := f[4]
		port, err := strconv.Atoi(local[strings.LastIndex(local, ":")+1:])
		if err != nil {
			t.Fatalf("ss: %q", line)
		}
		t.Logf("the provider listens: %s %s", f[0], local)
		listeners++
		for _, p := range []struct {
			who  string
			ns   *nstest.NS
			addr string
		}{
			{"client 1", n.c1, "169.254.0.1"},
			{"client 1", n.c1, uplinkAddr},
			{"client 1", n.c1, router.Resolver},
			{"client 1", n.c1, "fd9f:2b8:5010:1::1"},
			{"client 1", n.c1, "fe80::1%eth0"},
			{"client 1", n.c1, uplinkAddr6},
			{"client 1", n.c1, router.Resolver6},
			{"the LAN", n.lan.ns, uplinkAddr},
			{"the LAN", n.lan.ns, uplinkAddr6},
		} {
			switch f[0] {
			case "tcp":
				if _, err := dialFrom(t, p.ns, p.addr, port); err == nil {
					t.Errorf("%s connected to %s:%d (the provider's %s)", p.who, p.addr, port, local)
				}
			case "udp":
				if r, err := sendUDP(t, p.ns, p.addr, port, string(q), 300*time.Millisecond, nil); err == nil {
					t.Errorf("%s got an answer from %s:%d (the provider's %s): %d bytes", p.who, p.addr, port, local, len(r))
				}
			}
		}
	}
	if listeners == 0 {
		t.Fatal("the provider listens on nothing: no forwarder to try")
	}
}

// TestHostileICMPKillsDNS: while another client's query waits on the
// provider's upstream (a slow one, 3 s), a client sprays ICMP port
// unreachables to the provider's uplink address quoting every port of it
// towards the upstream's port 53, one of which is the DNS forwarder's
// pending query's. The other client's query must still be answered (it
// got SERVFAIL while conntrack let such an error through as related to
// the forwarder's connection).
func TestHostileICMPKillsDNS(t *testing.T) {
	n := newAttackNet(t)
	const slow = "203.0.113.55"
	n.lan.ns.IP("addr", "add", slow+"/24", "dev", "lan0")
	var uc *net.UDPConn
	inNS(t, n.lan.ns, func() {
		var err error
		if uc, err = net.ListenUDP("udp", &net.UDPAddr{IP: net.ParseIP(slow), Port: 53}); err != nil {
			t.Fatal(err)
		}
	})
	defer uc.Close()
	go func() {
		buf := make([]byte, 512)
		for {
			k, from, err := uc.ReadFromUDP(buf)
			if err != nil {
				return
			}
			q := append([]byte(nil), buf[:k]...)
			go func() {
				time.Sleep(3 * time.Second)
				uc.WriteToUDP(answerA(q, [4]byte{192, 0, 2, 55}), from)
			}()
		}
	}()
	n.pa.setResolv("nameserver " + slow + "\n")
	time.Sleep(300 * time.Millisecond)
	// A query with time for the slow upstream: its answer, or why not.
	slowQuery := func() error {
		r, err := sendUDP(t, n.c2, "100.127.255.53", 53, string(dnsQuery(t)), 5*time.Second, nil)
		if err != nil {
			return err
		}
		var p dnsmessage.Parser
		h, err := p.Start(r)
		if err != nil {
			return err
		}
		if h.RCode != dnsmessage.RCodeSuccess {
			return errors.New("answer " + h.RCode.String())
		}
		return nil
	}
	if err := slowQuery(); err != nil {
		t.Fatalf("client 2's query to the slow upstream: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- slowQuery() }()
	time.Sleep(300 * time.Millisecond) // the query is at the upstream
	const c1 = "100.64.0.1"
	var pkts [][]byte
	for p := 1024; p < 65536; p++ {
		inner := quoteUDP(uplinkAddr, slow, uint16(p), 53)
		pkts = append(pkts, ip4(c1, uplinkAddr, 1, icmp4(3, 3, append([]byte{0, 0, 0, 0}, inner...))))
	}
	sendIPv4(t, n.c1, pkts...)
	if err := <-done; err != nil {
		t.Errorf("client 2's query while client 1 sprayed ICMP errors: %v", err)
	}
}

// answerA is the answer to query q with one A record a, or for an AAAA
// query one AAAA record aaaa(a) (nil for a query it cannot parse); the
// tests' DNS servers all answer with it.
func answerA(q []byte, a [4]byte) []byte {
	var p dnsmessage.Parser
	h, err := p.Start(q)
	if err != nil {
		return nil
	}
	question, err := p.Question()
	if err != nil {
		return nil
	}
	b := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: h.ID, Response: true, Authoritative: true, RecursionAvailable: true})
	b.StartQuestions()
	b.Question(question)
	b.StartAnswers()
	rh := dnsmessage.ResourceHeader{Name: question.Name, Type: question.Type, Class: dnsmessage.ClassINET, TTL: 60}
	if question.Type == dnsmessage.TypeAAAA {
		b.AAAAResource(rh, dnsmessage.AAAAResource{AAAA: aaaa(a).As16()})
	} else {
		rh.Type = dnsmessage.TypeA
		b.AResource(rh, dnsmessage.AResource{A: a})
	}
	out, _ := b.Finish()
	return out
}

// aaaa is the IPv6 address the tests' DNS servers give where their IPv4
// one is a: a in the last 32 bits of 2001:db8::/96.
func aaaa(a [4]byte) netip.Addr {
	b := netip.MustParseAddr("2001:db8::").As16()
	copy(b[12:], a[:])
	return netip.AddrFrom16(b)
}
