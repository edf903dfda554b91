package guest

import (
	"encoding/binary"
	"errors"

	"github.com/jsimonetti/rtnetlink/v2"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// Reverse-path filtering is read and set through rtnetlink, not /proc/sys:
// the agent runs where /proc may not be mounted, and one request per NIC is
// cheaper than a file per NIC.

// Kernel constants golang.org/x/sys/unix does not name.
const (
	// ipv4DevconfRPFilter is IPV4_DEVCONF_RP_FILTER (linux/ip.h): the
	// attribute type of rp_filter inside IFLA_INET_CONF.
	ipv4DevconfRPFilter = 8
	// netconfaIfindex and netconfaRPFilter are NETCONFA_IFINDEX and
	// NETCONFA_RP_FILTER (linux/netconf.h); netconfIfindexAll is
	// NETCONFA_IFINDEX_ALL, which names net.ipv4.conf.all.
	netconfaIfindex   = 1
	netconfaRPFilter  = 3
	netconfIfindexAll = -1
)

// rpFilterMessage sets net.ipv4.conf.<link>.rp_filter through rtnetlink
// (RTM_SETLINK with IFLA_AF_SPEC/AF_INET/IFLA_INET_CONF), the same value
// /proc/sys shows. It needs neither /proc mounted nor a file per NIC.
type rpFilterMessage struct {
	index uint32
	value uint32
}

func (m rpFilterMessage) MarshalBinary() ([]byte, error) {
	b, err := (&rtnetlink.LinkMessage{Index: m.index}).MarshalBinary()
	if err != nil {
		return nil, err
	}
	ae := netlink.NewAttributeEncoder()
	ae.Nested(unix.IFLA_AF_SPEC, func(ae *netlink.AttributeEncoder) error {
		ae.Nested(unix.AF_INET, func(ae *netlink.AttributeEncoder) error {
			ae.Nested(unix.IFLA_INET_CONF, func(ae *netlink.AttributeEncoder) error {
				ae.Uint32(ipv4DevconfRPFilter, m.value)
				return nil
			})
			return nil
		})
		return nil
	})
	a, err := ae.Encode()
	if err != nil {
		return nil, err
	}
	return append(b, a...), nil
}

// inetConfRPFilter finds rp_filter in the AF_INET part of IFLA_AF_SPEC: the
// kernel sends IFLA_INET_CONF as an array of u32 indexed by attribute type.
func inetConfRPFilter(ad *netlink.AttributeDecoder) int {
	v := -1
	for ad.Next() {
		if ad.Type() != unix.IFLA_INET_CONF {
			continue
		}
		b := ad.Bytes()
		if o := (ipv4DevconfRPFilter - 1) * 4; len(b) >= o+4 {
			v = int(int32(binary.NativeEndian.Uint32(b[o : o+4])))
		}
	}
	return v
}

// scanAllRPFilter reads net.ipv4.conf.all.rp_filter with RTM_GETNETCONF, or
// -1 when the kernel does not tell: not knowing it only means the agent
// cannot warn that it overrides a NIC's strict setting.
func scanAllRPFilter(c *netlink.Conn) int {
	ae := netlink.NewAttributeEncoder()
	ae.Int32(netconfaIfindex, netconfIfindexAll)
	a, err := ae.Encode()
	if err != nil {
		return -1
	}
	// struct netconfmsg is one byte, the family, padded to 4.
	msgs, err := c.Execute(netlink.Message{
		Header: netlink.Header{Type: unix.RTM_GETNETCONF, Flags: netlink.Request},
		Data:   append([]byte{unix.AF_INET, 0, 0, 0}, a...),
	})
	if err != nil {
		return -1
	}
	for _, m := range msgs {
		if m.Header.Type == unix.RTM_NEWNETCONF {
			if v, err := ParseNetconfRPFilter(m.Data); err == nil {
				return v
			}
		}
	}
	return -1
}

// ParseNetconfRPFilter decodes the body of an RTM_NEWNETCONF message and
// returns its rp_filter value, or -1 when it has none.
func ParseNetconfRPFilter(b []byte) (int, error) {
	if len(b) < 4 {
		return -1, errors.New("netconf message too short")
	}
	ad, err := netlink.NewAttributeDecoder(b[4:])
	if err != nil {
		return -1, err
	}
	v := -1
	for ad.Next() {
		if ad.Type() == netconfaRPFilter {
			v = int(int32(ad.Uint32()))
		}
	}
	if err := ad.Err(); err != nil {
		return -1, err
	}
	return v, nil
}
