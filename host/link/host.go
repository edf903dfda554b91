package link

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"runtime"

	"github.com/vishvananda/netns"

	"spectrum-os.org/netcfg/internal/mac"
)

// NewNamespace creates a network namespace of its own for the links and
// returns a handle on it; the caller closes it. It holds nothing (its
// loopback stays down: no address, no route), and nothing but its links
// will: no process runs in it, no socket but spectrumd's netlink ones is
// opened in it. So however a guest addresses a frame into a link's bridge,
// no host address, service, route or forwarding is there to meet it.
//
// It is anonymous: no name in /run/netns, no mount. It lives while a
// handle on it or a tap opened in it is held (spectrumd's, and its QEMUs'
// tap descriptors), and the kernel removes it, with every bridge and tap in
// it, when the last goes. So a spectrumd that dies leaves no links behind
// once its QEMUs are gone (the next one kills those it finds). Needs
// CAP_SYS_ADMIN (unshare and setns).
func NewNamespace() (netns.NsHandle, error) {
	type result struct {
		ns  netns.NsHandle
		err error
	}
	c := make(chan result, 1)
	go func() {
		// unshare acts on the calling thread: do it on one of our own
		// and put that thread back, or let it end with the goroutine.
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			c <- result{err: fmt.Errorf("current network namespace: %w", err)}
			return
		}
		defer orig.Close()
		ns, err := netns.New()
		if err != nil {
			c <- result{err: fmt.Errorf("new network namespace for the links: %w", err)}
			return
		}
		if netns.Set(orig) == nil {
			runtime.UnlockOSThread()
		}
		c <- result{ns: ns}
	}()
	r := <-c
	return r.ns, r.err
}

// Host is the host side of spectrumd's networking: links in a namespace of
// their own (the embedded Net; see NewNamespace) and uplinks in spectrumd's
// own namespace, where the user's bridges are (Uplinks). It is what the
// daemon's Network is.
type Host struct {
	*Net         // the links' namespace
	Uplinks *Net // spectrumd's namespace
	ns      netns.NsHandle
}

// OpenHost makes a new namespace for the links and opens it and own (the
// namespace uplinks join bridges in: spectrumd's own, netns.Get()). Every
// change is logged on log (nil: slog.Default()).
func OpenHost(own netns.NsHandle, log *slog.Logger) (*Host, error) {
	ns, err := NewNamespace()
	if err != nil {
		return nil, err
	}
	links, err := Open(ns, log)
	if err != nil {
		ns.Close()
		return nil, err
	}
	up, err := Open(own, log)
	if err != nil {
		links.Close()
		ns.Close()
		return nil, err
	}
	return &Host{Net: links, Uplinks: up, ns: ns}, nil
}

// Namespace is the links' namespace (a handle the Host keeps).
func (h *Host) Namespace() netns.NsHandle { return h.ns }

// Close releases both namespaces. The links' namespace goes, with its
// links, once no tap in it is held open either.
func (h *Host) Close() error {
	return errors.Join(h.Net.Close(), h.Uplinks.Close(), h.ns.Close())
}

// Cleanup deletes our stray interfaces in both namespaces (see
// Net.Cleanup): in spectrumd's, uplink taps and the links a spectrumd that
// kept its links there left.
func (h *Host) Cleanup(keep map[mac.LinkID]bool) error {
	return errors.Join(h.Net.Cleanup(keep), h.Uplinks.Cleanup(keep))
}

// CreateUplink is Uplinks.CreateUplink: the user's bridge is in spectrumd's
// namespace.
func (h *Host) CreateUplink(br string, m net.HardwareAddr) error {
	return h.Uplinks.CreateUplink(br, m)
}

// OpenUplink is Uplinks.OpenUplink.
func (h *Host) OpenUplink(m net.HardwareAddr) (*os.File, error) { return h.Uplinks.OpenUplink(m) }

// DeleteUplink is Uplinks.DeleteUplink.
func (h *Host) DeleteUplink(m net.HardwareAddr) error { return h.Uplinks.DeleteUplink(m) }
