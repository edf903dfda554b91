package link

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"

	"github.com/vishvananda/netlink"

	"spectrum-os.org/netcfg/internal/mac"
)

// An uplink is a VM's NIC on a host bridge that spectrumd does not own (the
// user's LAN bridge): a tap of spectrumd's own, named after the NIC's MAC,
// made a port of that bridge. Of the bridge, spectrumd touches nothing but
// its own port, with one exception it logs: a bridge whose MAC would follow
// the new port (see CreateUplink) has its MAC set to the one it has.

// uplinkPrefix starts every uplink tap's name: "spu" and the 12 hex digits
// of the NIC's MAC make 15 bytes, the kernel's limit. Link names all have a
// '-' after their prefix ("spc-", "spp-", "spbr-") and uplink names have
// none, so the two never collide.
const uplinkPrefix = "spu"

// UplinkTapName is the tap of the uplink NIC whose MAC is m:
// "spu02a1b2c3d4e5". MACs of uplinks are unique on the host (the
// configuration refuses a second VM with the same one), and so are the names.
func UplinkTapName(m net.HardwareAddr) string {
	return uplinkPrefix + hex.EncodeToString(m)
}

// ParseUplinkTapName tells whether name is one UplinkTapName produces, and
// for which MAC.
func ParseUplinkTapName(name string) (net.HardwareAddr, bool) {
	rest, ok := strings.CutPrefix(name, uplinkPrefix)
	if !ok || len(rest) != 12 || strings.ToLower(rest) != rest {
		return nil, false
	}
	m, err := hex.DecodeString(rest)
	if err != nil {
		return nil, false
	}
	return net.HardwareAddr(m), true
}

// IsOurs tells whether name is an interface spectrumd makes and deletes on
// its own: a link's bridge or tap, or an uplink's tap. A VM's uplink cannot
// be one of them.
func IsOurs(name string) bool {
	if _, _, ok := ParseName(name); ok {
		return true
	}
	_, ok := ParseUplinkTapName(name)
	return ok
}

// uplinkTapMAC is the host side's own address of the tap of the uplink NIC
// m (not the guest's, which is m): fe and m's last five octets. A bridge
// whose MAC the kernel picks takes the lowest of its ports' addresses, so a
// tap with a random one could change the user's bridge's MAC (and the host's
// address on the LAN with it) when it joins or leaves; fe: is above any
// NIC's but another such tap's (libvirt does the same).
func uplinkTapMAC(m net.HardwareAddr) net.HardwareAddr {
	return net.HardwareAddr{0xfe, m[1], m[2], m[3], m[4], m[5]}
}

// ErrNotBridge is why an uplink cannot join a host interface that exists but
// is not a bridge.
var ErrNotBridge = errors.New("not a bridge")

// CreateUplink makes the tap of the uplink NIC with MAC m exist as a port of
// the host bridge br, in n's namespace: a persistent tap with no address,
// generating none, forwarding nothing (noHostPart), with br's MTU (so
// joining does not lower br's), enslaved to br, locked to m (see lockPort:
// the VM can send on the LAN only with its own MAC, and teaches the bridge
// nothing), up. A bridge that is missing, not a
// bridge, or one of spectrumd's own is an error naming it, and nothing is
// created. Calling it again changes nothing; it repairs what drifted.
func (n *Net) CreateUplink(br string, m net.HardwareAddr) error {
	if err := mac.CheckUplink(m); err != nil {
		return fmt.Errorf("uplink on %s: MAC %w", br, err)
	}
	name := UplinkTapName(m)
	if IsOurs(br) {
		return fmt.Errorf("uplink %s on %s: %s is spectrumd's own interface, not a host bridge", name, br, br)
	}
	bl, err := n.h.LinkByName(br)
	if errors.As(err, new(netlink.LinkNotFoundError)) {
		return fmt.Errorf("uplink %s: host bridge %s: no such interface", name, br)
	}
	if err != nil {
		return fmt.Errorf("uplink %s: look up host bridge %s: %w", name, br, err)
	}
	bridge, ok := bl.(*netlink.Bridge)
	if !ok {
		return fmt.Errorf("uplink %s: host interface %s is a %s: %w (spectrumd adds VM NICs only to bridges)", name, br, bl.Type(), ErrNotBridge)
	}
	if br := bridge; br.VlanFiltering != nil && *br.VlanFiltering {
		// A locked port needs its MAC's static entry in every VLAN it
		// carries. The test machines' kernels are built without VLAN
		// filtering, so that cannot be tested: refuse rather than join
		// with a lock that might drop all the VM's frames.
		return fmt.Errorf("uplink %s: host bridge %s filters VLANs, which spectrumd does not support", name, br.Attrs().Name)
	}
	if addrs, err := hostAddrs(n.h, bl); err != nil {
		n.log.Warn("uplink: cannot list the host bridge's addresses", "bridge", br, "err", err)
	} else if len(addrs) > 0 {
		n.log.Warn("uplink: "+HostAddrWarning(br, addrs), "bridge", br, "addrs", strings.Join(addrs, " "))
	}
	tap, err := n.ensure(name, "tuntap", func(name string) error {
		return n.inNS(func() error {
			return n.h.LinkAdd(&netlink.Tuntap{
				LinkAttrs: netlink.LinkAttrs{Name: name},
				Mode:      netlink.TUNTAP_MODE_TAP,
				Flags:     netlink.TUNTAP_NO_PI | netlink.TUNTAP_VNET_HDR,
			})
		})
	})
	if err != nil {
		return fmt.Errorf("uplink %s on %s: %w", name, br, err)
	}
	if err := n.joinBridge(tap, bridge, m); err != nil {
		return fmt.Errorf("uplink %s on %s: %w", name, br, err)
	}
	return nil
}

// joinBridge does CreateUplink's work on the tap.
func (n *Net) joinBridge(tap netlink.Link, br *netlink.Bridge, m net.HardwareAddr) error {
	name, brName := tap.Attrs().Name, br.Attrs().Name
	own := uplinkTapMAC(m)
	if !bytes.Equal(tap.Attrs().HardwareAddr, own) {
		if err := n.h.LinkSetHardwareAddr(tap, own); err != nil {
			return fmt.Errorf("set %s's address to %s: %w", name, own, err)
		}
		n.log.Info("link: set tap address", "name", name, "addr", own.String())
	}
	if mtu := br.Attrs().MTU; tap.Attrs().MTU != mtu {
		if err := n.h.LinkSetMTU(tap, mtu); err != nil {
			return fmt.Errorf("set %s's MTU to %s's %d: %w", name, brName, mtu, err)
		}
		n.log.Info("link: set tap MTU to the bridge's", "name", name, "bridge", brName, "mtu", mtu)
	}
	if tap.Attrs().MasterIndex != br.Attrs().Index {
		if err := n.pinBridgeMAC(br, tap, own); err != nil {
			return err
		}
		if err := n.h.LinkSetMasterByIndex(tap, br.Attrs().Index); err != nil {
			return fmt.Errorf("enslave %s to %s: %w", name, brName, err)
		}
		n.log.Info("link: enslaved tap to host bridge", "tap", name, "bridge", brName)
	}
	if err := n.lockPort(tap, m); err != nil {
		return err
	}
	return n.setUp(tap)
}

// pinBridgeMAC sets br's MAC to the one it has when the tap about to join
// (own address own) would otherwise become it: the kernel gives a bridge
// whose MAC nobody set the lowest of its ports' addresses, so on a bridge
// with no port below own the tap's address would replace the bridge's (and
// when the last port left, all zeros would). A MAC once set is kept by the
// kernel whatever ports come and go: that is the one change to the user's
// bridge, and it is logged.
func (n *Net) pinBridgeMAC(br *netlink.Bridge, tap netlink.Link, own net.HardwareAddr) error {
	links, err := n.h.LinkList()
	if err != nil {
		return fmt.Errorf("list ports of %s: %w", br.Attrs().Name, err)
	}
	for _, l := range links {
		a := l.Attrs()
		if a.MasterIndex == br.Attrs().Index && a.Index != tap.Attrs().Index && bytes.Compare(a.HardwareAddr, own) < 0 {
			return nil // that port's address stays the lowest
		}
	}
	addr := br.Attrs().HardwareAddr
	if err := n.h.LinkSetHardwareAddr(br, addr); err != nil {
		return fmt.Errorf("keep %s's MAC %s: %w", br.Attrs().Name, addr, err)
	}
	n.log.Info("link: set the host bridge's MAC to its own, so a tap joining cannot change it", "bridge", br.Attrs().Name, "mac", addr.String())
	return nil
}

// OpenUplink attaches to the existing tap of the uplink NIC with MAC m and
// returns its file for QEMU, as OpenTap does for a link's tap.
func (n *Net) OpenUplink(m net.HardwareAddr) (*os.File, error) {
	return n.openTap(UplinkTapName(m))
}

// DeleteUplink removes the tap of the uplink NIC with MAC m, which leaves
// its bridge with it; a missing tap is not an error.
func (n *Net) DeleteUplink(m net.HardwareAddr) error {
	if err := n.del(UplinkTapName(m)); err != nil {
		return fmt.Errorf("delete uplink: %w", err)
	}
	return nil
}
