// Package link creates and removes the host side of spectrum's network
// links: per link (mac.LinkID) one bridge and two persistent taps enslaved
// to it, one tap for the client VM's QEMU and one for the provider's. It
// also makes the taps of VMs' uplinks, ports of a host bridge that is not
// spectrumd's (see uplink.go), and opens every tap for QEMU.
//
// The host takes no part in the traffic: links live in a network namespace
// of their own (NewNamespace, OpenHost) that holds nothing else, and the
// bridges and taps carry no address, generate none, and forward nothing
// (devconf.go), all through rtnetlink, so it holds with /proc/sys
// read-only. Everything is done in the network namespace passed to Open,
// never implicitly in the caller's.
//
// Names are derived from the link id (see Name) and carry a prefix, so
// Cleanup can find links left behind by a crashed daemon.
package link

import (
	"fmt"
	"log/slog"
	"runtime"
	"strings"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"spectrum-os.org/netcfg/internal/mac"
)

// Kind is one of the three interfaces of a link.
type Kind uint8

const (
	Bridge      Kind = iota // the link's bridge
	ClientTap               // the tap the client VM's NIC is attached to
	ProviderTap             // the tap the provider VM's NIC is attached to
)

// prefixes are the interface name prefixes per kind. With the four hex
// digits of the link id a name is at most 9 bytes, well under the kernel's
// 15 (IFNAMSIZ-1). Every prefix starts with "sp", and no other software on
// a spectrum host names interfaces so.
var prefixes = [...]string{Bridge: "spbr-", ClientTap: "spc-", ProviderTap: "spp-"}

// Name returns the interface name of one part of link id:
// "spbr-a546" (bridge), "spc-a546" (client tap), "spp-a546" (provider tap).
func Name(id mac.LinkID, k Kind) string {
	return fmt.Sprintf("%s%04x", prefixes[k], uint16(id))
}

// TapName returns the tap for one side of link id.
func TapName(id mac.LinkID, side mac.Side) string {
	if side == mac.Provider {
		return Name(id, ProviderTap)
	}
	return Name(id, ClientTap)
}

// ParseName tells whether name is one Name produces, and for which link and
// kind. Names with our prefix but another suffix are not ours.
func ParseName(name string) (mac.LinkID, Kind, bool) {
	for k, p := range prefixes {
		rest, ok := strings.CutPrefix(name, p)
		if !ok || len(rest) != 4 || strings.ToLower(rest) != rest {
			continue
		}
		id, err := mac.ParseLinkID(rest[:2] + ":" + rest[2:])
		if err != nil || id.Valid() != nil {
			continue
		}
		return id, Kind(k), true
	}
	return 0, 0, false
}

// Net creates links in one network namespace.
type Net struct {
	ns  netns.NsHandle
	h   *netlink.Handle
	log *slog.Logger
}

// OpenPath is Open for the namespace bound at path (a tests' namespace,
// /run/netns/NAME).
func OpenPath(path string, log *slog.Logger) (*Net, error) {
	h, err := netns.GetFromPath(path)
	if err != nil {
		return nil, fmt.Errorf("network namespace %s: %w", path, err)
	}
	defer h.Close()
	return Open(h, log)
}

// Open returns a Net for namespace ns (netns.Get() for the daemon's own;
// OpenPath for one bound at a path). It duplicates ns; the caller keeps and closes
// its own handle. Every change is logged on log (nil: slog.Default()).
func Open(ns netns.NsHandle, log *slog.Logger) (*Net, error) {
	fd, err := unix.FcntlInt(uintptr(ns), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("dup netns handle: %w", err)
	}
	own := netns.NsHandle(fd)
	h, err := netlink.NewHandleAt(own)
	if err != nil {
		own.Close()
		return nil, fmt.Errorf("netlink handle in netns: %w", err)
	}
	if log == nil {
		log = slog.Default()
	}
	return &Net{ns: own, h: h, log: log}, nil
}

// Close releases the netlink socket and the namespace handle. Links stay.
func (n *Net) Close() error {
	n.h.Close()
	return n.ns.Close()
}

// inNS runs fn on an OS thread that has entered n's namespace: the tun
// driver and /proc/sys/net act in the namespace of the calling thread, not
// of a netlink socket. The thread is returned to the scheduler only if it
// could be switched back; otherwise it ends with the goroutine.
func (n *Net) inNS(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			errc <- fmt.Errorf("get current netns: %w", err)
			return
		}
		defer orig.Close()
		if err := netns.Set(n.ns); err != nil {
			errc <- fmt.Errorf("enter netns: %w", err)
			return
		}
		err = fn()
		if netns.Set(orig) == nil {
			runtime.UnlockOSThread()
		}
		errc <- err
	}()
	return <-errc
}
