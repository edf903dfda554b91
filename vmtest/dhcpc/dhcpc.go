// Package dhcpc is the test guests' DHCP client for an uplink, a NIC without
// the 0A:B3:EC OUI that spectrum-netcfg never touches (in the reference
// system connman does this in netvm). It gets a lease, applies it (the
// address, the default route via the lease's router, and the lease's DNS
// servers in resolv.conf), renews it at T1, asks anew (DISCOVER) from T2 on
// or at once when the server refuses it (DHCPNAK), and drops the address
// when it expires. The guests' init (vmtest/cmd/testinit) runs it; its own
// tests run it natively in a namespace against the LAN's dnsmasq.
//
// DHCP goes through github.com/insomniacslk/dhcp (nclient4) on a raw
// socket, as the NIC has no address yet; the configuration through
// rtnetlink (vishvananda/netlink).
package dhcpc

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/nclient4"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Config is one client's NIC and where its lease goes. The client logs
// "dhcp IFACE lease addr=... router=... dns=... n=N" for each lease that
// changes the configuration (not for a renewal that changes nothing),
// "dhcp IFACE nak|expired|released ..." and the first failure of a run.
type Config struct {
	Iface string
	// Handle is rtnetlink in the NIC's network namespace.
	Handle *netlink.Handle
	// Open opens the raw DHCP socket on the NIC in the NIC's namespace;
	// nil is nclient4.NewRawUDPConn in the calling thread's. Run calls it
	// once the NIC is up (a packet socket bound to a NIC that is down
	// starts with an ENETDOWN error, which would end nclient4's receive
	// loop), and again after failed exchanges in a row.
	Open func(iface string) (net.PacketConn, error)
	// ResolvConf is written (atomically) with the lease's DNS servers;
	// empty writes nothing.
	ResolvConf string
	// Log gets one line per change and per failure; nil discards.
	Log func(format string, args ...any)
	// OnLease is called after each lease is applied (the first, renewals
	// and new leases); nil ignores them.
	OnLease func(Lease)
	// Timeout bounds one exchange with the server, retries included
	// (zero: 10 s).
	Timeout time.Duration
}

// Lease is a lease as applied.
type Lease struct {
	Addr   netip.Prefix
	Router netip.Addr // invalid if the lease has none
	DNS    []netip.Addr
	Server netip.Addr // the server's identifier
	Time   time.Duration
	T1, T2 time.Duration
	// N counts the leases applied: 1 for the first, one more for each
	// renewal or new lease.
	N int
}

func (l Lease) String() string {
	dns := make([]string, len(l.DNS))
	for i, a := range l.DNS {
		dns[i] = a.String()
	}
	return fmt.Sprintf("addr=%v router=%v dns=%s server=%v time=%v t1=%v t2=%v n=%d",
		l.Addr, l.Router, strings.Join(dns, ","), l.Server, l.Time, l.T1, l.T2, l.N)
}

// same reports whether two leases configure the same thing.
func (l Lease) same(o Lease) bool {
	return l.Addr == o.Addr && l.Router == o.Router && slices.Equal(l.DNS, o.DNS)
}

// Run keeps the NIC configured by DHCP until ctx ends. It returns only
// when ctx ends or the NIC cannot be used at all.
func Run(ctx context.Context, cfg Config) error {
	if cfg.Log == nil {
		cfg.Log = func(string, ...any) {}
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 10 * time.Second
	}
	link, err := cfg.Handle.LinkByName(cfg.Iface)
	if err != nil {
		return fmt.Errorf("dhcp %s: %w", cfg.Iface, err)
	}
	if err := cfg.Handle.LinkSetUp(link); err != nil {
		return fmt.Errorf("dhcp %s: set up: %w", cfg.Iface, err)
	}
	// Until the kernel sees the carrier, the NIC's queue drops every
	// frame (ENETDOWN): the first DISCOVER would be lost.
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); {
		if l, err := cfg.Handle.LinkByName(cfg.Iface); err == nil && l.Attrs().OperState == netlink.OperUp {
			break
		}
		if !sleep(ctx, 20*time.Millisecond) {
			return ctx.Err()
		}
	}
	if cfg.Open == nil {
		cfg.Open = func(iface string) (net.PacketConn, error) {
			return nclient4.NewRawUDPConn(iface, nclient4.ClientPort)
		}
	}
	r := &run{cfg: cfg, link: link}
	defer r.close()
	return r.loop(ctx)
}

type run struct {
	cfg   Config
	link  netlink.Link
	c     *nclient4.Client // nil until the first exchange, and after failures
	fails int              // exchanges failed in a row

	cur    *nclient4.Lease // nil: no lease
	got    time.Time       // when cur was acknowledged
	lease  Lease           // cur as applied
	n      int
	failed bool // the last exchange failed (logged once until one works)
}

// requested are the options asked for, besides nclient4's defaults.
var requested = dhcpv4.WithRequestedOptions(dhcpv4.OptionSubnetMask, dhcpv4.OptionRouter,
	dhcpv4.OptionDomainNameServer, dhcpv4.OptionIPAddressLeaseTime,
	dhcpv4.OptionRenewTimeValue, dhcpv4.OptionRebindingTimeValue)

// retryEvery is how often a failed exchange is tried again.
const retryEvery = 2 * time.Second

func (r *run) loop(ctx context.Context) error {
	for {
		if r.cur == nil {
			l, err := r.exchange(ctx, "discover", func(ctx context.Context) (*nclient4.Lease, error) {
				return r.c.Request(ctx, requested)
			})
			if err != nil {
				if !sleep(ctx, retryEvery) {
					return ctx.Err()
				}
				continue
			}
			r.apply(l)
			continue
		}
		// Bound: renew at T1, ask anyone from T2, drop it at the end.
		t1, t2, end := r.got.Add(r.lease.T1), r.got.Add(r.lease.T2), r.got.Add(r.lease.Time)
		if !sleepUntil(ctx, t1) {
			return ctx.Err()
		}
		for r.cur != nil {
			now := time.Now()
			var l *nclient4.Lease
			var err error
			switch {
			case now.After(end):
				r.cfg.Log("dhcp %s expired addr=%v", r.cfg.Iface, r.lease.Addr)
				r.unapply()
				continue
			case now.Before(t2):
				l, err = r.exchange(ctx, "renew", func(ctx context.Context) (*nclient4.Lease, error) {
					return r.c.Renew(ctx, r.cur, requested)
				})
			default:
				l, err = r.exchange(ctx, "rebind", func(ctx context.Context) (*nclient4.Lease, error) {
					return r.c.Request(ctx, requested)
				})
			}
			var nak *nclient4.ErrNak
			switch {
			case err == nil:
				r.apply(l)
			case errors.As(err, &nak):
				r.cfg.Log("dhcp %s nak addr=%v: %v", r.cfg.Iface, r.lease.Addr, err)
				r.unapply()
			case ctx.Err() != nil:
				return ctx.Err()
			default:
				if !sleep(ctx, retryEvery) {
					return ctx.Err()
				}
				continue
			}
			break
		}
	}
}

// exchange runs one exchange with the server within the timeout, logging
// the first of a run of failures. After a few failures in a row the
// socket is opened anew: nclient4 stops receiving for good at the first
// error its socket returns.
func (r *run) exchange(ctx context.Context, what string, f func(context.Context) (*nclient4.Lease, error)) (*nclient4.Lease, error) {
	if r.c == nil {
		if err := r.open(); err != nil {
			r.failure(what, err)
			return nil, err
		}
	}
	ctx, cancel := context.WithTimeout(ctx, r.cfg.Timeout)
	defer cancel()
	l, err := f(ctx)
	var nak *nclient4.ErrNak
	if err != nil && !errors.As(err, &nak) {
		r.failure(what, err)
		if r.fails%3 == 0 {
			r.close()
		}
		return nil, err
	}
	r.failed, r.fails = false, 0
	return l, err
}

func (r *run) failure(what string, err error) {
	if !r.failed {
		r.cfg.Log("dhcp %s %s failed (retrying every %v): %v", r.cfg.Iface, what, retryEvery, err)
	}
	r.failed = true
	r.fails++
}

func (r *run) open() error {
	conn, err := r.cfg.Open(r.cfg.Iface)
	if err != nil {
		return fmt.Errorf("raw socket: %w", err)
	}
	// nclient4 retries each message (3 times, 2 s apart) within the
	// exchange's context.
	c, err := nclient4.NewWithConn(conn, r.link.Attrs().HardwareAddr, nclient4.WithTimeout(2*time.Second), nclient4.WithRetry(3))
	if err != nil {
		conn.Close()
		return err
	}
	r.c = c
	return nil
}

func (r *run) close() {
	if r.c != nil {
		r.c.Close()
		r.c = nil
	}
}

// parse reads what a lease configures.
func parse(l *nclient4.Lease) (Lease, error) {
	ack := l.ACK
	addr, ok := netip.AddrFromSlice(ack.YourIPAddr.To4())
	if !ok {
		return Lease{}, fmt.Errorf("lease without an IPv4 address: %v", ack.YourIPAddr)
	}
	mask := ack.SubnetMask()
	if mask == nil {
		// No mask: a host address, not a classful guess.
		mask = net.CIDRMask(32, 32)
	}
	ones, _ := net.IPMask(mask).Size()
	out := Lease{Addr: netip.PrefixFrom(addr, ones)}
	if rs := ack.Router(); len(rs) > 0 {
		out.Router, _ = netip.AddrFromSlice(rs[0].To4())
	}
	for _, d := range ack.DNS() {
		if a, ok := netip.AddrFromSlice(d.To4()); ok {
			out.DNS = append(out.DNS, a)
		}
	}
	out.Server, _ = netip.AddrFromSlice(ack.ServerIdentifier().To4())
	out.Time = ack.IPAddressLeaseTime(time.Hour)
	out.T1 = ack.IPAddressRenewalTime(out.Time / 2)
	out.T2 = ack.IPAddressRebindingTime(out.Time * 7 / 8)
	return out, nil
}

// apply configures the NIC from l, changing only what differs from the
// lease applied before.
func (r *run) apply(l *nclient4.Lease) {
	nl, err := parse(l)
	if err != nil {
		r.cfg.Log("dhcp %s fail: %v", r.cfg.Iface, err)
		return
	}
	old := r.lease
	if r.cur != nil && old.Addr != nl.Addr {
		// The old address goes first: removing a primary address
		// removes the secondaries of its subnet with it.
		r.unapply()
	}
	r.cur, r.got = l, time.Now()
	r.n++
	nl.N = r.n
	if err := r.configure(old, nl); err != nil {
		r.cfg.Log("dhcp %s fail: apply %v: %v", r.cfg.Iface, nl.Addr, err)
	}
	renewed := old.Addr.IsValid() && old.same(nl)
	r.lease = nl
	// A renewal that changes nothing is not logged: at the LAN's short
	// T1 it would be a line every few seconds.
	if !renewed {
		r.cfg.Log("dhcp %s lease %v", r.cfg.Iface, nl)
	}
	if r.cfg.OnLease != nil {
		r.cfg.OnLease(nl)
	}
}

func (r *run) configure(old, nl Lease) error {
	h, idx := r.cfg.Handle, r.link.Attrs().Index
	var errs []error
	if old.Addr != nl.Addr {
		a := &netlink.Addr{IPNet: &net.IPNet{IP: nl.Addr.Addr().AsSlice(), Mask: net.CIDRMask(nl.Addr.Bits(), 32)}}
		if err := h.AddrReplace(r.link, a); err != nil {
			errs = append(errs, fmt.Errorf("address: %w", err))
		}
	}
	if nl.Router.IsValid() && (old.Router != nl.Router || old.Addr != nl.Addr) {
		rt := &netlink.Route{LinkIndex: idx, Gw: nl.Router.AsSlice(), Family: unix.AF_INET,
			Dst: &net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}}
		if err := h.RouteReplace(rt); err != nil {
			errs = append(errs, fmt.Errorf("default route via %v: %w", nl.Router, err))
		}
	}
	if r.cfg.ResolvConf != "" && !slices.Equal(old.DNS, nl.DNS) {
		if err := writeResolvConf(r.cfg.ResolvConf, r.cfg.Iface, nl); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// unapply removes the lease's address and default route (not
// resolv.conf: a stale resolver does no harm until the next lease).
func (r *run) unapply() {
	if r.cur == nil {
		return
	}
	h, old := r.cfg.Handle, r.lease
	if old.Router.IsValid() {
		rt := &netlink.Route{LinkIndex: r.link.Attrs().Index, Gw: old.Router.AsSlice(), Family: unix.AF_INET,
			Dst: &net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}}
		if err := h.RouteDel(rt); err != nil && !errors.Is(err, unix.ESRCH) {
			r.cfg.Log("dhcp %s fail: remove default route via %v: %v", r.cfg.Iface, old.Router, err)
		}
	}
	a := &netlink.Addr{IPNet: &net.IPNet{IP: old.Addr.Addr().AsSlice(), Mask: net.CIDRMask(old.Addr.Bits(), 32)}}
	if err := h.AddrDel(r.link, a); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) {
		r.cfg.Log("dhcp %s fail: remove %v: %v", r.cfg.Iface, old.Addr, err)
	}
	r.cfg.Log("dhcp %s released addr=%v", r.cfg.Iface, old.Addr)
	r.cur, r.lease = nil, Lease{DNS: old.DNS}
}

// writeResolvConf replaces path with the lease's resolvers by a rename, so
// a reader (the provider's router following its resolver) never sees a
// half-written file.
func writeResolvConf(path, iface string, l Lease) error {
	var b strings.Builder
	fmt.Fprintf(&b, "# from the DHCP lease on %s (server %v)\n", iface, l.Server)
	for _, d := range l.DNS {
		fmt.Fprintf(&b, "nameserver %v\n", d)
	}
	tmp := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".dhcp")
	if err := os.WriteFile(tmp, []byte(b.String()), 0o644); err != nil {
		return fmt.Errorf("resolv.conf: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("resolv.conf: %w", err)
	}
	return nil
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

func sleepUntil(ctx context.Context, at time.Time) bool {
	if d := time.Until(at); d > 0 {
		return sleep(ctx, d)
	}
	return ctx.Err() == nil
}
