package main

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net"
	"os"
	"time"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
)

const echoPort = 7

// serveUDPEcho answers every datagram on UDP port 7 with its own payload, so
// a peer can test the path in its direction whenever it is ready. The first
// datagram from each source address is reported ("echo from ADDR") before
// it is answered, so the host can tell which sources got through.
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
	deadline := time.Now().Add(d)
	for seq := 1; time.Now().Before(deadline); seq++ {
		for _, p := range []struct {
			proto string
			try   func(net.IP, int) (time.Duration, error)
		}{{"icmp", icmpEcho}, {"udp", udpEcho}} {
			if _, err := p.try(ip, seq); err == nil {
				report("fail noping %s %s answered", addr, p.proto)
				return
			}
		}
		time.Sleep(500 * time.Millisecond)
	}
	report("noping %s ok", addr)
}

// spoof sends UDP datagrams to dst's echo port with the forged source src
// through a raw socket, then a genuine UDP echo to dst as a barrier: once
// that is answered, a forged datagram that got through has been reported by
// dst's echo server. Reports "spoof SRC>DST sent=N barrier=ok|fail".
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
	payload := []byte("spectrum-spoof")
	udp := make([]byte, 8+len(payload))
	binary.BigEndian.PutUint16(udp[0:], 40007)
	binary.BigEndian.PutUint16(udp[2:], echoPort)
	binary.BigEndian.PutUint16(udp[4:], uint16(len(udp)))
	// Checksum 0: none, which IPv4 allows.
	copy(udp[8:], payload)
	sent := 0
	for i := 0; i < 5; i++ {
		h := &ipv4.Header{Version: 4, Len: ipv4.HeaderLen, TotalLen: ipv4.HeaderLen + len(udp),
			TTL: 64, Protocol: 17, Src: s, Dst: d}
		if err := rc.WriteTo(h, udp, nil); err != nil {
			report("fail spoof %s>%s: %v", src, dst, err)
			return
		}
		sent++
		time.Sleep(100 * time.Millisecond)
	}
	barrier := "fail"
	deadline := time.Now().Add(timeout)
	for seq := 1; time.Now().Before(deadline); seq++ {
		if _, err := udpEcho(d, seq); err == nil {
			barrier = "ok"
			break
		}
	}
	report("spoof %s>%s sent=%d barrier=%s", src, dst, sent, barrier)
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
	c, err := net.DialUDP("udp4", nil, &net.UDPAddr{IP: ip, Port: echoPort})
	if err != nil {
		return 0, err
	}
	defer c.Close()
	want := []byte(fmt.Sprintf("spectrum-echo %d", seq))
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
