package guest

import (
	"encoding"
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"strconv"

	"github.com/jsimonetti/rtnetlink/v2"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// Kernel constants golang.org/x/sys/unix does not name.
const (
	// rtextFilterSkipStats is RTEXT_FILTER_SKIP_STATS (linux/rtnetlink.h):
	// leave the counters out of link dumps, which are most of their size.
	rtextFilterSkipStats = 1 << 3
)

// Link is what the agent needs to know about one network interface.
type Link struct {
	Index uint32
	Name  string
	MAC   net.HardwareAddr // nil for a link without a link-layer address
	Up    bool             // administratively up (IFF_UP)
	// RPFilter is the link's net.ipv4.conf.<name>.rp_filter, read from the
	// link's IFLA_AF_SPEC; -1 when the kernel did not report it (no IPv4 on
	// the link).
	RPFilter int
	// IPv6 is whether the link has IPv6, read from its IFLA_AF_SPEC: the
	// kernel has it (not ipv6.disable=1 or CONFIG_IPV6=n) and the link's
	// disable_ipv6 is 0.
	IPv6 IPv6State
}

// IPv6State is whether a link has IPv6, and if not, why.
type IPv6State uint8

// The IPv6 states of a link.
const (
	NoIPv6Kernel IPv6State = iota // the kernel reports no IPv6 for the link
	IPv6Disabled                  // net.ipv6.conf.<link>.disable_ipv6 is set
	IPv6On
)

// Addr is one IPv4 or IPv6 address on a link.
type Addr struct {
	Index  uint32
	Prefix netip.Prefix // the local address and its prefix length
}

// Route is one IPv4 or IPv6 route, with the fields that identify it to the
// kernel.
type Route struct {
	Table    uint32
	Dst      netip.Prefix
	Gateway  netip.Addr // the zero Addr when the route has no gateway
	OIF      uint32     // output interface; 0 for a multipath route
	Priority uint32     // the metric
	Protocol uint8
	Scope    uint8
	Type     uint8
	Tos      uint8
	Flags    uint32 // RTNH_F_*, e.g. unix.RTNH_F_ONLINK
}

// State is a snapshot of the kernel's links, addresses and main-table
// routes, IPv4 and IPv6.
type State struct {
	Links  []Link
	Addrs  []Addr
	Routes []Route
	// AllRPFilter is net.ipv4.conf.all.rp_filter, which the kernel
	// combines with each link's by taking the larger; -1 when unknown.
	AllRPFilter int
}

// Scan reads every link, address and main-table route, of both families, in
// three dumps, once, so configuring n NICs costs three dumps and not 3n.
func Scan(c *netlink.Conn) (State, error) {
	var s State
	var err error
	if s.Links, err = scanLinks(c); err != nil {
		return s, err
	}
	if s.Addrs, s.Routes, err = scanAddrsRoutes(c); err != nil {
		return s, err
	}
	s.AllRPFilter = scanAllRPFilter(c)
	return s, nil
}

func scanLinks(c *netlink.Conn) ([]Link, error) {
	mask := uint32(rtextFilterSkipStats)
	msgs, err := dump(c, unix.RTM_GETLINK, &rtnetlink.LinkMessage{
		Attributes: &rtnetlink.LinkAttributes{ExtMask: &mask},
	})
	if err != nil {
		return nil, errors.New("list links: " + err.Error())
	}
	links := make([]Link, 0, len(msgs))
	var errs []error
	for _, m := range msgs {
		if m.Header.Type != unix.RTM_NEWLINK {
			continue
		}
		l, err := ParseLink(m.Data)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		links = append(links, l)
	}
	return links, errors.Join(errs...)
}

func scanAddrsRoutes(c *netlink.Conn) ([]Addr, []Route, error) {
	// AF_UNSPEC: both families in one dump each (a kernel without IPv6
	// sends IPv4 alone).
	msgs, err := dump(c, unix.RTM_GETADDR, &rtnetlink.AddressMessage{Family: unix.AF_UNSPEC})
	if err != nil {
		return nil, nil, errors.New("list addresses: " + err.Error())
	}
	addrs := make([]Addr, 0, len(msgs))
	for _, m := range msgs {
		if m.Header.Type != unix.RTM_NEWADDR {
			continue
		}
		a, ok, err := parseAddr(m.Data)
		if err != nil {
			return nil, nil, errors.New("list addresses: " + err.Error())
		}
		if ok {
			addrs = append(addrs, a)
		}
	}
	msgs, err = dump(c, unix.RTM_GETROUTE, &rtnetlink.RouteMessage{Family: unix.AF_UNSPEC})
	if err != nil {
		return nil, nil, errors.New("list routes: " + err.Error())
	}
	routes := make([]Route, 0, len(msgs))
	for _, m := range msgs {
		if m.Header.Type != unix.RTM_NEWROUTE {
			continue
		}
		r, ok, err := parseRoute(m.Data)
		if err != nil {
			return nil, nil, errors.New("list routes: " + err.Error())
		}
		if ok && r.Table == unix.RT_TABLE_MAIN {
			routes = append(routes, r)
		}
	}
	return addrs, routes, nil
}

func dump(c *netlink.Conn, typ netlink.HeaderType, m encoding.BinaryMarshaler) ([]netlink.Message, error) {
	b, err := m.MarshalBinary()
	if err != nil {
		return nil, err
	}
	return c.Execute(netlink.Message{
		Header: netlink.Header{Type: typ, Flags: netlink.Request | netlink.Dump},
		Data:   b,
	})
}

// ParseLink decodes the body of an RTM_NEWLINK message (struct ifinfomsg and
// its attributes). It decodes only the name, the link-layer address and the
// IPv4 rp_filter setting by hand, because rtnetlink.LinkMessage drops
// IFLA_AF_SPEC, where the kernel reports rp_filter.
func ParseLink(b []byte) (Link, error) {
	if len(b) < unix.SizeofIfInfomsg {
		return Link{}, errors.New("link message too short")
	}
	l := Link{
		Index:    binary.NativeEndian.Uint32(b[4:8]),
		Up:       binary.NativeEndian.Uint32(b[8:12])&unix.IFF_UP != 0,
		RPFilter: -1,
	}
	ad, err := netlink.NewAttributeDecoder(b[unix.SizeofIfInfomsg:])
	if err != nil {
		return Link{}, errors.New("link " + strconv.FormatUint(uint64(l.Index), 10) + ": " + err.Error())
	}
	for ad.Next() {
		switch ad.Type() {
		case unix.IFLA_IFNAME:
			l.Name = ad.String()
		case unix.IFLA_ADDRESS:
			l.MAC = net.HardwareAddr(ad.Bytes())
		case unix.IFLA_AF_SPEC:
			ad.Nested(func(ad *netlink.AttributeDecoder) error {
				for ad.Next() {
					switch ad.Type() {
					case unix.AF_INET:
						ad.Nested(func(ad *netlink.AttributeDecoder) error {
							l.RPFilter = inetConfRPFilter(ad)
							return nil
						})
					case unix.AF_INET6:
						ad.Nested(func(ad *netlink.AttributeDecoder) error {
							l.IPv6 = inet6State(ad)
							return nil
						})
					}
				}
				return nil
			})
		}
	}
	if err := ad.Err(); err != nil {
		return Link{}, errors.New("link " + strconv.FormatUint(uint64(l.Index), 10) + ": " + err.Error())
	}
	return l, nil
}

// parseAddr decodes an RTM_NEWADDR body; ok is false for an address of
// another family.
func parseAddr(b []byte) (a Addr, ok bool, err error) {
	var m rtnetlink.AddressMessage
	if err := m.UnmarshalBinary(b); err != nil {
		return Addr{}, false, err
	}
	if m.Attributes == nil {
		return Addr{}, false, nil
	}
	var addr netip.Addr
	switch m.Family {
	case unix.AF_INET:
		ip := m.Attributes.Local
		if ip == nil {
			ip = m.Attributes.Address
		}
		addr, ok = netip.AddrFromSlice(ip.To4())
	case unix.AF_INET6:
		// IPv6 has no peer addresses: IFA_ADDRESS is the address.
		addr, ok = netip.AddrFromSlice(m.Attributes.Address)
		ok = ok && addr.Is6()
	}
	if !ok || int(m.PrefixLength) > addr.BitLen() {
		return Addr{}, false, nil
	}
	return Addr{Index: m.Index, Prefix: netip.PrefixFrom(addr, int(m.PrefixLength))}, true, nil
}

// parseRoute decodes an RTM_NEWROUTE body; ok is false for a route of
// another family.
func parseRoute(b []byte) (r Route, ok bool, err error) {
	var m rtnetlink.RouteMessage
	if err := m.UnmarshalBinary(b); err != nil {
		return Route{}, false, err
	}
	var dst netip.Addr
	var gw []byte
	switch m.Family {
	case unix.AF_INET:
		dst, gw = netip.IPv4Unspecified(), m.Attributes.Gateway.To4()
		if d, ok := netip.AddrFromSlice(m.Attributes.Dst.To4()); ok {
			dst = d
		}
	case unix.AF_INET6:
		dst, gw = netip.IPv6Unspecified(), m.Attributes.Gateway
		if d, ok := netip.AddrFromSlice(m.Attributes.Dst); ok && d.Is6() {
			dst = d
		}
	default:
		return Route{}, false, nil
	}
	if int(m.DstLength) > dst.BitLen() {
		return Route{}, false, nil
	}
	r = Route{
		Table:    uint32(m.Table),
		OIF:      m.Attributes.OutIface,
		Priority: m.Attributes.Priority,
		Protocol: m.Protocol,
		Scope:    m.Scope,
		Type:     m.Type,
		Tos:      m.Tos,
		Flags:    m.Flags,
		Dst:      netip.PrefixFrom(dst, int(m.DstLength)),
	}
	if m.Attributes.Table != 0 {
		r.Table = m.Attributes.Table
	}
	if g, ok := netip.AddrFromSlice(gw); ok && g.BitLen() == dst.BitLen() {
		r.Gateway = g
	}
	return r, true, nil
}
