package main

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
	"golang.org/x/sys/unix"
)

const echoPort = 7

// barrierPrefix starts the payload of a barrier datagram: the echo server
// reports each one ("barrier TOKEN from ADDR"), so the host knows that
// every datagram sent before it on the same path has been read (and
// reported) by then.
const barrierPrefix = "spectrum-barrier "

// serveUDPEcho answers every datagram on UDP port 7 with its own payload, so
// a peer can test the path in its direction whenever it is ready, in both
// families (a socket each). The first datagram from each source address is
// reported ("echo from ADDR") before it is answered, so the host can tell
// which sources got through; so is every barrier datagram.
func serveUDPEcho() {
	c, err := net.ListenUDP("udp4", &net.UDPAddr{Port: echoPort})
	if err != nil {
		report("fail udp echo server: %v", err)
		return
	}
	var seen sync.Map
	if c6, err := listenUDP6(echoPort); err != nil {
		// A kernel without IPv6 (ipv6.disable=1) has no such socket.
		report("udp echo server: no IPv6: %v", err)
	} else {
		go echoOn(c6, &seen)
	}
	echoOn(c, &seen)
}

// echoOn serves the echo on c (serveUDPEcho); seen holds the sources
// reported so far.
func echoOn(c *net.UDPConn, seen *sync.Map) {
	buf := make([]byte, 1500)
	for {
		n, from, err := c.ReadFromUDP(buf)
		if err != nil {
			continue
		}
		if _, dup := seen.LoadOrStore(from.IP.String(), true); !dup {
			report("echo from %s", from.IP)
		}
		if tok, ok := bytes.CutPrefix(buf[:n], []byte(barrierPrefix)); ok {
			report("barrier %s from %s", tok, from.IP)
		}
		c.WriteToUDP(buf[:n], from)
	}
}

// listenUDP6 opens a UDP socket on [::]:port for IPv6 alone. By hand, as
// listenDual: Go's own "udp6" listen needs its IPv6 probe, which the test
// init fails while lo is down.
func listenUDP6(port int) (*net.UDPConn, error) {
	fd, err := unix.Socket(unix.AF_INET6, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(fd), "udp6")
	defer f.Close()
	if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, 1); err != nil {
		return nil, err
	}
	if err := unix.Bind(fd, &unix.SockaddrInet6{Port: port}); err != nil {
		return nil, err
	}
	c, err := net.FilePacketConn(f)
	if err != nil {
		return nil, err
	}
	return c.(*net.UDPConn), nil
}

// parseIP is addr as a net.IP of 4 bytes (IPv4) or 16 (IPv6); nil if it
// is neither.
func parseIP(addr string) net.IP {
	ip := net.ParseIP(addr)
	if v4 := ip.To4(); v4 != nil {
		return v4
	}
	return ip
}

// noping expects addr (IPv4 or IPv6) NOT to answer ICMP or UDP echo for
// d, and reports "noping ADDR ok" or "fail noping ADDR PROTO answered".
func noping(addr string, d time.Duration) {
	ip := parseIP(addr)
	if ip == nil {
		report("fail noping %s: not an IP address", addr)
		return
	}
	if proto, answered := answers(ip, d); answered {
		report("fail noping %s %s answered", addr, proto)
		return
	}
	report("noping %s ok", addr)
}

// answers probes ip with ICMP and UDP echo every half second for d and
// returns the first protocol that answered, if any.
func answers(ip net.IP, d time.Duration) (string, bool) {
	deadline := time.Now().Add(d)
	for seq := 1; time.Now().Before(deadline); seq++ {
		for _, p := range []struct {
			proto string
			try   func(net.IP, int) (time.Duration, error)
		}{{"icmp", icmpEcho}, {"udp", udpEcho}} {
			if _, err := p.try(ip, seq); err == nil {
				return p.proto, true
			}
		}
		time.Sleep(500 * time.Millisecond)
	}
	return "", false
}

// noreach expects addr to stay unreachable even through this VM's
// provider: it adds a host route to addr via the gateway of its default
// route (on-link, as the agent's default route), so a packet for addr goes
// to the provider instead of being resolved (and unanswered) on the link,
// and then expects neither ICMP nor UDP echo to answer for d (as noping).
// An IPv6 ADDR gets its route via the IPv6 default route's gateway (the
// link's fe80::1). Reports "noreach ADDR route via GW dev NIC" and then
// "noreach ADDR ok" or "fail noreach ADDR ...".
func noreach(addr string, d time.Duration) {
	ip := parseIP(addr)
	if ip == nil {
		report("fail noreach %s: not an IP address", addr)
		return
	}
	family, bits := netlink.FAMILY_V4, 32
	if ip.To4() == nil {
		family, bits = netlink.FAMILY_V6, 128
	}
	h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		report("fail noreach %s: %v", addr, err)
		return
	}
	defer h.Close()
	routes, err := h.RouteList(nil, family)
	if err != nil {
		report("fail noreach %s: %v", addr, err)
		return
	}
	var def *netlink.Route
	for i, r := range routes {
		if (r.Dst == nil || r.Dst.IP.IsUnspecified()) && r.Gw != nil && (def == nil || r.Priority < def.Priority) {
			def = &routes[i]
		}
	}
	if def == nil {
		report("fail noreach %s: no default route", addr)
		return
	}
	rt := &netlink.Route{LinkIndex: def.LinkIndex, Gw: def.Gw, Dst: &net.IPNet{IP: ip, Mask: net.CIDRMask(bits, bits)}}
	if family == netlink.FAMILY_V4 {
		rt.Flags = int(netlink.FLAG_ONLINK)
	}
	if err := h.RouteReplace(rt); err != nil {
		report("fail noreach %s: add route via %v: %v", addr, def.Gw, err)
		return
	}
	dev := "?"
	if l, err := h.LinkByIndex(def.LinkIndex); err == nil {
		dev = l.Attrs().Name
	}
	report("noreach %s route via %v dev %s", addr, def.Gw, dev)
	if proto, answered := answers(ip, d); answered {
		report("fail noreach %s %s answered", addr, proto)
		return
	}
	report("noreach %s ok", addr)
}

// What forged packets carry, so a receiver can tell them (vm.SpoofPayload
// and vm.SpoofSeq are the same).
const (
	spoofPayload = "spectrum-spoof"
	spoofSeq     = 0x53504f46 // "SPOF": the TCP SYNs' sequence number
	spoofPort    = 40007      // their source port
)

// spoof sends, with the forged source src, UDP datagrams to dst's echo port
// and TCP SYNs to dst's port 80 (a fetch that could never complete, but
// whose SYN must not get through either) through a raw socket, then a
// genuine barrier datagram (payload "spectrum-barrier spoof-SRC") to dst
// on the same path: once dst has seen the barrier, a forged packet that got
// through was seen before it. Both addresses IPv4 or both IPv6. Reports
// "spoof SRC>DST sent=N barrier=ok|fail".
func spoof(src, dst string, timeout time.Duration) {
	s, d := parseIP(src), parseIP(dst)
	if s == nil || d == nil || len(s) != len(d) {
		report("fail spoof %s>%s: not two addresses of one family", src, dst)
		return
	}
	send, closeRaw, err := rawSender(d)
	if err != nil {
		report("fail spoof: %v", err)
		return
	}
	defer closeRaw()
	udp := make([]byte, 8+len(spoofPayload))
	binary.BigEndian.PutUint16(udp[0:], spoofPort)
	binary.BigEndian.PutUint16(udp[2:], echoPort)
	binary.BigEndian.PutUint16(udp[4:], uint16(len(udp)))
	copy(udp[8:], spoofPayload)
	// IPv6 requires the checksum (a zero one is dropped); IPv4 gets one
	// too.
	binary.BigEndian.PutUint16(udp[6:], checksum(pseudoHeader(s, d, unix.IPPROTO_UDP, len(udp)), udp))
	syn := tcpSYN(s, d, spoofPort, 80, spoofSeq)
	sent := 0
	for i := 0; i < 5; i++ {
		for _, pkt := range []struct {
			proto int
			b     []byte
		}{{unix.IPPROTO_UDP, udp}, {unix.IPPROTO_TCP, syn}} {
			if err := send(ipHeader(s, d, pkt.proto, len(pkt.b)), pkt.b); err != nil {
				report("fail spoof %s>%s: %v", src, dst, err)
				return
			}
			sent++
		}
		time.Sleep(100 * time.Millisecond)
	}
	barrier := "fail"
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if _, err := udpEchoPayload(d, []byte(barrierPrefix+"spoof-"+src)); err == nil {
			barrier = "ok"
			break
		}
	}
	report("spoof %s>%s sent=%d barrier=%s", src, dst, sent, barrier)
}

// rawSender opens a raw socket that sends whole IP packets (the header
// given, its source forged) of dst's family towards dst.
func rawSender(dst net.IP) (send func(hdr, payload []byte) error, closeRaw func(), err error) {
	family := unix.AF_INET
	if len(dst) == net.IPv6len {
		// IPPROTO_RAW: the header is the caller's (IPV6_HDRINCL).
		family = unix.AF_INET6
	}
	fd, err := unix.Socket(family, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_RAW)
	if err != nil {
		return nil, nil, err
	}
	var to unix.Sockaddr = &unix.SockaddrInet4{Addr: [4]byte(dst)}
	if family == unix.AF_INET6 {
		to = &unix.SockaddrInet6{Addr: [16]byte(dst)}
	}
	send = func(hdr, payload []byte) error {
		return unix.Sendto(fd, append(append([]byte{}, hdr...), payload...), 0, to)
	}
	return send, func() { unix.Close(fd) }, nil
}

// ipHeader is an IPv4 or IPv6 header (by src's length) from src to dst
// for n bytes of protocol proto; an IPv4 header's checksum the kernel
// fills in.
func ipHeader(src, dst net.IP, proto, n int) []byte {
	if len(src) == net.IPv6len {
		h := make([]byte, 40)
		h[0] = 6 << 4
		binary.BigEndian.PutUint16(h[4:], uint16(n))
		h[6], h[7] = byte(proto), 64
		copy(h[8:], src)
		copy(h[24:], dst)
		return h
	}
	h := make([]byte, 20)
	h[0] = 4<<4 | 5
	binary.BigEndian.PutUint16(h[2:], uint16(20+n))
	h[8], h[9] = 64, byte(proto)
	copy(h[12:], src)
	copy(h[16:], dst)
	return h
}

// pseudoHeader is what a TCP or UDP checksum covers besides the segment:
// the addresses, the protocol and the length (RFC 9293 3.1, RFC 8200 8.1).
func pseudoHeader(src, dst net.IP, proto, n int) []byte {
	b := append(append([]byte{}, src...), dst...)
	if len(src) == net.IPv6len {
		return append(binary.BigEndian.AppendUint32(b, uint32(n)), 0, 0, 0, byte(proto))
	}
	return binary.BigEndian.AppendUint16(append(b, 0, byte(proto)), uint16(n))
}

// checksum is the Internet checksum of parts, each of even length but the
// last.
func checksum(parts ...[]byte) uint16 {
	var sum uint32
	for _, part := range parts {
		for i := 0; i < len(part); i += 2 {
			w := uint32(part[i]) << 8
			if i+1 < len(part) {
				w |= uint32(part[i+1])
			}
			sum += w
		}
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	if c := ^uint16(sum); c != 0 {
		return c
	}
	return 0xffff // UDP's 0 means none
}

// tcpSYN is a TCP SYN segment from src:sport to dst:dport (both IPv4 or
// both IPv6) with sequence number seq and a valid checksum (a router may
// drop a segment with a bad one as invalid, which would hide a missing
// anti-spoofing rule).
func tcpSYN(src, dst net.IP, sport, dport uint16, seq uint32) []byte {
	b := make([]byte, 20)
	binary.BigEndian.PutUint16(b[0:], sport)
	binary.BigEndian.PutUint16(b[2:], dport)
	binary.BigEndian.PutUint32(b[4:], seq)
	b[12] = 5 << 4 // data offset: 5 words
	b[13] = 0x02   // SYN
	binary.BigEndian.PutUint16(b[14:], 65535)
	binary.BigEndian.PutUint16(b[16:], checksum(pseudoHeader(src, dst, unix.IPPROTO_TCP, len(b)), b))
	return b
}

// ping reaches addr with ICMP echo and with UDP echo, retrying each once a
// second until it answers or timeout passes (the peer may still be booting),
// and reports "ping ADDR icmp ok rtt=..." / "ping ADDR udp ok rtt=..." or
// "fail ping ADDR ...".
func ping(addr string, timeout time.Duration) {
	ip := parseIP(addr)
	if ip == nil {
		report("fail ping %s: not an IP address", addr)
		return
	}
	deadline := time.Now().Add(timeout)
	for _, p := range []struct {
		proto string
		try   func(net.IP, int) (time.Duration, error)
	}{{"icmp", icmpEcho}, {"udp", udpEcho}} {
		var err error
		for seq := 1; ; seq++ {
			var rtt time.Duration
			rtt, err = p.try(ip, seq)
			if err == nil {
				report("ping %s %s ok rtt=%.1fms tries=%d", addr, p.proto, float64(rtt.Microseconds())/1000, seq)
				break
			}
			if time.Now().After(deadline) {
				report("fail ping %s %s: %v (tries=%d)", addr, p.proto, err, seq)
				break
			}
			time.Sleep(time.Second)
		}
	}
}

// icmpEcho sends an ICMP echo request (ICMPv6 for an IPv6 ip) and waits a
// second for its reply.
func icmpEcho(ip net.IP, seq int) (time.Duration, error) {
	network, any, proto := "ip4:icmp", "0.0.0.0", 1
	var req, rep icmp.Type = ipv4.ICMPTypeEcho, ipv4.ICMPTypeEchoReply
	if len(ip) == net.IPv6len {
		// The kernel computes an ICMPv6 raw socket's checksums.
		network, any, proto = "ip6:ipv6-icmp", "::", 58
		req, rep = ipv6.ICMPTypeEchoRequest, ipv6.ICMPTypeEchoReply
	}
	c, err := icmp.ListenPacket(network, any)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	id := os.Getpid() & 0xffff
	payload := []byte("spectrum-test")
	msg := icmp.Message{Type: req, Body: &icmp.Echo{ID: id, Seq: seq, Data: payload}}
	b, err := msg.Marshal(nil)
	if err != nil {
		return 0, err
	}
	start := time.Now()
	if _, err := c.WriteTo(b, &net.IPAddr{IP: ip}); err != nil {
		return 0, err
	}
	c.SetReadDeadline(start.Add(time.Second))
	buf := make([]byte, 1500)
	for {
		n, from, err := c.ReadFrom(buf)
		if err != nil {
			return 0, err
		}
		// A raw socket sees every ICMP packet; keep only our reply.
		m, err := icmp.ParseMessage(proto, buf[:n])
		if err != nil || m.Type != rep {
			continue
		}
		e, ok := m.Body.(*icmp.Echo)
		if ok && e.ID == id && e.Seq == seq && from.(*net.IPAddr).IP.Equal(ip) {
			return time.Since(start), nil
		}
	}
}

func udpEcho(ip net.IP, seq int) (time.Duration, error) {
	return udpEchoPayload(ip, []byte(fmt.Sprintf("spectrum-echo %d", seq)))
}

// udpEchoPayload sends want to ip's echo port and waits a second for it
// to come back.
func udpEchoPayload(ip net.IP, want []byte) (time.Duration, error) {
	network := "udp4"
	if len(ip) == net.IPv6len {
		network = "udp6"
	}
	c, err := net.DialUDP(network, nil, &net.UDPAddr{IP: ip, Port: echoPort})
	if err != nil {
		return 0, err
	}
	defer c.Close()
	start := time.Now()
	if _, err := c.Write(want); err != nil {
		return 0, err
	}
	c.SetReadDeadline(start.Add(time.Second))
	buf := make([]byte, 1500)
	n, err := c.Read(buf)
	if err != nil {
		return 0, err
	}
	if !bytes.Equal(buf[:n], want) {
		return 0, fmt.Errorf("echo mismatch: got %q", buf[:n])
	}
	return time.Since(start), nil
}

// pingWatch reaches addr with ICMP echo and UDP echo every second, for as
// long as the VM runs, and reports each change: "reach ADDR up n=N" when both
// answer after not answering (N counts the ups), "reach ADDR down n=N" after
// three rounds in a row without both answering. It shows a path coming back
// after its peer restarted, without restarting this VM.
func pingWatch(addr string) {
	ip := parseIP(addr)
	if ip == nil {
		report("fail pingwatch %s: not an IP address", addr)
		return
	}
	up, misses, ups := false, 0, 0
	for seq := 1; ; seq++ {
		start := time.Now()
		_, ierr := icmpEcho(ip, seq)
		_, uerr := udpEcho(ip, seq)
		switch ok := ierr == nil && uerr == nil; {
		case ok && !up:
			up, misses = true, 0
			ups++
			report("reach %s up n=%d", addr, ups)
		case ok:
			misses = 0
		case up:
			if misses++; misses >= 3 {
				up = false
				report("reach %s down n=%d", addr, ups)
			}
		}
		time.Sleep(time.Second - time.Since(start))
	}
}

// pathMTU sends UDP datagrams of size bytes (the whole IP packet) to the
// echo port of addr with fragmentation forbidden (IPv4's DF; IPv6 routers
// never fragment), until the kernel's path MTU to addr falls below size:
// an ICMP "fragmentation needed" or ICMPv6 "packet too big" from a router
// on the way reached this VM. Reports "pmtu ADDR/SIZE ok mtu=N" or "fail
// pmtu ADDR/SIZE: ..." after timeout.
func pathMTU(arg string, timeout time.Duration) {
	addr, sz, _ := strings.Cut(arg, "/")
	ip := parseIP(addr)
	size, err := strconv.Atoi(sz)
	if ip == nil || err != nil {
		report("fail pmtu %s: want ADDR/SIZE", arg)
		return
	}
	family, level, discover, do, mtuOpt, hdrs := unix.AF_INET, unix.IPPROTO_IP, unix.IP_MTU_DISCOVER, unix.IP_PMTUDISC_DO, unix.IP_MTU, 28
	var to unix.Sockaddr = &unix.SockaddrInet4{Port: echoPort, Addr: [4]byte(ip)}
	if len(ip) == net.IPv6len {
		family, level, discover, do, mtuOpt, hdrs = unix.AF_INET6, unix.IPPROTO_IPV6, unix.IPV6_MTU_DISCOVER, unix.IPV6_PMTUDISC_DO, unix.IPV6_MTU, 48
		to = &unix.SockaddrInet6{Port: echoPort, Addr: [16]byte(ip)}
	}
	fd, err := unix.Socket(family, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		report("fail pmtu %s: %v", arg, err)
		return
	}
	defer unix.Close(fd)
	if err := unix.SetsockoptInt(fd, level, discover, do); err != nil {
		report("fail pmtu %s: %v", arg, err)
		return
	}
	if err := unix.Connect(fd, to); err != nil {
		report("fail pmtu %s: %v", arg, err)
		return
	}
	payload := make([]byte, max(size-hdrs, 0))
	deadline := time.Now().Add(timeout)
	for {
		// EMSGSIZE once the kernel knows the path takes less.
		_, err := unix.Write(fd, payload)
		time.Sleep(200 * time.Millisecond)
		mtu, gerr := unix.GetsockoptInt(fd, level, mtuOpt)
		if gerr == nil && mtu < size {
			report("pmtu %s ok mtu=%d", arg, mtu)
			return
		}
		if time.Now().After(deadline) {
			report("fail pmtu %s: path MTU %d (%v), send: %v", arg, mtu, gerr, err)
			return
		}
	}
}
