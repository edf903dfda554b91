package lan

import (
	"bytes"
	"net/netip"
	"testing"
)

// FuzzParseIPv4 feeds the LAN's capture parser what a guest could put on
// the wire: it must never panic, and what it accepts must be IPv4 with the
// addresses of the header.
func FuzzParseIPv4(f *testing.F) {
	udp := []byte{0x45, 0, 0, 36, 0, 0, 0, 0, 64, 17, 0, 0, 100, 64, 1, 2, 203, 0, 113, 1,
		0x9c, 0x47, 0, 7, 0, 16, 0, 0, 's', 'p', 'o', 'o', 'f', '!', '!', '!'}
	f.Add(udp)
	f.Add(udp[:20])
	f.Add([]byte{0x4f})
	f.Fuzz(func(t *testing.T, b []byte) {
		p, ok := parseIPv4(b)
		if !ok {
			return
		}
		if len(b) < 20 || b[0]>>4 != 4 {
			t.Fatalf("accepted a packet that is not IPv4: % x", b)
		}
		if p.Src != netip.AddrFrom4([4]byte(b[12:16])) || p.Dst != netip.AddrFrom4([4]byte(b[16:20])) {
			t.Fatalf("addresses %v > %v from % x", p.Src, p.Dst, b[12:20])
		}
		if len(p.Payload) > 64 {
			t.Fatalf("payload of %d bytes kept", len(p.Payload))
		}
	})
}

// FuzzParseIPv6 is FuzzParseIPv4 for IPv6, whose extension headers the
// parser walks (a chain of them, lengths that overrun, a fragment): it
// must never panic nor read past the packet, and what it accepts must be
// IPv6 with the addresses of the header.
func FuzzParseIPv6(f *testing.F) {
	hdr := func(next byte, payload ...byte) []byte {
		b := []byte{0x60, 0, 0, 0, 0, byte(len(payload)), next, 64,
			0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0x10, 0x01,
			0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1}
		return append(b, payload...)
	}
	udp := []byte{0x9c, 0x47, 0, 7, 0, 16, 0, 0, 's', 'p', 'o', 'o', 'f', '!', '!', '!'}
	f.Add(hdr(17, udp...))
	f.Add(hdr(0, append([]byte{17, 0, 1, 4, 0, 0, 0, 0}, udp...)...))     // hop by hop, then UDP
	f.Add(hdr(44, append([]byte{17, 0, 0, 1, 0, 0, 0, 1}, udp...)...))    // first fragment
	f.Add(hdr(44, append([]byte{17, 0, 0, 0x19, 0, 0, 0, 1}, udp...)...)) // a later one
	f.Add(hdr(60, 60, 200, 1, 2))                                         // a length past the end
	f.Add(hdr(58, 135, 0, 0, 0))                                          // neighbour solicitation
	f.Add([]byte{0x6f})
	f.Fuzz(func(t *testing.T, b []byte) {
		p, ok := parseIPv6(b)
		if q, ok2 := parseIP(b); len(b) > 0 && b[0]>>4 == 6 && (ok2 != ok || !cmpPacket(p, q)) {
			t.Fatalf("parseIP %+v %v, parseIPv6 %+v %v", q, ok2, p, ok)
		}
		if !ok {
			return
		}
		if len(b) < 40 || b[0]>>4 != 6 {
			t.Fatalf("accepted a packet that is not IPv6: % x", b)
		}
		if p.Src != netip.AddrFrom16([16]byte(b[8:24])) || p.Dst != netip.AddrFrom16([16]byte(b[24:40])) {
			t.Fatalf("addresses %v > %v from % x", p.Src, p.Dst, b[8:40])
		}
		if len(p.Payload) > 64 {
			t.Fatalf("payload of %d bytes kept", len(p.Payload))
		}
		if (p.SrcPort != 0 || p.DstPort != 0) && p.Proto != 6 && p.Proto != 17 {
			t.Fatalf("ports for protocol %d", p.Proto)
		}
		if p.ICMPType != 0 && p.Proto != 58 && p.Proto != 1 {
			t.Fatalf("an ICMP type for protocol %d", p.Proto)
		}
	})
}

func cmpPacket(a, b Packet) bool { return a == b }

// TestMSSOption reads the maximum segment size from TCP options as a SYN
// carries them, and nothing from options that are cut or malformed.
func TestMSSOption(t *testing.T) {
	for _, c := range []struct {
		opts []byte
		want uint16
	}{
		{[]byte{2, 4, 0x05, 0xb4}, 1460},
		// Linux's SYN: MSS, SACK permitted, timestamps, NOP, window scale.
		{[]byte{2, 4, 0x04, 0xc4, 4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0, 1, 3, 3, 7}, 1220},
		{[]byte{1, 1, 2, 4, 0x05, 0x64}, 1380},
		{[]byte{4, 2, 2, 4, 0x05, 0x64}, 1380},
		{[]byte{0, 2, 4, 0x05, 0xb4}, 0},
		{[]byte{2, 4, 0x05}, 0},
		{[]byte{8, 0, 2, 4, 0x05, 0xb4}, 0},
		{[]byte{8, 20, 2, 4, 0x05, 0xb4}, 0},
		{[]byte{2, 3, 0x05, 0xb4}, 0},
		{nil, 0},
	} {
		if got := mssOption(c.opts); got != c.want {
			t.Errorf("mssOption(% x) = %d, want %d", c.opts, got, c.want)
		}
	}
}

// TestBigPage: the page at BigPath is BigSize bytes of whole lines.
func TestBigPage(t *testing.T) {
	if len(bigPage) != BigSize || bigPage[len(bigPage)-1] != '\n' || bytes.Count(bigPage, []byte("\n")) != BigSize/64 {
		t.Errorf("the big page: %d bytes, %d lines; want %d bytes of 64-byte lines", len(bigPage), bytes.Count(bigPage, []byte("\n")), BigSize)
	}
}
