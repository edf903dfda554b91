package link

import (
	"errors"
	"fmt"
	"net"
	"os"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"spectrum-os.org/netcfg/internal/mac"
)

// tapFlags are the tun flags QEMU's virtio-net backend wants: a tap
// (Ethernet frames), no packet-information header, and the virtio-net
// header so offloads work.
const tapFlags = unix.IFF_TAP | unix.IFF_NO_PI | unix.IFF_VNET_HDR

// Create makes link id's bridge and taps exist as they should: the bridge
// and both taps present, the taps enslaved to the bridge, no addresses, no
// IPv6 address generated and the bridge below IPv6's MTU, IPv4 forwarding
// off (devconf.go), both ports locked to their VM's MAC, all up. It reads the current state first and changes only
// what differs, logging each change, so calling it again changes nothing.
// An interface with one of our names that is of the wrong type is an error,
// not replaced.
func (n *Net) Create(id mac.LinkID) error {
	if err := id.Valid(); err != nil {
		return fmt.Errorf("create link %v: %w", id, err)
	}
	br, err := n.ensure(Name(id, Bridge), "bridge", func(name string) error {
		return n.h.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: name}})
	})
	if err != nil {
		return err
	}
	if br.Attrs().MTU != noIPv6MTU {
		if err := n.h.LinkSetMTU(br, noIPv6MTU); err != nil {
			return fmt.Errorf("set %s's MTU to %d (no IPv6): %w", br.Attrs().Name, noIPv6MTU, err)
		}
		n.log.Info("link: bridge MTU below IPv6's minimum, so it has no IPv6", "name", br.Attrs().Name, "mtu", noIPv6MTU)
	}
	var errs []error
	for _, k := range []Kind{ClientTap, ProviderTap} {
		tap, err := n.ensure(Name(id, k), "tuntap", func(name string) error {
			// The tun driver creates taps in the calling thread's
			// namespace, whatever the netlink socket's.
			return n.inNS(func() error {
				return n.h.LinkAdd(&netlink.Tuntap{
					LinkAttrs: netlink.LinkAttrs{Name: name},
					Mode:      netlink.TUNTAP_MODE_TAP,
					Flags:     netlink.TUNTAP_NO_PI | netlink.TUNTAP_VNET_HDR,
				})
			})
		})
		if err != nil {
			errs = append(errs, err)
			continue
		}
		name := tap.Attrs().Name
		if tap.Attrs().MasterIndex != br.Attrs().Index {
			if err := n.h.LinkSetMasterByIndex(tap, br.Attrs().Index); err != nil {
				errs = append(errs, fmt.Errorf("enslave %s to %s: %w", name, br.Attrs().Name, err))
				continue
			}
			n.log.Info("link: enslaved tap to bridge", "tap", name, "bridge", br.Attrs().Name)
		}
		// Both ports: a client could pose as another VM, and a provider
		// (or a guest that broke into its QEMU) could move the client's
		// entry onto its own port with one forged frame, or fill the
		// table with random MACs.
		side := mac.Client
		if k == ProviderTap {
			side = mac.Provider
		}
		if err := n.lockPort(tap, id.MAC(side)); err != nil {
			errs = append(errs, err)
			continue
		}
		if err := n.setUp(tap); err != nil {
			errs = append(errs, err)
		}
	}
	if err := n.setUp(br); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("create link %v: %w", id, err)
	}
	return nil
}

// ensure returns the interface called name, creating it with add when
// missing, and brings it to the state where the host takes no part in its
// traffic (noHostPart) and it has no address. It must be of
// type typ (netlink's Link.Type()).
func (n *Net) ensure(name, typ string, add func(string) error) (netlink.Link, error) {
	l, err := n.h.LinkByName(name)
	if errors.As(err, new(netlink.LinkNotFoundError)) {
		if err := add(name); err != nil {
			return nil, fmt.Errorf("add %s %s: %w", typ, name, err)
		}
		n.log.Info("link: created", "name", name, "type", typ)
		l, err = n.h.LinkByName(name)
	}
	if err != nil {
		return nil, fmt.Errorf("look up %s: %w", name, err)
	}
	if l.Type() != typ {
		return nil, fmt.Errorf("%s exists as a %s, want a %s: not touching it", name, l.Type(), typ)
	}
	if t, ok := l.(*netlink.Tuntap); ok && t.Mode != netlink.TUNTAP_MODE_TAP {
		return nil, fmt.Errorf("%s is a tun, want a tap: not touching it", name)
	}
	// Before the interface is ever up: no address is generated, so the
	// host never answers on the link.
	if err := n.noHostPart(l); err != nil {
		return nil, err
	}
	addrs, err := n.h.AddrList(l, netlink.FAMILY_ALL)
	if err != nil {
		return nil, fmt.Errorf("list addresses of %s: %w", name, err)
	}
	for _, a := range addrs {
		if err := n.h.AddrDel(l, &a); err != nil {
			return nil, fmt.Errorf("remove address %v from %s: %w", a.IPNet, name, err)
		}
		n.log.Info("link: removed host address", "name", name, "addr", a.IPNet.String())
	}
	return l, nil
}

func (n *Net) setUp(l netlink.Link) error {
	if l.Attrs().Flags&net.FlagUp != 0 {
		return nil
	}
	if err := n.h.LinkSetUp(l); err != nil {
		return fmt.Errorf("set %s up: %w", l.Attrs().Name, err)
	}
	n.log.Info("link: set up", "name", l.Attrs().Name)
	return nil
}

// Delete removes link id's taps and bridge. Missing ones are not an error,
// so Delete is idempotent. A tap QEMU still holds open is removed all the
// same; QEMU's NIC then has no backend.
func (n *Net) Delete(id mac.LinkID) error {
	var errs []error
	for _, k := range []Kind{ClientTap, ProviderTap, Bridge} {
		if err := n.del(Name(id, k)); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("delete link %v: %w", id, err)
	}
	return nil
}

func (n *Net) del(name string) error {
	l, err := n.h.LinkByName(name)
	if errors.As(err, new(netlink.LinkNotFoundError)) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("look up %s: %w", name, err)
	}
	if err := n.h.LinkDel(l); err != nil {
		return fmt.Errorf("delete %s: %w", name, err)
	}
	n.log.Info("link: deleted", "name", name)
	return nil
}

// Cleanup deletes every interface whose name is ours (IsOurs) but a link's
// whose id is in keep: strays of a daemon that died, which it calls when no
// VM runs (every uplink tap is then a stray too). Each deletion is logged.
// One failure does not stop the others.
func (n *Net) Cleanup(keep map[mac.LinkID]bool) error {
	links, err := n.h.LinkList()
	if err != nil {
		return fmt.Errorf("list links: %w", err)
	}
	var errs []error
	for _, l := range links {
		name := l.Attrs().Name
		if id, _, ok := ParseName(name); ok && keep[id] || !IsOurs(name) {
			continue
		}
		if err := n.h.LinkDel(l); err != nil {
			errs = append(errs, fmt.Errorf("delete stray %s: %w", name, err))
			continue
		}
		n.log.Info("link: deleted stray", "name", name)
	}
	return errors.Join(errs...)
}

// OpenTap attaches to the existing persistent tap of one side of link id
// and returns its file, for QEMU (-netdev tap,fd=N or QMP getfd). The file
// is blocking and close-on-exec; os/exec's ExtraFiles clears close-on-exec
// in the child. Closing it detaches; the tap stays.
//
// /dev/net/tun is opened inside the namespace because TUNSETIFF looks the
// name up in the namespace the tun file was opened in. Were the tap gone,
// TUNSETIFF would silently create a fresh, non-persistent one; OpenTap
// detects that (no IFF_PERSIST) and fails instead.
func (n *Net) OpenTap(id mac.LinkID, side mac.Side) (*os.File, error) {
	return n.openTap(TapName(id, side))
}

func (n *Net) openTap(name string) (*os.File, error) {
	var f *os.File
	err := n.inNS(func() error {
		fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("open /dev/net/tun: %w", err)
		}
		file := os.NewFile(uintptr(fd), "tap:"+name)
		ifr, err := unix.NewIfreq(name)
		if err != nil {
			file.Close()
			return err
		}
		ifr.SetUint16(tapFlags)
		if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
			file.Close()
			return fmt.Errorf("attach to tap %s: %w", name, err)
		}
		if err := unix.IoctlIfreq(fd, unix.TUNGETIFF, ifr); err != nil {
			file.Close()
			return fmt.Errorf("flags of tap %s: %w", name, err)
		}
		if ifr.Uint16()&unix.IFF_PERSIST == 0 {
			file.Close() // the accidental tap vanishes with it
			return fmt.Errorf("open tap %s: no such persistent tap (create the link first)", name)
		}
		f = file
		return nil
	})
	return f, err
}
