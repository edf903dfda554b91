package main

import (
	"encoding/binary"
	"net"
	"testing"
)

// TestTCPSYNChecksum checks the forged SYN's checksum the way a receiver
// does, in both families: summed over the pseudo-header and the segment,
// checksum included, it must come to 0xffff.
func TestTCPSYNChecksum(t *testing.T) {
	for _, c := range []struct {
		src, dst net.IP
		pseudo   []byte // after the addresses
	}{
		{net.IPv4(100, 64, 1, 2).To4(), net.IPv4(203, 0, 113, 80).To4(), []byte{0, 6, 0, 20}},
		{net.ParseIP("fd9f:2b8:5010:102::2"), net.ParseIP("2001:db8:1::80"), []byte{0, 0, 0, 20, 0, 0, 0, 6}},
	} {
		b := tcpSYN(c.src, c.dst, spoofPort, 80, spoofSeq)
		if len(b) != 20 || b[13] != 0x02 || binary.BigEndian.Uint32(b[4:]) != spoofSeq {
			t.Fatalf("segment % x", b)
		}
		pseudo := append(append(append([]byte{}, c.src...), c.dst...), c.pseudo...)
		var sum uint32
		for _, part := range [][]byte{pseudo, b} {
			for i := 0; i+1 < len(part); i += 2 {
				sum += uint32(binary.BigEndian.Uint16(part[i:]))
			}
		}
		for sum > 0xffff {
			sum = sum&0xffff + sum>>16
		}
		if sum != 0xffff {
			t.Errorf("%v > %v: checksum does not verify: sum %#x", c.src, c.dst, sum)
		}
	}
}
