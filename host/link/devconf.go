package link

import (
	"encoding/binary"
	"fmt"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// The host takes no part in link traffic, and that must hold where
// /proc/sys is read-only (systemd's ProtectKernelTunables=yes): every
// setting here goes through rtnetlink, none through /proc/sys/net.
//
// IPv6: an interface below the IPv6 minimum MTU (1280) gets no IPv6 at all
// from the kernel (no inet6 device: no address, no route, nothing received;
// RFC 8200 needs 1280). A link's bridge is the only interface whose own stack
// sees a guest's frames (a bridge port hands every frame to its bridge), so
// it gets noIPv6MTU: the bridge forwards between its ports whatever their
// MTU allows, checking only the outgoing port's (and large frames from
// virtio-net are segmentation-offloaded, which the check lets pass). A
// tap is a port that needs a guest's MTU, so it keeps IPv6 but generates
// no address (IFLA_INET6_ADDR_GEN_MODE none, set before it is up): no
// link-local address means no DAD, no router solicitation, no MLD report,
// nothing sent; and it receives nothing.
//
// IPv4: a new network namespace takes init_net's IPv4 defaults, so on a
// host that forwards (Docker, libvirt) its interfaces would forward too.
// Each of ours gets forwarding off (IFLA_INET_CONF): with no route in the
// links' namespace nothing could be forwarded anyway; this makes it so even
// if one appeared, and no ICMP error is sent for what is dropped.

// noIPv6MTU is a link bridge's MTU: one below IPv6's minimum.
const noIPv6MTU = 1279

// ipv4DevconfForwarding is IPV4_DEVCONF_FORWARDING (linux/ip.h): the index
// of forwarding in IFLA_INET_CONF.
const ipv4DevconfForwarding = 1

// inet6AddrGenNone is IN6_ADDR_GEN_MODE_NONE (linux/if_link.h).
const inet6AddrGenNone = 1

// devConf is what the kernel says of one interface's IP configuration.
type devConf struct {
	ipv6       bool  // the interface has IPv6 (an inet6 device)
	addrGen    uint8 // its address generation mode, when it has IPv6
	forwarding bool  // IPv4 forwarding
}

// readDevConf reads the IP configuration of interface index through a
// netlink socket of the calling thread's namespace (run it inNS).
func readDevConf(index int) (devConf, error) {
	req := nl.NewNetlinkRequest(unix.RTM_GETLINK, unix.NLM_F_ACK)
	msg := nl.NewIfInfomsg(unix.AF_UNSPEC)
	msg.Index = int32(index)
	req.AddData(msg)
	msgs, err := req.Execute(unix.NETLINK_ROUTE, unix.RTM_NEWLINK)
	if err != nil {
		return devConf{}, err
	}
	if len(msgs) != 1 {
		return devConf{}, fmt.Errorf("%d answers for one interface", len(msgs))
	}
	ifi := nl.DeserializeIfInfomsg(msgs[0])
	attrs, err := nl.ParseRouteAttr(msgs[0][ifi.Len():])
	if err != nil {
		return devConf{}, err
	}
	var c devConf
	for _, a := range attrs {
		if a.Attr.Type&^unix.NLA_F_NESTED != unix.IFLA_AF_SPEC {
			continue
		}
		families, err := nl.ParseRouteAttr(a.Value)
		if err != nil {
			return devConf{}, err
		}
		for _, f := range families {
			inner, err := nl.ParseRouteAttr(f.Value)
			if err != nil {
				return devConf{}, err
			}
			switch f.Attr.Type &^ unix.NLA_F_NESTED {
			case unix.AF_INET:
				for _, i := range inner {
					// An array of u32, entry n-1 for setting n.
					if i.Attr.Type == unix.IFLA_INET_CONF && len(i.Value) >= 4*ipv4DevconfForwarding {
						c.forwarding = binary.NativeEndian.Uint32(i.Value[4*(ipv4DevconfForwarding-1):]) != 0
					}
				}
			case unix.AF_INET6:
				c.ipv6 = true
				for _, i := range inner {
					if i.Attr.Type == unix.IFLA_INET6_ADDR_GEN_MODE && len(i.Value) >= 1 {
						c.addrGen = i.Value[0]
					}
				}
			}
		}
	}
	return c, nil
}

// setForwardingOff turns IPv4 forwarding off on interface index through a
// netlink socket of the calling thread's namespace (run it inNS).
func setForwardingOff(index int) error {
	req := nl.NewNetlinkRequest(unix.RTM_SETLINK, unix.NLM_F_ACK)
	msg := nl.NewIfInfomsg(unix.AF_UNSPEC)
	msg.Index = int32(index)
	req.AddData(msg)
	spec := nl.NewRtAttr(unix.IFLA_AF_SPEC, nil)
	inet := spec.AddRtAttr(unix.AF_INET, nil)
	conf := inet.AddRtAttr(unix.IFLA_INET_CONF, nil)
	conf.AddRtAttr(ipv4DevconfForwarding, binary.NativeEndian.AppendUint32(nil, 0))
	req.AddData(spec)
	_, err := req.Execute(unix.NETLINK_ROUTE, 0)
	return err
}

// noHostPart makes interface l take no part in traffic as a host: IPv4
// forwarding off and, for a tap, no IPv6 address generated (see above). A
// bridge's IPv6 is the caller's (its MTU). Must run before l is first up;
// each change is logged.
func (n *Net) noHostPart(l netlink.Link) error {
	name, index := l.Attrs().Name, l.Attrs().Index
	var c devConf
	if err := n.inNS(func() (err error) { c, err = readDevConf(index); return err }); err != nil {
		return fmt.Errorf("IP configuration of %s: %w", name, err)
	}
	if c.forwarding {
		if err := n.inNS(func() error { return setForwardingOff(index) }); err != nil {
			return fmt.Errorf("turn IPv4 forwarding off on %s: %w", name, err)
		}
		n.log.Info("link: IPv4 forwarding off", "name", name)
	}
	if _, ok := l.(*netlink.Tuntap); ok && c.ipv6 && c.addrGen != inet6AddrGenNone {
		if err := n.h.LinkSetIP6AddrGenMode(l, inet6AddrGenNone); err != nil {
			return fmt.Errorf("turn IPv6 address generation off on %s: %w", name, err)
		}
		n.log.Info("link: no IPv6 address generated", "name", name)
	}
	return nil
}
