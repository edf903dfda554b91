package lan

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/mdlayher/packet"
	"golang.org/x/sys/unix"
)

// Packet is one IPv4 or IPv6 packet that arrived on the LAN's NIC, as a
// capture on it saw it (whatever any server made of it): what reached the
// LAN.
type Packet struct {
	At       time.Time
	Src, Dst netip.Addr
	// Proto is the transport protocol: 6 TCP, 17 UDP, 1 ICMP, 58
	// ICMPv6; for IPv6, the header after any extension headers (hop by
	// hop, routing, fragment, destination options).
	Proto    uint8
	SrcPort  uint16
	DstPort  uint16
	TCPFlags uint8  // TCP only
	Seq      uint32 // TCP only
	MSS      uint16 // TCP only: the maximum segment size option, 0 if none
	Payload  string // UDP only: the first bytes
	ICMPType uint8  // ICMP and ICMPv6 only (135 a neighbour solicitation, 133 a router solicitation)
}

// TCP flags of Packet.TCPFlags.
const (
	TCPSyn = 0x02
	TCPAck = 0x10
)

// capture records every IPv4 and IPv6 packet that arrives on the LAN's
// NIC (not those it sends), in the order the kernel delivered them to one
// socket per family: the order holds within a family, not across them.
func (l *LAN) capture() error {
	var conns []*packet.Conn
	err := Do(l.path, func() error {
		ifi, err := net.InterfaceByName(Iface)
		if err != nil {
			return err
		}
		l.mac = ifi.HardwareAddr
		for _, proto := range []int{unix.ETH_P_IP, unix.ETH_P_IPV6} {
			c, err := packet.Listen(ifi, packet.Datagram, proto, nil)
			if err != nil {
				return err
			}
			conns = append(conns, c)
		}
		return nil
	})
	for _, c := range conns {
		l.servers = append(l.servers, c)
	}
	if err != nil {
		return fmt.Errorf("lan: capture on %s: %w", Iface, err)
	}
	for _, c := range conns {
		go l.read(c)
	}
	return nil
}

func (l *LAN) read(c *packet.Conn) {
	buf := make([]byte, 65536)
	for {
		n, from, err := c.ReadFrom(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		// Packets the LAN sends come back to a packet socket too
		// (PACKET_OUTGOING): keep what arrives. The sender's MAC
		// tells: the LAN's own NIC sends with its own.
		if a, ok := from.(*packet.Addr); ok && l.ownMAC(a.HardwareAddr) {
			continue
		}
		p, ok := parseIP(buf[:n])
		if !ok {
			continue
		}
		p.At = time.Now()
		l.mu.Lock()
		l.pkts = append(l.pkts, p)
		l.notifyLocked()
		l.mu.Unlock()
	}
}

func (l *LAN) ownMAC(hw net.HardwareAddr) bool {
	return l.mac != nil && string(hw) == string(l.mac)
}

// parseIP reads an IPv4 or an IPv6 packet, by its version.
func parseIP(b []byte) (Packet, bool) {
	if len(b) > 0 && b[0]>>4 == 6 {
		return parseIPv6(b)
	}
	return parseIPv4(b)
}

func parseIPv4(b []byte) (Packet, bool) {
	if len(b) < 20 || b[0]>>4 != 4 {
		return Packet{}, false
	}
	ihl := int(b[0]&0x0f) * 4
	if ihl < 20 || len(b) < ihl {
		return Packet{}, false
	}
	if tl := int(binary.BigEndian.Uint16(b[2:])); tl >= ihl && tl < len(b) {
		b = b[:tl] // the frame's padding is not payload
	}
	p := Packet{Proto: b[9]}
	p.Src, _ = netip.AddrFromSlice(b[12:16])
	p.Dst, _ = netip.AddrFromSlice(b[16:20])
	// A later fragment starts with no transport header.
	if binary.BigEndian.Uint16(b[6:])&0x1fff == 0 {
		transport(&p, b[ihl:])
	}
	return p, true
}

// IPv6 extension headers parseIPv6 steps over.
const (
	hopByHop    = 0
	routing     = 43
	fragment    = 44
	destOptions = 60
)

// maxExtensions bounds the extension headers followed: a real packet has
// one or two; a forged chain is not walked for ever.
const maxExtensions = 8

func parseIPv6(b []byte) (Packet, bool) {
	if len(b) < 40 || b[0]>>4 != 6 {
		return Packet{}, false
	}
	p := Packet{Src: netip.AddrFrom16([16]byte(b[8:24])), Dst: netip.AddrFrom16([16]byte(b[24:40]))}
	next, rest := b[6], b[40:]
	if plen := int(binary.BigEndian.Uint16(b[4:])); plen < len(rest) {
		rest = rest[:plen] // the frame's padding is not payload
	}
	for range maxExtensions {
		switch next {
		case hopByHop, routing, destOptions:
			if len(rest) < 8 || len(rest) < (int(rest[1])+1)*8 {
				return Packet{}, false
			}
			next, rest = rest[0], rest[(int(rest[1])+1)*8:]
			continue
		case fragment:
			if len(rest) < 8 {
				return Packet{}, false
			}
			later := binary.BigEndian.Uint16(rest[2:])&0xfff8 != 0
			next, rest = rest[0], rest[8:]
			if later {
				p.Proto = next
				return p, true
			}
			continue
		}
		p.Proto = next
		transport(&p, rest)
		return p, true
	}
	return Packet{}, false
}

// transport reads the transport header of p from l4, as far as it goes.
func transport(p *Packet, l4 []byte) {
	switch {
	case p.Proto == unix.IPPROTO_UDP && len(l4) >= 8:
		p.SrcPort, p.DstPort = binary.BigEndian.Uint16(l4), binary.BigEndian.Uint16(l4[2:])
		p.Payload = string(l4[8:min(len(l4), 8+64)])
	case p.Proto == unix.IPPROTO_TCP && len(l4) >= 20:
		p.SrcPort, p.DstPort = binary.BigEndian.Uint16(l4), binary.BigEndian.Uint16(l4[2:])
		p.Seq = binary.BigEndian.Uint32(l4[4:])
		p.TCPFlags = l4[13]
		if off := int(l4[12]>>4) * 4; off > 20 && off <= len(l4) {
			p.MSS = mssOption(l4[20:off])
		}
	case (p.Proto == unix.IPPROTO_ICMP || p.Proto == unix.IPPROTO_ICMPV6) && len(l4) >= 1:
		p.ICMPType = l4[0]
	}
}

// mssOption is the maximum segment size in TCP options opts (RFC 9293
// 3.2), 0 if there is none or the options are malformed.
func mssOption(opts []byte) uint16 {
	for len(opts) > 0 {
		switch kind := opts[0]; {
		case kind == 0: // end of options
			return 0
		case kind == 1: // no-operation
			opts = opts[1:]
			continue
		case len(opts) < 2 || int(opts[1]) < 2 || int(opts[1]) > len(opts):
			return 0
		case kind == 2 && opts[1] == 4:
			return binary.BigEndian.Uint16(opts[2:])
		}
		opts = opts[opts[1]:]
	}
	return 0
}

// Packets returns every packet captured so far.
func (l *LAN) Packets() []Packet {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]Packet(nil), l.pkts...)
}

// WaitPacket waits for a captured packet (already seen or still to come)
// for which match is true, and returns it with every packet captured
// before it: a barrier sent after other packets on the same path.
func (l *LAN) WaitPacket(ctx context.Context, match func(Packet) bool) (Packet, []Packet, error) {
	return waitFor(ctx, l, func() []Packet { return l.pkts }, match, "a packet")
}
