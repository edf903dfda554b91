package main

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net"
	"os"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"
)

const echoPort = 7

// barrierPrefix starts the payload of a barrier datagram: the echo server
// reports each one ("barrier TOKEN from ADDR"), so the host knows that
// every datagram sent before it on the same path has been read (and
// reported) by then.
const barrierPrefix = "spectrum-barrier "

// serveUDPEcho answers every datagram on UDP port 7 with its own payload, so
// a peer can test the path in its direction whenever it is ready. The first
// datagram from each source address is reported ("echo from ADDR") before
// it is answered, so the host can tell which sources got through; so is
// every barrier datagram.
func serveUDPEcho() {
	c, err := net.ListenUDP("udp4", &net.UDPAddr{Port: echoPort})
	if err != nil {
		report("fail udp echo server: %v", err)
		return
	}
	seen := map[string]bool{}
	buf := make([]byte, 1500)
	for {
		n, from, err := c.ReadFromUDP(buf)
		if err != nil {
			continue
		}
		if src := from.IP.String(); !seen[src] {
			seen[src] = true
			report("echo from %s", src)
		}
		if tok, ok := bytes.CutPrefix(buf[:n], []byte(barrierPrefix)); ok {
			report("barrier %s from %s", tok, from.IP)
		}
		c.WriteToUDP(buf[:n], from)
	}
}

// noping expects addr NOT to answer ICMP or UDP echo for d, and reports
// "noping ADDR ok" or "fail noping ADDR PROTO answered".
func noping(addr string, d time.Duration) {
	ip := net.ParseIP(addr).To4()
	if ip == nil {
		report("fail noping %s: not an IPv4 address", addr)
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
// Reports "noreach ADDR route via GW dev NIC" and then "noreach ADDR ok" or
// "fail noreach ADDR ...".
func noreach(addr string, d time.Duration) {
	ip := net.ParseIP(addr).To4()
	if ip == nil {
		report("fail noreach %s: not an IPv4 address", addr)
		return
	}
	h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		report("fail noreach %s: %v", addr, err)
		return
	}
	defer h.Close()
	routes, err := h.RouteList(nil, netlink.FAMILY_V4)
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
	rt := &netlink.Route{LinkIndex: def.LinkIndex, Gw: def.Gw, Flags: int(netlink.FLAG_ONLINK),
		Dst: &net.IPNet{IP: ip, Mask: net.CIDRMask(32, 32)}}
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
// through was seen before it. Reports "spoof SRC>DST sent=N barrier=ok|fail".
func spoof(src, dst string, timeout time.Duration) {
	s, d := net.ParseIP(src).To4(), net.ParseIP(dst).To4()
	if s == nil || d == nil {
		report("fail spoof %s>%s: not IPv4 addresses", src, dst)
		return
	}
	pc, err := net.ListenPacket("ip4:udp", "0.0.0.0")
	if err != nil {
		report("fail spoof: %v", err)
		return
	}
	defer pc.Close()
	rc, err := ipv4.NewRawConn(pc)
	if err != nil {
		report("fail spoof: %v", err)
		return
	}
	udp := make([]byte, 8+len(spoofPayload))
	binary.BigEndian.PutUint16(udp[0:], spoofPort)
	binary.BigEndian.PutUint16(udp[2:], echoPort)
	binary.BigEndian.PutUint16(udp[4:], uint16(len(udp)))
	// Checksum 0: none, which IPv4 allows.
	copy(udp[8:], spoofPayload)
	syn := tcpSYN(s, d, spoofPort, 80, spoofSeq)
	sent := 0
	for i := 0; i < 5; i++ {
		for _, pkt := range []struct {
			proto int
			b     []byte
		}{{17, udp}, {6, syn}} {
			h := &ipv4.Header{Version: 4, Len: ipv4.HeaderLen, TotalLen: ipv4.HeaderLen + len(pkt.b),
				TTL: 64, Protocol: pkt.proto, Src: s, Dst: d}
			if err := rc.WriteTo(h, pkt.b, nil); err != nil {
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

// tcpSYN is a TCP SYN segment from src:sport to dst:dport with sequence
// number seq and a valid checksum (a router may drop a segment with a bad
// one as invalid, which would hide a missing anti-spoofing rule).
func tcpSYN(src, dst net.IP, sport, dport uint16, seq uint32) []byte {
	b := make([]byte, 20)
	binary.BigEndian.PutUint16(b[0:], sport)
	binary.BigEndian.PutUint16(b[2:], dport)
	binary.BigEndian.PutUint32(b[4:], seq)
	b[12] = 5 << 4 // data offset: 5 words
	b[13] = 0x02   // SYN
	binary.BigEndian.PutUint16(b[14:], 65535)
	// The checksum covers a pseudo-header of the addresses, the
	// protocol and the length.
	pseudo := append(append(append([]byte{}, src.To4()...), dst.To4()...), 0, 6, 0, byte(len(b)))
	var sum uint32
	for _, part := range [][]byte{pseudo, b} {
		for i := 0; i+1 < len(part); i += 2 {
			sum += uint32(binary.BigEndian.Uint16(part[i:]))
		}
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	binary.BigEndian.PutUint16(b[16:], ^uint16(sum))
	return b
}

// ping reaches addr with ICMP echo and with UDP echo, retrying each once a
// second until it answers or timeout passes (the peer may still be booting),
// and reports "ping ADDR icmp ok rtt=..." / "ping ADDR udp ok rtt=..." or
// "fail ping ADDR ...".
func ping(addr string, timeout time.Duration) {
	ip := net.ParseIP(addr).To4()
	if ip == nil {
		report("fail ping %s: not an IPv4 address", addr)
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

func icmpEcho(ip net.IP, seq int) (time.Duration, error) {
	c, err := icmp.ListenPacket("ip4:icmp", "0.0.0.0")
	if err != nil {
		return 0, err
	}
	defer c.Close()
	id := os.Getpid() & 0xffff
	payload := []byte("spectrum-test")
	msg := icmp.Message{Type: ipv4.ICMPTypeEcho, Body: &icmp.Echo{ID: id, Seq: seq, Data: payload}}
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
		m, err := icmp.ParseMessage(1, buf[:n])
		if err != nil || m.Type != ipv4.ICMPTypeEchoReply {
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
	c, err := net.DialUDP("udp4", nil, &net.UDPAddr{IP: ip, Port: echoPort})
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
	ip := net.ParseIP(addr).To4()
	if ip == nil {
		report("fail pingwatch %s: not an IPv4 address", addr)
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
