package router_test

import (
	"encoding/binary"
	"net"
	"net/netip"
	"os"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"
	"golang.org/x/sys/unix"

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

// linkCapture records every IPv4 packet seen on a NIC (AF_PACKET), in
// either direction, whoever it is for.
type linkCapture struct {
	mu   sync.Mutex
	pkts [][]byte // IPv4 packets, without the Ethernet header
}

func captureLink(t *testing.T, ns *nstest.NS, dev string) *linkCapture {
	t.Helper()
	idx := link(t, ns, dev)
	c := &linkCapture{}
	var fd int
	inNS(t, ns, func() {
		var err error
		if fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_DGRAM, int(hton16(unix.ETH_P_IP))); err != nil {
			t.Fatal(err)
		}
		if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: hton16(unix.ETH_P_IP), Ifindex: idx}); err != nil {
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
			if n >= 20 {
				c.mu.Lock()
				c.pkts = append(c.pkts, append([]byte(nil), buf[:n]...))
				c.mu.Unlock()
			}
		}
	}()
	return c
}

func hton16(v uint16) uint16 { return v<<8 | v>>8 }

// to returns the captured packets whose destination f accepts.
func (c *linkCapture) to(f func(dst netip.Addr) bool) []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for _, p := range c.pkts {
		if dst := netip.AddrFrom4([4]byte(p[16:20])); f(dst) {
			out = append(out, src4(p).String()+" -> "+dst.String()+" proto "+itoa(int(p[9])))
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
