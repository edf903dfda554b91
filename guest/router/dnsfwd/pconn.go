package dnsfwd

import (
	"net"
	"net/netip"

	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
)

// pconn is a UDP socket that tells, for each datagram, the address it was
// sent to and the NIC it came in on, and sends an answer from that
// address: a redirected query arrives at the provider's address on the
// client's link, and its answer must leave from there for conntrack to
// turn it back into one from the virtual resolver.
type pconn interface {
	read(b []byte) (n int, src netip.AddrPort, dst netip.Addr, ifindex int, err error)
	write(b []byte, to netip.AddrPort, from netip.Addr, ifindex int) error
	port() uint16
	Close() error
}

// listenPacket opens the UDP socket of a's family.
func listenPacket(a netip.AddrPort) (pconn, error) {
	c, err := net.ListenUDP(network("udp", a.Addr()), net.UDPAddrFromAddrPort(a))
	if err != nil {
		return nil, err
	}
	if a.Addr().Is4() {
		p := ipv4.NewPacketConn(c)
		if err := p.SetControlMessage(ipv4.FlagDst|ipv4.FlagInterface, true); err != nil {
			c.Close()
			return nil, err
		}
		return &pconn4{c, p}, nil
	}
	p := ipv6.NewPacketConn(c)
	if err := p.SetControlMessage(ipv6.FlagDst|ipv6.FlagInterface, true); err != nil {
		c.Close()
		return nil, err
	}
	return &pconn6{c, p}, nil
}

type pconn4 struct {
	c *net.UDPConn
	p *ipv4.PacketConn
}

func (c *pconn4) read(b []byte) (int, netip.AddrPort, netip.Addr, int, error) {
	n, cm, from, err := c.p.ReadFrom(b)
	if err != nil || cm == nil {
		return 0, netip.AddrPort{}, netip.Addr{}, 0, err
	}
	dst, _ := netip.AddrFromSlice(cm.Dst.To4())
	return n, from.(*net.UDPAddr).AddrPort(), dst, cm.IfIndex, nil
}

func (c *pconn4) write(b []byte, to netip.AddrPort, from netip.Addr, ifindex int) error {
	_, err := c.p.WriteTo(b, &ipv4.ControlMessage{Src: from.AsSlice(), IfIndex: ifindex}, net.UDPAddrFromAddrPort(to))
	return err
}

func (c *pconn4) port() uint16 { return c.c.LocalAddr().(*net.UDPAddr).AddrPort().Port() }
func (c *pconn4) Close() error { return c.c.Close() }

type pconn6 struct {
	c *net.UDPConn
	p *ipv6.PacketConn
}

func (c *pconn6) read(b []byte) (int, netip.AddrPort, netip.Addr, int, error) {
	n, cm, from, err := c.p.ReadFrom(b)
	if err != nil || cm == nil {
		return 0, netip.AddrPort{}, netip.Addr{}, 0, err
	}
	dst, _ := netip.AddrFromSlice(cm.Dst)
	return n, from.(*net.UDPAddr).AddrPort(), dst, cm.IfIndex, nil
}

func (c *pconn6) write(b []byte, to netip.AddrPort, from netip.Addr, ifindex int) error {
	_, err := c.p.WriteTo(b, &ipv6.ControlMessage{Src: from.AsSlice(), IfIndex: ifindex}, net.UDPAddrFromAddrPort(to))
	return err
}

func (c *pconn6) port() uint16 { return c.c.LocalAddr().(*net.UDPAddr).AddrPort().Port() }
func (c *pconn6) Close() error { return c.c.Close() }
