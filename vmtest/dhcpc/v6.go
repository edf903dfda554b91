package dhcpc

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv6"
	"github.com/insomniacslk/dhcp/dhcpv6/nclient6"
	"github.com/insomniacslk/dhcp/iana"
	"github.com/vishvananda/netlink"
	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv6"
	"golang.org/x/sys/unix"
)

// Lease6 is the NIC's IPv6 configuration as the client last saw it.
type Lease6 struct {
	// Addrs are the NIC's global addresses, as the kernel has them once
	// duplicate address detection passed: SLAAC's /64s, DHCPv6's /128.
	Addrs []netip.Prefix
	// Router is the link-local address of the router the last
	// advertisement named as a default router; invalid when none is.
	Router netip.Addr
	// DNS are the resolvers: the advertisements' (RDNSS), then
	// DHCPv6's, without duplicates.
	DNS []netip.Addr
	// Managed and Other are the last advertisement's M and O flags.
	Managed, Other bool
	// MTU is the last advertisement's link MTU (the kernel applies it to
	// the NIC's IPv6 MTU); 0 if it gives none.
	MTU uint32
	// N counts the configurations reported: 1 for the first.
	N int
}

func (l Lease6) String() string {
	as := make([]string, len(l.Addrs))
	for i, a := range l.Addrs {
		as[i] = a.String()
	}
	ds := make([]string, len(l.DNS))
	for i, a := range l.DNS {
		ds[i] = a.String()
	}
	mtu := ""
	if l.MTU != 0 {
		mtu = fmt.Sprintf(" mtu=%d", l.MTU)
	}
	return fmt.Sprintf("addrs=%s router=%v dns=%s m=%d o=%d%s n=%d", strings.Join(as, ","), l.Router,
		strings.Join(ds, ","), b2i(l.Managed), b2i(l.Other), mtu, l.N)
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

func (l Lease6) same(o Lease6) bool {
	return slices.Equal(l.Addrs, o.Addrs) && l.Router == o.Router && slices.Equal(l.DNS, o.DNS) &&
		l.Managed == o.Managed && l.Other == o.Other && l.MTU == o.MTU
}

// Router solicitations (RFC 4861 6.3.7): a few, 4 s apart, until an
// advertisement comes; after that the router's periodic ones suffice.
const (
	rsInterval = 4 * time.Second
	rsCount    = 3
)

// dadWait bounds how long an advertised autonomous prefix is waited for
// as an address (duplicate address detection takes a second).
const dadWait = 5 * time.Second

type run6 struct {
	cfg  Config
	link netlink.Link
	res  *resolvConf
	off  string // why IPv6 is off, or ""

	router   netip.Addr
	ra       RA
	raFrom   netip.Addr // the last advertisement's source
	seen     bool       // an advertisement came
	dhcpDNS  []netip.Addr
	dhcpAddr netip.Prefix // DHCPv6's address, or invalid
	renewAt  time.Time    // DHCPv6's next exchange (T1), or zero
	infoDone bool
	waitTill time.Time // polling addresses until then (an autonomous prefix without one yet)
	c        *nclient6.Client
	failed   bool
	last     Lease6
	n        int
}

// newRun6 sets the NIC's IPv6 sysctls: accept_ra=2, so that the kernel
// keeps taking advertisements when the VM forwards (as a provider does),
// and autoconf=1 (SLAAC). A kernel without IPv6, or a NIC with IPv6
// disabled, turns the IPv6 side off, logged once.
func newRun6(cfg Config, link netlink.Link, res *resolvConf) *run6 {
	r := &run6{cfg: cfg, link: link, res: res}
	dir := "/proc/sys/net/ipv6/conf/" + cfg.Iface + "/"
	err := cfg.Do(func() error {
		if b, err := os.ReadFile(dir + "disable_ipv6"); err != nil {
			return fmt.Errorf("no IPv6 in this kernel (%w)", err)
		} else if strings.TrimSpace(string(b)) == "1" {
			return errors.New("IPv6 is disabled on the NIC (disable_ipv6=1)")
		}
		for _, kv := range [][2]string{{"accept_ra", "2"}, {"autoconf", "1"}} {
			if err := os.WriteFile(dir+kv[0], []byte(kv[1]), 0o644); err != nil {
				return fmt.Errorf("sysctl %s: %w", kv[0], err)
			}
		}
		return nil
	})
	if err != nil {
		r.off = err.Error()
	}
	return r
}

type raMsg struct {
	ra  RA
	src netip.Addr
}

func (r *run6) loop(ctx context.Context) {
	if r.off != "" {
		r.cfg.Log("dhcp6 %s off: %s", r.cfg.Iface, r.off)
		return
	}
	defer r.closeClient()
	var pc *ipv6.PacketConn
	err := r.cfg.Do(func() error {
		c, err := icmp.ListenPacket("ip6:ipv6-icmp", "::")
		if err != nil {
			return err
		}
		pc = c.IPv6PacketConn()
		var f ipv6.ICMPFilter
		f.SetAll(true)
		f.Accept(ipv6.ICMPTypeRouterAdvertisement)
		return errors.Join(pc.SetICMPFilter(&f), pc.SetControlMessage(ipv6.FlagHopLimit|ipv6.FlagInterface, true),
			pc.SetMulticastHopLimit(255))
	})
	if err != nil {
		if pc != nil {
			pc.Close()
		}
		r.cfg.Log("dhcp6 %s fail: router advertisement socket: %v", r.cfg.Iface, err)
		return
	}
	go func() { <-ctx.Done(); pc.Close() }()
	ras := make(chan raMsg, 8)
	go r.read(pc, ras)

	sent := 0
	rs := time.NewTimer(0)
	defer rs.Stop()
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-rs.C:
			if r.seen || sent >= rsCount {
				continue
			}
			if !r.solicit(pc) {
				// No usable link-local address yet (duplicate
				// address detection): soon again, not counted.
				rs.Reset(250 * time.Millisecond)
				continue
			}
			sent++
			rs.Reset(rsInterval)
		case m, ok := <-ras:
			if !ok {
				return
			}
			r.onRA(ctx, m)
		case <-tick.C:
			if !r.renewAt.IsZero() && time.Now().After(r.renewAt) {
				r.exchange(ctx)
			}
			if time.Now().Before(r.waitTill) {
				r.report()
			}
		}
	}
}

// read passes on every valid router advertisement that arrives on the NIC:
// hop limit 255 and a link-local source, as RFC 4861 6.1.2 requires (only
// a neighbour on the link can send one).
func (r *run6) read(pc *ipv6.PacketConn, out chan<- raMsg) {
	defer close(out)
	buf := make([]byte, 1500)
	for {
		n, cm, src, err := pc.ReadFrom(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			time.Sleep(100 * time.Millisecond) // a NIC going down: not a busy loop
			continue
		}
		a, ok := src.(*net.IPAddr)
		if !ok || cm == nil || cm.IfIndex != r.link.Attrs().Index || cm.HopLimit != 255 {
			continue
		}
		from, _ := netip.AddrFromSlice(a.IP)
		if !from.IsLinkLocalUnicast() {
			continue
		}
		ra, err := ParseRA(buf[:n])
		if err != nil {
			continue
		}
		out <- raMsg{ra: ra, src: from.WithZone("")}
	}
}

// solicit sends a router solicitation to all routers (ff02::2). It
// reports false while the NIC has no link-local address to send from.
func (r *run6) solicit(pc *ipv6.PacketConn) bool {
	rs := []byte{133, 0, 0, 0, 0, 0, 0, 0}
	if hw := r.link.Attrs().HardwareAddr; len(hw) == 6 {
		rs = append(rs, 1, 1) // source link-layer address
		rs = append(rs, hw...)
	}
	dst := &net.IPAddr{IP: net.ParseIP("ff02::2")}
	_, err := pc.WriteTo(rs, &ipv6.ControlMessage{HopLimit: 255, IfIndex: r.link.Attrs().Index}, dst)
	switch {
	case errors.Is(err, unix.EADDRNOTAVAIL):
		return false
	case err != nil:
		r.cfg.Log("dhcp6 %s router solicitation failed: %v", r.cfg.Iface, err)
	}
	return true
}

func (r *run6) onRA(ctx context.Context, m raMsg) {
	// Each advertisement that says something new (not the router's
	// periodic repeats), so the log shows what the network offered.
	if !r.seen || m.src != r.raFrom || !sameRA(m.ra, r.ra) {
		var ps []string
		for _, p := range m.ra.Prefixes {
			f := ""
			if p.Autonomous {
				f = "(slaac)"
			}
			ps = append(ps, p.Prefix.String()+f)
		}
		ds := make([]string, len(m.ra.DNS))
		for i, d := range m.ra.DNS {
			ds[i] = d.String()
		}
		r.cfg.Log("dhcp6 %s ra from=%v lifetime=%v m=%d o=%d prefixes=%s dns=%s mtu=%d", r.cfg.Iface, m.src, m.ra.Lifetime,
			b2i(m.ra.Managed), b2i(m.ra.Other), strings.Join(ps, ","), strings.Join(ds, ","), m.ra.MTU)
	}
	r.seen, r.raFrom = true, m.src
	switch {
	case m.ra.Lifetime > 0:
		r.router = m.src
	case r.router == m.src:
		r.router = netip.Addr{}
	}
	rdnssChanged := !slices.Equal(r.ra.DNS, m.ra.DNS)
	r.ra = m.ra
	for _, p := range m.ra.Prefixes {
		if p.Autonomous && p.Valid > 0 {
			r.waitTill = time.Now().Add(dadWait)
		}
	}
	switch {
	case m.ra.Managed && (!r.dhcpAddr.IsValid() || rdnssChanged):
		r.exchange(ctx)
	case !m.ra.Managed && m.ra.Other && (!r.infoDone || rdnssChanged):
		r.exchange(ctx)
	case !m.ra.Managed && !m.ra.Other:
		r.dhcpDNS = nil
	}
	r.report()
}

// exchange asks DHCPv6 what the last advertisement says to: an address
// (M) or the resolvers alone (O).
func (r *run6) exchange(ctx context.Context) {
	managed := r.ra.Managed
	rep, err := r.ask(ctx, managed)
	if err != nil {
		if !r.failed {
			r.cfg.Log("dhcp6 %s fail: %v", r.cfg.Iface, err)
		}
		r.failed = true
		r.closeClient()
		r.renewAt = time.Now().Add(retryEvery)
		return
	}
	r.failed = false
	r.renewAt = time.Time{}
	r.dhcpDNS = nil
	for _, ip := range rep.Options.DNS() {
		if a, ok := netip.AddrFromSlice(ip); ok && a.Is6() && !a.Is4In6() {
			r.dhcpDNS = append(r.dhcpDNS, a)
		}
	}
	if !managed {
		r.infoDone = true
		return
	}
	ia := rep.Options.OneIANA()
	var got *dhcpv6.OptIAAddress
	if ia != nil {
		got = ia.Options.OneAddress()
	}
	if got == nil {
		r.cfg.Log("dhcp6 %s fail: reply without an address", r.cfg.Iface)
		r.renewAt = time.Now().Add(retryEvery)
		return
	}
	addr, _ := netip.AddrFromSlice(got.IPv6Addr)
	p := netip.PrefixFrom(addr, 128)
	if r.dhcpAddr.IsValid() && r.dhcpAddr != p {
		r.delAddr(r.dhcpAddr)
	}
	// With the lease's lifetimes: the kernel drops the address when it
	// runs out, renewed or not.
	na := &netlink.Addr{IPNet: &net.IPNet{IP: addr.AsSlice(), Mask: net.CIDRMask(128, 128)},
		ValidLft: int(got.ValidLifetime.Seconds()), PreferedLft: int(got.PreferredLifetime.Seconds()),
		Flags: unix.IFA_F_NODAD}
	if err := r.cfg.Handle.AddrReplace(r.link, na); err != nil {
		r.cfg.Log("dhcp6 %s fail: add %v: %v", r.cfg.Iface, p, err)
	}
	r.dhcpAddr = p
	t1 := ia.T1
	if t1 <= 0 || t1 > got.ValidLifetime {
		t1 = got.ValidLifetime / 2
	}
	r.renewAt = time.Now().Add(max(t1, time.Second))
}

func (r *run6) delAddr(p netip.Prefix) {
	na := &netlink.Addr{IPNet: &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), 128)}}
	if err := r.cfg.Handle.AddrDel(r.link, na); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) {
		r.cfg.Log("dhcp6 %s fail: remove %v: %v", r.cfg.Iface, p, err)
	}
}

// ask runs one DHCPv6 exchange: Solicit and Request for an address, or an
// Information-request for the resolvers.
func (r *run6) ask(ctx context.Context, managed bool) (*dhcpv6.Message, error) {
	if r.c == nil {
		var conn net.PacketConn
		err := r.cfg.Do(func() (err error) {
			conn, err = nclient6.NewIPv6UDPConn(r.cfg.Iface, dhcpv6.DefaultClientPort)
			return err
		})
		if err != nil {
			return nil, fmt.Errorf("DHCPv6 socket: %w", err)
		}
		c, err := nclient6.NewWithConn(conn, r.link.Attrs().HardwareAddr, nclient6.WithTimeout(2*time.Second), nclient6.WithRetry(3))
		if err != nil {
			conn.Close()
			return nil, err
		}
		r.c = c
	}
	ctx, cancel := context.WithTimeout(ctx, r.cfg.Timeout)
	defer cancel()
	// One client identity for the NIC's life (DUID-LL: its MAC), so
	// that the server gives the same address again.
	duid := dhcpv6.WithClientID(&dhcpv6.DUIDLL{HWType: iana.HWTypeEthernet, LinkLayerAddr: r.link.Attrs().HardwareAddr})
	if managed {
		adv, err := r.c.Solicit(ctx, duid)
		if err != nil {
			return nil, fmt.Errorf("DHCPv6 solicit: %w", err)
		}
		rep, err := r.c.Request(ctx, adv)
		if err != nil {
			return nil, fmt.Errorf("DHCPv6 request: %w", err)
		}
		if s := rep.Options.Status(); s != nil && s.StatusCode != iana.StatusSuccess {
			return nil, fmt.Errorf("DHCPv6 request: %v", s)
		}
		return rep, nil
	}
	msg, err := dhcpv6.NewMessage(duid)
	if err != nil {
		return nil, err
	}
	msg.MessageType = dhcpv6.MessageTypeInformationRequest
	msg.AddOption(dhcpv6.OptRequestedOption(dhcpv6.OptionDNSRecursiveNameServer))
	msg.AddOption(dhcpv6.OptElapsedTime(0))
	rep, err := r.c.SendAndRead(ctx, r.c.RemoteAddr(), msg, nclient6.IsMessageType(dhcpv6.MessageTypeReply))
	if err != nil {
		return nil, fmt.Errorf("DHCPv6 information-request: %w", err)
	}
	return rep, nil
}

func (r *run6) closeClient() {
	if r.c != nil {
		r.c.Close()
		r.c = nil
	}
}

// report reads the NIC's global addresses back and, when the
// configuration changed and it has an address, logs it, writes the
// resolvers and calls OnLease6.
func (r *run6) report() {
	l := Lease6{Router: r.router, Managed: r.ra.Managed, Other: r.ra.Other, MTU: r.ra.MTU}
	addrs, err := r.cfg.Handle.AddrList(r.link, netlink.FAMILY_V6)
	if err != nil {
		r.cfg.Log("dhcp6 %s fail: list addresses: %v", r.cfg.Iface, err)
		return
	}
	for _, a := range addrs {
		if a.Scope != unix.RT_SCOPE_UNIVERSE || a.Flags&(unix.IFA_F_TENTATIVE|unix.IFA_F_DADFAILED) != 0 {
			continue
		}
		ip, ok := netip.AddrFromSlice(a.IP)
		if !ok {
			continue
		}
		ones, _ := a.Mask.Size()
		l.Addrs = append(l.Addrs, netip.PrefixFrom(ip, ones))
	}
	slices.SortFunc(l.Addrs, func(a, b netip.Prefix) int { return a.Addr().Compare(b.Addr()) })
	for _, d := range slices.Concat(r.ra.DNS, r.dhcpDNS) {
		if !slices.Contains(l.DNS, d) {
			l.DNS = append(l.DNS, d)
		}
	}
	if err := r.res.set6(l.DNS); err != nil {
		r.cfg.Log("dhcp6 %s fail: %v", r.cfg.Iface, err)
	}
	if len(l.Addrs) == 0 || l.same(r.last) {
		return
	}
	r.n++
	l.N = r.n
	r.last = l
	r.cfg.Log("dhcp6 %s lease %v", r.cfg.Iface, l)
	if r.cfg.OnLease6 != nil {
		r.cfg.OnLease6(l)
	}
}

// sameRA reports whether two advertisements say the same (lifetimes of
// prefixes aside, which count down in some routers' repeats).
func sameRA(a, b RA) bool {
	if a.Managed != b.Managed || a.Other != b.Other || a.Lifetime != b.Lifetime || a.MTU != b.MTU ||
		!slices.Equal(a.DNS, b.DNS) || len(a.Prefixes) != len(b.Prefixes) {
		return false
	}
	for i := range a.Prefixes {
		if a.Prefixes[i].Prefix != b.Prefixes[i].Prefix || a.Prefixes[i].Autonomous != b.Prefixes[i].Autonomous {
			return false
		}
	}
	return true
}
