// Package dhcpc is the test guests' network manager for an uplink, a NIC
// without the 0A:B3:EC OUI that spectrum-netcfg never touches (in the
// reference system connman does this in netvm).
//
// IPv4: it gets a DHCP lease, applies it (the address, the default route
// via the lease's router, and the lease's DNS servers in resolv.conf),
// renews it at T1, asks anew (DISCOVER) from T2 on or at once when the
// server refuses it (DHCPNAK), and drops the address when it expires.
//
// IPv6 (Config.IPv6): the kernel takes the router advertisements (SLAAC,
// the default route, the MTU) with accept_ra=2, so that it keeps taking
// them once the VM forwards (a provider's router); the client reads the
// same advertisements for their resolvers (RDNSS) and their M and O flags,
// and asks DHCPv6 for an address (M) or for the resolvers (O). resolv.conf
// names the resolvers of both families.
//
// The guests' init (vmtest/cmd/testinit) runs it; its own tests run it
// natively in a namespace against the LAN's dnsmasq (vmtest/lan).
//
// DHCP goes through github.com/insomniacslk/dhcp (nclient4 on a raw
// socket, as the NIC has no address yet; nclient6), the advertisements
// through an ICMPv6 socket (golang.org/x/net/ipv6), the configuration
// through rtnetlink (vishvananda/netlink).
package dhcpc

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
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
	// IPv6 runs the IPv6 side as well (router advertisements, SLAAC,
	// DHCPv6); false is IPv4 alone. On a kernel without IPv6 it logs
	// "dhcp6 IFACE off: ..." once and IPv4 goes on.
	IPv6 bool
	// OnLease6 is called whenever the IPv6 configuration changes (see
	// Lease6); nil ignores it.
	OnLease6 func(Lease6)
	// Do runs f in the NIC's network namespace, for every socket and
	// sysctl the client opens (Open excepted, which is its own); nil runs
	// f in the calling goroutine.
	Do func(f func() error) error
}

// Lease is a lease as applied.
type Lease struct {
	Addr   netip.Prefix
	Router netip.Addr // invalid if the lease has none
	DNS    []netip.Addr
	Server netip.Addr // the server's identifier
	MTU    int        // the link MTU the lease gives (interface-mtu), 0 if none
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
	mtu := ""
	if l.MTU != 0 {
		mtu = fmt.Sprintf(" mtu=%d", l.MTU)
	}
	return fmt.Sprintf("addr=%v router=%v dns=%s server=%v time=%v t1=%v t2=%v%s n=%d",
		l.Addr, l.Router, strings.Join(dns, ","), l.Server, l.Time, l.T1, l.T2, mtu, l.N)
}

// same reports whether two leases configure the same thing.
func (l Lease) same(o Lease) bool {
	return l.Addr == o.Addr && l.Router == o.Router && slices.Equal(l.DNS, o.DNS) && l.MTU == o.MTU
}

// Run keeps the NIC configured by DHCP (and, with Config.IPv6, by router
// advertisements and DHCPv6) until ctx ends. It returns only when ctx
// ends or the NIC cannot be used at all.
func Run(ctx context.Context, cfg Config) error {
	if cfg.Log == nil {
		cfg.Log = func(string, ...any) {}
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 10 * time.Second
	}
	if cfg.Do == nil {
		cfg.Do = func(f func() error) error { return f() }
	}
	link, err := cfg.Handle.LinkByName(cfg.Iface)
	if err != nil {
		return fmt.Errorf("dhcp %s: %w", cfg.Iface, err)
	}
	res := &resolvConf{path: cfg.ResolvConf, iface: cfg.Iface}
	var r6 *run6
	if cfg.IPv6 {
		// Before the NIC comes up, so that the kernel's own router
		// solicitation at link-up counts.
		r6 = newRun6(cfg, link, res)
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
		cfg.Open = func(iface string) (c net.PacketConn, err error) {
			err = cfg.Do(func() (err error) {
				c, err = nclient4.NewRawUDPConn(iface, nclient4.ClientPort)
				return err
			})
			return c, err
		}
	}
	done6 := make(chan struct{})
	if r6 != nil {
		go func() { defer close(done6); r6.loop(ctx) }()
	} else {
		close(done6)
	}
	r := &run{cfg: cfg, link: link, res: res}
	defer r.close()
	err = r.loop(ctx)
	<-done6
	return err
}

type run struct {
	cfg   Config
	res   *resolvConf
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
	dhcpv4.OptionRenewTimeValue, dhcpv4.OptionRebindingTimeValue, dhcpv4.OptionInterfaceMTU)

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
	// RFC 2132 9.1: at least 68; a value below IPv4's minimum is ignored.
	if b := ack.Options.Get(dhcpv4.OptionInterfaceMTU); len(b) == 2 {
		if mtu := int(b[0])<<8 | int(b[1]); mtu >= 68 {
			out.MTU = mtu
		}
	}
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
	if nl.MTU != 0 && nl.MTU != r.link.Attrs().MTU {
		if err := h.LinkSetMTU(r.link, nl.MTU); err != nil {
			errs = append(errs, fmt.Errorf("MTU %d: %w", nl.MTU, err))
		} else {
			r.link.Attrs().MTU = nl.MTU
		}
	}
	if nl.Router.IsValid() && (old.Router != nl.Router || old.Addr != nl.Addr) {
		rt := &netlink.Route{LinkIndex: idx, Gw: nl.Router.AsSlice(), Family: unix.AF_INET,
			Dst: &net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)}}
		if err := h.RouteReplace(rt); err != nil {
			errs = append(errs, fmt.Errorf("default route via %v: %w", nl.Router, err))
		}
	}
	if !slices.Equal(old.DNS, nl.DNS) {
		if err := r.res.set4(nl.DNS, nl.Server); err != nil {
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
