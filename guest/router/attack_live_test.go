package router_test

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"net"
	"net/netip"
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

// The attacker's tests (issue 17): a client namespace does what a hostile
// guest does to its provider, and each thing it tries must fail.

// attackSetup is a provider with a LAN and two clients, p1/100.64.0.1 and
// p2/100.64.0.2, its router running with the LAN's first resolver.
func attackSetup(t *testing.T) (prov *nstest.NS, l *lan, pa *agent, c1, c2 *nstest.NS) {
	prov = nstest.New(t)
	l = newLAN(t, prov)
	pa = startAgent(t, prov, "nameserver "+dns1Addr+"\n")
	c1 = client(t, prov, pa, "p1", 1)
	c2 = client(t, prov, pa, "p2", 2)
	return prov, l, pa, c1, c2
}

// TestAttackProviderServices (issue 17 row 1): a service the provider
// binds on :: answers no client, at its own gateway, another link's
// gateway, the uplink address or the provider's IPv6 link-local; each
// try is refused at once (TCP reset, ICMP unreachable), DHCP from a
// client is dropped, and only echo to the client's own gateway and
// replies to the provider's own connections pass.
func TestAttackProviderServices(t *testing.T) {
	prov, l, _, c1, c2 := attackSetup(t)
	var tl net.Listener
	var ul, dhcp *net.UDPConn
	inNS(t, prov, func() {
		var err error
		if tl, err = net.Listen("tcp", "[::]:2222"); err != nil {
			t.Fatal(err)
		}
		if ul, err = net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv6unspecified, Port: 2223}); err != nil {
			t.Fatal(err)
		}
		if dhcp, err = net.ListenUDP("udp4", &net.UDPAddr{Port: 68}); err != nil {
			t.Fatal(err)
		}
	})
	defer tl.Close()
	defer ul.Close()
	defer dhcp.Close()
	var mu sync.Mutex
	var accepted []string
	go func() {
		for {
			c, err := tl.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			accepted = append(accepted, c.RemoteAddr().String())
			mu.Unlock()
			c.Write([]byte("provider's service\n"))
			c.Close()
		}
	}()

	ll := linkLocal(t, prov, "p1")
	linkLocal(t, c1, "eth0") // the client's, to connect from
	for _, addr := range []string{
		"169.254.0.1",         // its own gateway
		"169.254.0.2",         // another link's gateway
		uplinkAddr,            // the provider's uplink
		ll.String() + "%eth0", // the provider's IPv6 link-local on the client's link
	} {
		start := time.Now()
		got, err := dialTCP(t, c1, addr, 2222)
		if !errors.Is(err, syscall.ECONNREFUSED) {
			t.Errorf("TCP to the provider at %s: %q, %v; want connection refused", addr, got, err)
		} else if d := time.Since(start); d > 2*time.Second {
			t.Errorf("TCP to the provider at %s: refused after %v, want at once", addr, d)
		}
		if addr == ll.String()+"%eth0" {
			continue
		}
		if r, err := udpExchange(t, c1, "", 0, addr, 2223, []byte("to the provider")); !errors.Is(err, syscall.ECONNREFUSED) {
			t.Errorf("UDP to the provider at %s: %q, %v; want port unreachable", addr, r, err)
		}
	}
	// Each client at the provider's link-local on its own link, a few
	// times: the refusal goes back through the NIC the try came in on
	// (a TCP reset to a link-local address would be routed by the
	// provider's first fe80::/64 route, often another client's link).
	for i, c := range []*nstest.NS{c1, c2} {
		ll := linkLocal(t, prov, "p"+itoa(i+1)).String() + "%eth0"
		linkLocal(t, c, "eth0")
		for try := range 3 {
			start := time.Now()
			if got, err := dialTCP(t, c, ll, 2222); !errors.Is(err, syscall.ECONNREFUSED) || time.Since(start) > 2*time.Second {
				t.Errorf("client %d, try %d: TCP to the provider at %s: %q, %v after %v; want refused at once", i+1, try+1, ll, got, err, time.Since(start))
			}
		}
	}
	// A DHCP server on the client answering the provider's DHCP client.
	udpExchange(t, c1, "", 67, "169.254.0.1", 68, []byte("DHCPOFFER"))
	ul.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if n, from, err := ul.ReadFromUDP(make([]byte, 100)); err == nil {
		t.Errorf("the provider's UDP service got %d bytes from %v", n, from)
	}
	dhcp.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if n, from, err := dhcp.ReadFromUDP(make([]byte, 100)); err == nil {
		t.Errorf("the provider's DHCP client port got %d bytes from %v", n, from)
	}
	mu.Lock()
	if len(accepted) > 0 {
		t.Errorf("the provider's service accepted clients: %q", accepted)
	}
	mu.Unlock()

	// Echo: the client's own gateway answers, another link's does not.
	if err := ping(t, c1, "169.254.0.1"); err != nil {
		t.Errorf("echo to the client's own gateway: %v", err)
	}
	if err := ping(t, c1, "169.254.0.2"); err == nil {
		t.Error("echo to another link's gateway answered")
	}
	if err := ping(t, c1, uplinkAddr); err == nil {
		t.Error("echo to the provider's uplink address answered")
	}

	// The provider's own connection to its client gets its replies.
	var cl net.Listener
	inNS(t, c1, func() {
		var err error
		if cl, err = net.Listen("tcp", ":9997"); err != nil {
			t.Fatal(err)
		}
	})
	defer cl.Close()
	go func() {
		if c, err := cl.Accept(); err == nil {
			c.Write([]byte("client's service\n"))
			c.Close()
		}
	}()
	if got, err := dialTCP(t, prov, "100.64.0.1", 9997); err != nil || got != "client's service" {
		t.Errorf("the provider's own connection to its client: %q, %v", got, err)
	}
	// The LAN (not a provider link) still reaches the provider's
	// service: the router's input rules are for provider links only.
	if got, err := dialTCP(t, l.ns, uplinkAddr, 2222); err != nil || got != "provider's service" {
		t.Errorf("the LAN to the provider's service: %q, %v", got, err)
	}
}

// TestAttackRouterAdvertisement (issue 17 row 2): a client's Router
// Advertisement (preference high, a prefix with A=1) changes nothing on
// its provider: no default route, no SLAAC address; the provider NIC
// says accept_ra=0, autoconf=0.
func TestAttackRouterAdvertisement(t *testing.T) {
	prov, _, _, c1, _ := attackSetup(t)
	for _, key := range []string{"accept_ra", "autoconf"} {
		if got := prov.Sysctl("net.ipv6.conf.p1." + key); got != "0" {
			t.Errorf("net.ipv6.conf.p1.%s = %s, want 0", key, got)
		}
	}
	c1.IP("addr", "add", "fe80::c1/64", "dev", "eth0", "nodad")
	var mac net.HardwareAddr
	inNS(t, c1, func() {
		ifi, err := net.InterfaceByName("eth0")
		if err != nil {
			t.Fatal(err)
		}
		mac = ifi.HardwareAddr
	})
	check := func(when string) {
		t.Helper()
		prefix := netip.MustParseAddr("fd00:17::")
		for range 3 {
			sendRA(t, c1, "eth0", netip.MustParseAddr("fe80::c1"), mac, prefix)
			time.Sleep(100 * time.Millisecond)
		}
		time.Sleep(500 * time.Millisecond)
		if out := string(prov.IP("-6", "route", "show", "table", "all", "dev", "p1")); strings.Contains(out, "default") || strings.Contains(out, "fd00:17") {
			t.Errorf("%s: the provider took routes from the client's RA:\n%s", when, out)
		}
		if out := string(prov.IP("-6", "addr", "show", "dev", "p1")); strings.Contains(out, "fd00:17") {
			t.Errorf("%s: the provider took an address from the client's RA:\n%s", when, out)
		}
	}
	check("as the router left the NIC")
	// Another program (a network manager) turns them on again: the
	// table still drops the RA.
	sysctl(t, prov, "net.ipv6.conf.p1.accept_ra=1")
	sysctl(t, prov, "net.ipv6.conf.p1.autoconf=1")
	check("with accept_ra and autoconf 1 again")
}

// TestAttackInvalid (issue 17 row 5): an unsolicited echo-reply, a TCP
// SYN+FIN and a bare ACK from a client never leave the uplink, least of
// all with the client's own 100.64 source: the LAN's capture, up to a
// genuine datagram sent after them, sees no source in 100.64.0.0/10.
func TestAttackInvalid(t *testing.T) {
	_, l, _, c1, _ := attackSetup(t)
	capture := captureIPv4(t, l.ns, "lan0")
	src := netip.MustParseAddr("100.64.0.1")
	dst := netip.MustParseAddr(webAddr)
	sendRaw4(t, c1, unix.IPPROTO_ICMP, dst, icmpEcho(0, 0x4242, 1))
	sendRaw4(t, c1, unix.IPPROTO_TCP, dst, tcpSegment(src, dst, 40000, 7, 0x03)) // SYN+FIN
	sendRaw4(t, c1, unix.IPPROTO_TCP, dst, tcpSegment(src, dst, 40001, 7, 0x10)) // ACK
	sendRaw4(t, c1, unix.IPPROTO_TCP, dst, tcpSegment(src, dst, 40002, 7, 0x14)) // RST+ACK
	if r, err := udpExchange(t, c1, "", 0, webAddr, 7, []byte("barrier")); err != nil {
		t.Fatalf("the barrier datagram: %q, %v", r, err)
	}
	seen := capture()
	cgnat := netip.MustParsePrefix("100.64.0.0/10")
	for _, p := range seen {
		if cgnat.Contains(p.src) {
			t.Errorf("the LAN saw %v -> %v, protocol %d", p.src, p.dst, p.proto)
		}
	}
	if len(seen) == 0 {
		t.Error("the capture saw nothing, not even the barrier: the test is broken")
	}
}

// TestAttackLinkLocal (issue 17 row 7): UDP to 169.254.169.254 (a
// cloud's metadata address) is not forwarded, even when the provider has
// a route there.
func TestAttackLinkLocal(t *testing.T) {
	prov, l, _, c1, _ := attackSetup(t)
	const meta = "169.254.169.254"
	l.ns.IP("addr", "add", meta+"/32", "dev", "lan0")
	prov.IP("route", "add", meta+"/32", "via", lanGateway, "dev", "up0")
	var ul *net.UDPConn
	inNS(t, l.ns, func() {
		var err error
		if ul, err = net.ListenUDP("udp", &net.UDPAddr{IP: net.ParseIP(meta), Port: 80}); err != nil {
			t.Fatal(err)
		}
	})
	defer ul.Close()
	// The set-up is right: the provider itself reaches it.
	var pc *net.UDPConn
	inNS(t, prov, func() {
		var err error
		if pc, err = net.DialUDP("udp", nil, &net.UDPAddr{IP: net.ParseIP(meta), Port: 80}); err != nil {
			t.Fatal(err)
		}
	})
	pc.Write([]byte("from the provider"))
	pc.Close()
	ul.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 100)
	if n, _, err := ul.ReadFromUDP(buf); err != nil || string(buf[:n]) != "from the provider" {
		t.Fatalf("the provider's own datagram to %s: %q, %v: the test's set-up is wrong", meta, buf[:n], err)
	}
	udpExchange(t, c1, "", 0, meta, 80, []byte("from a client"))
	ul.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
	if n, from, err := ul.ReadFromUDP(buf); err == nil {
		t.Errorf("%s got %q from %v", meta, buf[:n], from)
	}
}

// linkLocal is the IPv6 link-local address of a NIC in ns, once its
// duplicate address detection is over.
func linkLocal(t *testing.T, ns *nstest.NS, nic string) netip.Addr {
	t.Helper()
	end := deadline(t)
	for {
		var ifs []struct {
			AddrInfo []struct {
				Local     string `json:"local"`
				Scope     string `json:"scope"`
				Tentative bool   `json:"tentative"`
			} `json:"addr_info"`
		}
		if err := json.Unmarshal(ns.IP("-j", "-6", "addr", "show", "dev", nic), &ifs); err != nil {
			t.Fatal(err)
		}
		for _, i := range ifs {
			for _, a := range i.AddrInfo {
				if a.Scope == "link" && !a.Tentative {
					return netip.MustParseAddr(a.Local)
				}
			}
		}
		if time.Now().After(end) {
			t.Fatalf("%s has no IPv6 link-local address: %s", nic, ns.IP("-6", "addr", "show", "dev", nic))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// ping sends one ICMP echo request from ns to addr (ICMPv6 for an IPv6
// address, with %NIC for a link-local one) and waits up to a second for
// its reply.
func ping(t *testing.T, ns *nstest.NS, addr string) error {
	t.Helper()
	dst := netip.MustParseAddr(addr)
	var fd int
	var to unix.Sockaddr
	req, reply := icmpEcho(8, 0x5151, 1), byte(0)
	if dst.Is6() {
		// The kernel sums ICMPv6 on raw sockets, and delivers them
		// without the IPv6 header.
		var zone int
		fd, zone = icmp6Socket(t, ns, dst.Zone())
		to, req, reply = &unix.SockaddrInet6{Addr: dst.As16(), ZoneId: uint32(zone)}, icmpEcho(128, 0x5151, 1), 129
	} else {
		var err error
		inNS(t, ns, func() { fd, err = unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_ICMP) })
		if err != nil {
			t.Fatal(err)
		}
		to = &unix.SockaddrInet4{Addr: dst.As4()}
	}
	defer unix.Close(fd)
	if err := unix.Sendto(fd, req, 0, to); err != nil {
		return err
	}
	unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Usec: 100000})
	end := time.Now().Add(time.Second)
	buf := make([]byte, 1500)
	for time.Now().Before(end) {
		n, from, err := unix.Recvfrom(fd, buf, 0)
		var msg []byte
		switch f := from.(type) {
		case *unix.SockaddrInet4:
			if hl := int(buf[0]&15) * 4; err == nil && f.Addr == dst.As4() && n >= hl {
				msg = buf[hl:n]
			}
		case *unix.SockaddrInet6:
			if err == nil && f.Addr == dst.As16() {
				msg = buf[:n]
			}
		}
		if len(msg) < 8 {
			continue
		}
		if msg[0] == reply && binary.BigEndian.Uint16(msg[4:]) == 0x5151 {
			return nil
		}
		if dst.Is6() && msg[0] < 128 {
			return errors.New("ICMPv6 error type " + itoa(int(msg[0])) + " code " + itoa(int(msg[1])) + " from " + addr)
		}
	}
	return errors.New("no echo reply from " + addr)
}

// icmp6Socket is a raw ICMPv6 socket in ns, and the ifindex of its NIC
// nic ("" for none: 0).
func icmp6Socket(t *testing.T, ns *nstest.NS, nic string) (fd, index int) {
	t.Helper()
	var err error
	inNS(t, ns, func() {
		if nic != "" {
			var ifi *net.Interface
			if ifi, err = net.InterfaceByName(nic); err != nil {
				return
			}
			index = ifi.Index
		}
		fd, err = unix.Socket(unix.AF_INET6, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_ICMPV6)
	})
	if err != nil {
		t.Fatal(err)
	}
	return fd, index
}

// icmpEcho is an ICMP echo message (typ 8 a request, 0 a reply).
func icmpEcho(typ byte, id, seq uint16) []byte {
	b := []byte{typ, 0, 0, 0, byte(id >> 8), byte(id), byte(seq >> 8), byte(seq), 'x', 'y'}
	binary.BigEndian.PutUint16(b[2:], ^checksum(0, b))
	return b
}

// tcpSegment is a bare TCP header from src:sport to dst:dport with flags.
func tcpSegment(src, dst netip.Addr, sport, dport uint16, flags byte) []byte {
	b := make([]byte, 20)
	binary.BigEndian.PutUint16(b[0:], sport)
	binary.BigEndian.PutUint16(b[2:], dport)
	binary.BigEndian.PutUint32(b[4:], 0x1000)
	binary.BigEndian.PutUint32(b[8:], 0x2000)
	b[12] = 5 << 4
	b[13] = flags
	binary.BigEndian.PutUint16(b[14:], 65535)
	s, d := src.As4(), dst.As4()
	pseudo := append(append(append([]byte(nil), s[:]...), d[:]...), 0, unix.IPPROTO_TCP, 0, 20)
	binary.BigEndian.PutUint16(b[16:], ^checksum(uint32(checksum(0, pseudo)), b))
	return b
}

// checksum adds b to the Internet checksum sum (not yet complemented).
func checksum(sum uint32, b []byte) uint16 {
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return uint16(sum)
}

// sendRaw4 sends b from ns to dst over a raw IPv4 socket of protocol
// proto: the kernel adds the IP header, with the route's source.
func sendRaw4(t *testing.T, ns *nstest.NS, proto int, dst netip.Addr, b []byte) {
	t.Helper()
	var fd int
	var err error
	inNS(t, ns, func() { fd, err = unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, proto) })
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if err := unix.Sendto(fd, b, 0, &unix.SockaddrInet4{Addr: dst.As4()}); err != nil {
		t.Fatalf("send protocol %d to %v: %v", proto, dst, err)
	}
}

// sendRA sends a Router Advertisement from ns's nic (source src, its
// link-layer address mac) to all nodes: router preference high, lifetime
// 1800 s, and prefix/64 with the on-link and autonomous flags.
func sendRA(t *testing.T, ns *nstest.NS, nic string, src netip.Addr, mac net.HardwareAddr, prefix netip.Addr) {
	t.Helper()
	fd, index := icmp6Socket(t, ns, nic)
	defer unix.Close(fd)
	if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_MULTICAST_HOPS, 255); err != nil {
		t.Fatal(err)
	}
	if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_MULTICAST_IF, index); err != nil {
		t.Fatal(err)
	}
	if err := unix.Bind(fd, &unix.SockaddrInet6{Addr: src.As16(), ZoneId: uint32(index)}); err != nil {
		t.Fatal(err)
	}
	ra := []byte{
		134, 0, 0, 0, // type, code, checksum (the kernel's)
		64, 0x08, 0x07, 0x08, // hop limit, flags: preference high; router lifetime 1800
		0, 0, 0, 0, 0, 0, 0, 0, // reachable, retrans
		1, 1, mac[0], mac[1], mac[2], mac[3], mac[4], mac[5], // source link-layer address
		3, 4, 64, 0xc0, // prefix information: /64, on-link and autonomous
		0, 1, 0x51, 0x80, 0, 0, 0x38, 0x40, 0, 0, 0, 0, // valid 86400 s, preferred 14400 s
	}
	p := prefix.As16()
	ra = append(ra, p[:]...)
	if err := unix.Sendto(fd, ra, 0, &unix.SockaddrInet6{Addr: netip.MustParseAddr("ff02::1").As16(), ZoneId: uint32(index)}); err != nil {
		t.Fatalf("send the RA: %v", err)
	}
}

// packet4 is what a capture saw of an IPv4 packet.
type packet4 struct {
	src, dst netip.Addr
	proto    byte
}

// captureIPv4 records every IPv4 packet on nic in ns until the function
// it returns is called, which returns them (after 200 ms more, for
// stragglers).
func captureIPv4(t *testing.T, ns *nstest.NS, nic string) func() []packet4 {
	t.Helper()
	var fd, index int
	var err error
	proto := int(htons(unix.ETH_P_IP))
	inNS(t, ns, func() {
		var ifi *net.Interface
		if ifi, err = net.InterfaceByName(nic); err != nil {
			return
		}
		index = ifi.Index
		fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, proto)
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: uint16(proto), Ifindex: index}); err != nil {
		unix.Close(fd)
		t.Fatal(err)
	}
	unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Usec: 50000})
	var mu sync.Mutex
	var seen []packet4
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer unix.Close(fd)
		buf := make([]byte, 65536)
		for {
			select {
			case <-stop:
				return
			default:
			}
			n, _, err := unix.Recvfrom(fd, buf, 0)
			if err != nil || n < 20 || buf[0]>>4 != 4 {
				continue
			}
			mu.Lock()
			seen = append(seen, packet4{netip.AddrFrom4([4]byte(buf[12:16])), netip.AddrFrom4([4]byte(buf[16:20])), buf[9]})
			mu.Unlock()
		}
	}()
	var once sync.Once
	get := func() []packet4 {
		once.Do(func() {
			time.Sleep(200 * time.Millisecond)
			close(stop)
			<-done
		})
		mu.Lock()
		defer mu.Unlock()
		return append([]packet4(nil), seen...)
	}
	t.Cleanup(func() { get() })
	return get
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// TestAttackFlood (issue 17 row 6, and beyond DNS): one client sends a
// datagram from each source port 1024-65535 to the virtual resolver and
// to a LAN server (~129,000 new connections, each taking one of the
// provider's NAT ports towards that destination). Another client then
// gets 20 of 20 DNS queries answered, over UDP and TCP, a datagram to
// the same server answered and a new TCP connection through.
func TestAttackFlood(t *testing.T) {
	_, l, _, c1, c2 := attackSetup(t)
	src := netip.MustParseAddr("100.64.0.1")
	q := dnsQuery(t)
	start := time.Now()
	for _, dst := range []struct {
		addr    string
		port    uint16
		payload []byte
	}{{"100.127.255.53", 53, q}, {webAddr, 7, []byte("flood")}} {
		floodUDP(t, c1, src, netip.MustParseAddr(dst.addr), dst.port, dst.payload)
	}
	t.Logf("client 1 sent 2 x 64,512 datagrams in %v", time.Since(start))
	time.Sleep(time.Second) // the answers come back
	answered := 0
	for i := range 20 {
		tcp := i%4 == 3
		if a, err := query(t, c2, tcp, 0); err != nil || a != netip.MustParseAddr("192.0.2.1") {
			t.Errorf("client 2's query %d (tcp %v) after the flood: %v, %v", i, tcp, a, err)
		} else {
			answered++
		}
	}
	t.Logf("client 2: %d of 20 queries answered", answered)
	if r, err := udpExchange(t, c2, "", 0, webAddr, 7, []byte("client 2")); err != nil || !strings.HasPrefix(string(r), uplinkAddr+":") {
		t.Errorf("client 2's datagram to %s:7 after the flood: %q, %v", webAddr, r, err)
	}
	if got, err := dialTCP(t, c2, webAddr, 7); err != nil || !strings.HasPrefix(got, uplinkAddr+":") {
		t.Errorf("client 2's TCP connection to %s:7 after the flood: %q, %v", webAddr, got, err)
	}
	n := 0
	for _, d := range l.datagrams() {
		if strings.HasPrefix(d, "flood") {
			n++
		}
	}
	t.Logf("the LAN server got %d of client 1's 64,512 datagrams", n)
}

// TestAttackFlood6 (issue 18): TestAttackFlood's flood of the resolver
// over IPv6: one client sends a query from each source port 1024-65535
// to fd9f:2b8:5010::53. Another client then gets 20 of 20 queries
// answered, to either virtual resolver, over UDP and TCP.
func TestAttackFlood6(t *testing.T) {
	_, _, _, c1, c2 := attackSetup(t)
	waitDAD(t, c1)
	waitDAD(t, c2)
	start := time.Now()
	floodUDP(t, c1, mac.LinkID(1).ClientAddr6(), mac.Resolver6, 53, dnsQuery(t))
	t.Logf("client 1 sent 64,512 queries to %s in %v", router.Resolver6, time.Since(start))
	time.Sleep(time.Second) // the answers come back
	answered := 0
	for i := range 20 {
		tcp := i%4 == 3
		res := router.Resolver6
		if i%2 == 1 {
			res = router.Resolver
		}
		if a, err := queryAt(t, c2, res, dnsmessage.TypeA, tcp, 0); err != nil || a != netip.MustParseAddr("192.0.2.1") {
			t.Errorf("client 2's query %d to %s (tcp %v) after the flood: %v, %v", i, res, tcp, a, err)
		} else {
			answered++
		}
	}
	t.Logf("client 2: %d of 20 queries answered", answered)
}

// floodUDP sends payload from ns to dst:dport once from each source port
// 1024-65535, over a raw socket (no socket per port), as fast as it
// goes. src and dst are of one family; an IPv6 src must be ns's own.
func floodUDP(t *testing.T, ns *nstest.NS, src, dst netip.Addr, dport uint16, payload []byte) {
	t.Helper()
	var fd int
	var err error
	var to unix.Sockaddr
	b := make([]byte, 8+len(payload))
	var pseudo []byte
	if dst.Is6() {
		// The kernel fills in the checksum (IPV6_CHECKSUM) and the
		// source the socket is bound to.
		inNS(t, ns, func() {
			if fd, err = unix.Socket(unix.AF_INET6, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_UDP); err != nil {
				return
			}
			if err = unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_CHECKSUM, 6); err == nil {
				err = unix.Bind(fd, &unix.SockaddrInet6{Addr: src.As16()})
			}
		})
		to = &unix.SockaddrInet6{Addr: dst.As16()}
	} else {
		inNS(t, ns, func() { fd, err = unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_UDP) })
		to = &unix.SockaddrInet4{Addr: dst.As4()}
		s, d := src.As4(), dst.As4()
		pseudo = append(append(append([]byte(nil), s[:]...), d[:]...), 0, unix.IPPROTO_UDP, byte(len(b)>>8), byte(len(b)))
	}
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	copy(b[8:], payload)
	binary.BigEndian.PutUint16(b[2:], dport)
	binary.BigEndian.PutUint16(b[4:], uint16(len(b)))
	for port := 1024; port <= 65535; port++ {
		binary.BigEndian.PutUint16(b[0:], uint16(port))
		binary.BigEndian.PutUint16(b[6:], 0)
		if pseudo != nil {
			binary.BigEndian.PutUint16(b[6:], ^checksum(uint32(checksum(0, pseudo)), b))
		}
		for {
			err := unix.Sendto(fd, b, 0, to)
			if err == unix.ENOBUFS || err == unix.EAGAIN {
				time.Sleep(time.Millisecond)
				continue
			}
			if err != nil && err != unix.EPERM {
				t.Fatalf("flood: send from port %d: %v", port, err)
			}
			break
		}
	}
}

// TestAttackForgedReply: a client forges the LAN server's replies to the
// provider's own UDP "connection" (its source, the provider's port), with
// strict rp_filter off on its link so that only the router stands in the
// way: the provider's socket gets none, and the genuine reply still comes.
func TestAttackForgedReply(t *testing.T) {
	prov, _, _, c1, _ := attackSetup(t)
	sysctl(t, prov, "net.ipv4.conf.p1.rp_filter=0")
	sysctl(t, prov, "net.ipv4.conf.all.rp_filter=0")
	var pc *net.UDPConn
	inNS(t, prov, func() {
		var err error
		if pc, err = net.DialUDP("udp", nil, &net.UDPAddr{IP: net.ParseIP(webAddr), Port: 7}); err != nil {
			t.Fatal(err)
		}
	})
	defer pc.Close()
	if _, err := pc.Write([]byte("from the provider")); err != nil {
		t.Fatal(err)
	}
	pc.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 100)
	if n, err := pc.Read(buf); err != nil {
		t.Fatalf("the LAN server's genuine reply: %q, %v: the test's set-up is wrong", buf[:n], err)
	}
	port := uint16(pc.LocalAddr().(*net.UDPAddr).Port)
	// The forged reply: from the LAN server's address and port to the
	// provider's uplink address and its socket's port, sent by client 1
	// through its gateway, the provider.
	c1.IP("addr", "add", webAddr+"/32", "dev", "eth0")
	src, dst := netip.MustParseAddr(webAddr), netip.MustParseAddr(uplinkAddr)
	u := make([]byte, 8, 8+len("forged"))
	u = append(u, "forged"...)
	binary.BigEndian.PutUint16(u[0:], 7)
	binary.BigEndian.PutUint16(u[2:], port)
	binary.BigEndian.PutUint16(u[4:], uint16(len(u)))
	s4, d4 := src.As4(), dst.As4()
	pseudo := append(append(append([]byte(nil), s4[:]...), d4[:]...), 0, unix.IPPROTO_UDP, 0, byte(len(u)))
	binary.BigEndian.PutUint16(u[6:], ^checksum(uint32(checksum(0, pseudo)), u))
	var fd int
	var err error
	inNS(t, c1, func() { fd, err = unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_RAW) })
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	ip := make([]byte, 20, 20+len(u))
	ip[0], ip[8], ip[9] = 0x45, 64, unix.IPPROTO_UDP
	binary.BigEndian.PutUint16(ip[2:], uint16(20+len(u)))
	copy(ip[12:], s4[:])
	copy(ip[16:], d4[:])
	binary.BigEndian.PutUint16(ip[10:], ^checksum(0, ip))
	if err := unix.Sendto(fd, append(ip, u...), 0, &unix.SockaddrInet4{Addr: d4}); err != nil {
		t.Fatalf("send the forged reply: %v", err)
	}
	pc.SetReadDeadline(time.Now().Add(time.Second))
	if n, err := pc.Read(buf); err == nil {
		t.Errorf("the provider's socket got %q from a client forging the LAN server", buf[:n])
	}
}

// TestAttackForgedICMPErrors: a client forges ICMP errors quoting flows
// that are not its own, which conntrack would take as related to them:
// one about another client's flow (port unreachable, and fragmentation
// needed with MTU 68) never leaves the uplink, and one about the
// provider's own flow out of its uplink never reaches its socket.
func TestAttackForgedICMPErrors(t *testing.T) {
	prov, l, _, c1, c2 := attackSetup(t)
	// icmpError is an ICMP destination unreachable of code with mtu,
	// quoting a UDP datagram src:sport -> dst:dport.
	icmpError := func(code byte, mtu uint16, src, dst string, sport, dport uint16) []byte {
		inner := make([]byte, 28)
		inner[0], inner[8], inner[9] = 0x45, 64, unix.IPPROTO_UDP
		binary.BigEndian.PutUint16(inner[2:], 28+4)
		s, d := netip.MustParseAddr(src).As4(), netip.MustParseAddr(dst).As4()
		copy(inner[12:], s[:])
		copy(inner[16:], d[:])
		binary.BigEndian.PutUint16(inner[10:], ^checksum(0, inner[:20]))
		binary.BigEndian.PutUint16(inner[20:], sport)
		binary.BigEndian.PutUint16(inner[22:], dport)
		binary.BigEndian.PutUint16(inner[24:], 12)
		b := append([]byte{3, code, 0, 0, 0, 0, byte(mtu >> 8), byte(mtu)}, inner...)
		binary.BigEndian.PutUint16(b[2:], ^checksum(0, b))
		return b
	}

	// Another client's flow: 100.64.0.2:5000 -> web:7, answered.
	capture := captureIPv4(t, l.ns, "lan0")
	if _, err := udpExchange(t, c2, "", 5000, webAddr, 7, []byte("client 2's flow")); err != nil {
		t.Fatalf("client 2's flow: %v", err)
	}
	web := netip.MustParseAddr(webAddr)
	sendRaw4(t, c1, unix.IPPROTO_ICMP, web, icmpError(3, 0, webAddr, "100.64.0.2", 7, 5000))
	sendRaw4(t, c1, unix.IPPROTO_ICMP, web, icmpError(4, 68, webAddr, "100.64.0.2", 7, 5000))
	if _, err := udpExchange(t, c1, "", 0, webAddr, 7, []byte("barrier")); err != nil {
		t.Fatalf("client 1's barrier: %v", err)
	}
	for _, p := range capture() {
		if p.proto == unix.IPPROTO_ICMP {
			t.Errorf("an ICMP message left the uplink: %v -> %v", p.src, p.dst)
		}
	}

	// The provider's own flow out of its uplink.
	pc := providerFlow(t, prov, "udp", uplinkAddr, webAddr)
	defer pc.Close()
	for _, dst := range []string{"169.254.0.1", uplinkAddr} {
		sendRaw4(t, c1, unix.IPPROTO_ICMP, netip.MustParseAddr(dst), icmpError(3, 0, uplinkAddr, webAddr, 6000, 7))
	}
	flowAlive(t, pc)
}

// flowAlive checks that providerFlow's flow still works after client 1
// forged ICMP errors about it: a socket's pending error would come with its
// next write or read.
func flowAlive(t *testing.T, pc *net.UDPConn) {
	t.Helper()
	time.Sleep(100 * time.Millisecond)
	_, err := pc.Write([]byte("again"))
	if err == nil {
		pc.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, err = pc.Read(make([]byte, 100))
	}
	if err != nil {
		t.Errorf("the provider's flow after client 1's forged port unreachable: %v", err)
	}
}

// providerFlow is the provider's own UDP flow from port 6000 of its uplink
// address src to the echo service (port 7) of dst, over network ("udp" or
// "udp6"), once its first datagram has come back: a connection of the
// provider's that conntrack knows, for the tests that forge ICMP errors
// about it.
func providerFlow(t *testing.T, prov *nstest.NS, network, src, dst string) *net.UDPConn {
	t.Helper()
	var pc *net.UDPConn
	inNS(t, prov, func() {
		var err error
		pc, err = net.DialUDP(network, &net.UDPAddr{IP: net.ParseIP(src), Port: 6000}, &net.UDPAddr{IP: net.ParseIP(dst), Port: 7})
		if err != nil {
			t.Error(err)
		}
	})
	if pc == nil {
		t.FailNow()
	}
	pc.Write([]byte("the provider's flow"))
	pc.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := pc.Read(make([]byte, 100)); err != nil {
		pc.Close()
		t.Fatalf("the provider's flow: %v", err)
	}
	return pc
}
