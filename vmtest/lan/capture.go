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

// Packet is one IPv4 packet that arrived on the LAN's NIC, as a capture
// on it saw it (whatever any server made of it): what reached the LAN.
type Packet struct {
	At       time.Time
	Src, Dst netip.Addr
	Proto    uint8 // 6 TCP, 17 UDP, 1 ICMP
	SrcPort  uint16
	DstPort  uint16
	TCPFlags uint8  // TCP only
	Seq      uint32 // TCP only
	Payload  string // UDP only: the first bytes
}

// TCP flags of Packet.TCPFlags.
const (
	TCPSyn = 0x02
	TCPAck = 0x10
)

// capture records every IPv4 packet that arrives on the LAN's NIC (not
// those it sends), in the order the kernel delivered them.
func (l *LAN) capture() error {
	var c *packet.Conn
	err := Do(l.path, func() error {
		ifi, err := net.InterfaceByName(Iface)
		if err != nil {
			return err
		}
		l.mac = ifi.HardwareAddr
		c, err = packet.Listen(ifi, packet.Datagram, unix.ETH_P_IP, nil)
		return err
	})
	if err != nil {
		return fmt.Errorf("lan: capture on %s: %w", Iface, err)
	}
	l.servers = append(l.servers, c)
	go func() {
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
			p, ok := parseIPv4(buf[:n])
			if !ok {
				continue
			}
			p.At = time.Now()
			l.mu.Lock()
			l.pkts = append(l.pkts, p)
			l.notifyLocked()
			l.mu.Unlock()
		}
	}()
	return nil
}

func (l *LAN) ownMAC(hw net.HardwareAddr) bool {
	return l.mac != nil && string(hw) == string(l.mac)
}

func parseIPv4(b []byte) (Packet, bool) {
	if len(b) < 20 || b[0]>>4 != 4 {
		return Packet{}, false
	}
	ihl := int(b[0]&0x0f) * 4
	if ihl < 20 || len(b) < ihl {
		return Packet{}, false
	}
	p := Packet{Proto: b[9]}
	p.Src, _ = netip.AddrFromSlice(b[12:16])
	p.Dst, _ = netip.AddrFromSlice(b[16:20])
	l4 := b[ihl:]
	switch {
	case p.Proto == unix.IPPROTO_UDP && len(l4) >= 8:
		p.SrcPort, p.DstPort = binary.BigEndian.Uint16(l4), binary.BigEndian.Uint16(l4[2:])
		p.Payload = string(l4[8:min(len(l4), 8+64)])
	case p.Proto == unix.IPPROTO_TCP && len(l4) >= 20:
		p.SrcPort, p.DstPort = binary.BigEndian.Uint16(l4), binary.BigEndian.Uint16(l4[2:])
		p.Seq = binary.BigEndian.Uint32(l4[4:])
		p.TCPFlags = l4[13]
	}
	return p, true
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
