package lan

import (
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
