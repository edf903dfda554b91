package main

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"time"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
)

const echoPort = 7

// serveUDPEcho answers every datagram on UDP port 7 with its own payload, so
// a peer can test the path in its direction whenever it is ready.
func serveUDPEcho() {
	c, err := net.ListenUDP("udp4", &net.UDPAddr{Port: echoPort})
	if err != nil {
		report("fail udp echo server: %v", err)
		return
	}
	buf := make([]byte, 1500)
	for {
		n, from, err := c.ReadFromUDP(buf)
		if err != nil {
			continue
		}
		c.WriteToUDP(buf[:n], from)
	}
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
