// Package lan is the simulated LAN of the VM tests and of `make run`: a
// network namespace of its own, joined by a veth to a bridge in spectrumd's
// namespace (the bridge a VM's uplinks/net/<bridge> entry names), with a
// DHCP server and a DNS server (Debian's dnsmasq, one instance each) and a
// web server, a UDP echo server and a throughput receiver (served by this
// process on sockets opened inside the namespace, on both families).
//
// A LAN speaks IPv4, IPv4 and IPv6, or IPv6 alone (Config.Mode), as the
// uplinks a netvm meets do. IPv4 is 203.0.113.0/24 (TEST-NET-3, RFC 5737)
// with DHCP; IPv6 is 2001:db8:1::/64 (RFC 3849) with router advertisements
// (the prefix, a default route, RDNSS) and DHCPv6, stateless (addresses by
// SLAAC) or stateful (Config.Stateful). The LAN's namespace has no route
// beyond them, in particular none to the VMs' 100.64.0.0/16 or
// fd9f:2b8:5010::/48: a reply reaches a client VM only through its
// provider. The DNS server forwards nothing (no upstream), and nothing here
// sends to any host outside the namespaces it and the test created.
package lan

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/net/ipv6"

	"spectrum-os.org/netcfg/internal/syncbuf"
	"spectrum-os.org/netcfg/vmtest/tput"
)

// The LAN's fixed addresses.
var (
	// Prefix is the LAN's IPv4 subnet.
	Prefix = netip.MustParsePrefix("203.0.113.0/24")
	// Router is the LAN's gateway (the lease's router option) and the DHCP
	// server's address (its server identifier), the same in every Plan.
	Router = netip.MustParseAddr("203.0.113.1")
	// Prefix6 is the LAN's IPv6 subnet, the prefix its router
	// advertisements carry.
	Prefix6 = netip.MustParsePrefix("2001:db8:1::/64")
	// Router6 is the LAN router's global IPv6 address, for pings and
	// echo; clients route via its link-local address, the source of its
	// router advertisements.
	Router6 = netip.MustParseAddr("2001:db8:1::1")
)

// Mode is which IP families a LAN speaks.
type Mode uint8

// The modes of a LAN, one per kind of uplink a netvm meets.
const (
	// IPv4Only is DHCP on 203.0.113.0/24 and nothing of IPv6 (the zero
	// Mode: the LAN the tests had before IPv6).
	IPv4Only Mode = iota
	// DualStack is IPv4Only and IPv6Only at once: the web name has an A
	// and an AAAA record, the lease and the router advertisements each
	// name the resolver of their family.
	DualStack
	// IPv6Only is router advertisements and DHCPv6 on 2001:db8:1::/64,
	// no IPv4 address at all on the LAN and no DHCP server.
	IPv6Only
)

func (m Mode) String() string {
	switch m {
	case IPv4Only:
		return "ipv4"
	case DualStack:
		return "dual"
	case IPv6Only:
		return "ipv6"
	}
	return "mode(" + strconv.Itoa(int(m)) + ")"
}

// IPv4 reports whether the LAN speaks IPv4.
func (m Mode) IPv4() bool { return m != IPv6Only }

// IPv6 reports whether the LAN speaks IPv6.
func (m Mode) IPv6() bool { return m != IPv4Only }

// Modes are every Mode, for tests that run once per kind of uplink.
var Modes = []Mode{IPv4Only, DualStack, IPv6Only}

// WebName is the web server's name in the LAN's DNS. .test is reserved for
// testing (RFC 6761), so it can never mean a real host.
const WebName = "www.lan.test"

// Ports of the servers this process runs in the namespace (on every LAN
// address).
const (
	WebPort  = 80
	EchoPort = 7 // UDP echo, as the guests' init serves it
	SinkPort = tput.Port
)

// Plan is one numbering of the LAN: what the DHCP servers hand out and
// where the DNS server is and what it answers, in each family (a LAN uses
// the fields of the families its Mode speaks).
type Plan struct {
	RangeStart, RangeEnd netip.Addr // the DHCP pool
	DNS                  netip.Addr // the DNS server's address, handed out as the lease's resolver
	Web                  netip.Addr // what WebName resolves to (A)
	// The DHCPv6 pool (Config.Stateful), the DNS server's IPv6 address
	// (in the router advertisements' RDNSS and DHCPv6's DNS option) and
	// WebName's AAAA record.
	Range6Start, Range6End netip.Addr
	DNS6                   netip.Addr
	Web6                   netip.Addr
}

// First is the numbering Start serves; Second is another one for
// Renumber: a new pool, a resolver at a new address (the old one goes
// away) and the web server's name on a new address (both web addresses
// answer all along, so a fetch by name shows which answer it got).
var (
	First = Plan{RangeStart: netip.MustParseAddr("203.0.113.100"), RangeEnd: netip.MustParseAddr("203.0.113.149"),
		DNS: netip.MustParseAddr("203.0.113.53"), Web: netip.MustParseAddr("203.0.113.80"),
		Range6Start: netip.MustParseAddr("2001:db8:1::1000"), Range6End: netip.MustParseAddr("2001:db8:1::1fff"),
		DNS6: netip.MustParseAddr("2001:db8:1::53"), Web6: netip.MustParseAddr("2001:db8:1::80")}
	Second = Plan{RangeStart: netip.MustParseAddr("203.0.113.150"), RangeEnd: netip.MustParseAddr("203.0.113.199"),
		DNS: netip.MustParseAddr("203.0.113.54"), Web: netip.MustParseAddr("203.0.113.81"),
		Range6Start: netip.MustParseAddr("2001:db8:1::2000"), Range6End: netip.MustParseAddr("2001:db8:1::2fff"),
		DNS6: netip.MustParseAddr("2001:db8:1::54"), Web6: netip.MustParseAddr("2001:db8:1::81")}
)

// Config says where the LAN goes.
type Config struct {
	// HostNS is the network namespace (by name) of the bridge: spectrumd's.
	HostNS string
	// Bridge is the bridge in HostNS the LAN's veth joins. It is created if
	// it does not exist (and then deleted by Close).
	Bridge string
	// NS names the LAN's own namespace; empty means a fresh unique name. A
	// namespace of that name left by an earlier run is removed first,
	// with any process still in it.
	NS string
	// Dir holds dnsmasq's lease files; empty means a temporary directory
	// that Close removes.
	Dir string
	// Log gets every line of dnsmasq's logs and one line per web request;
	// nil discards them (Log() still has them).
	Log io.Writer
	// Mode is which families the LAN speaks (zero: IPv4Only).
	Mode Mode
	// Stateful makes an IPv6 LAN hand out addresses by DHCPv6 (the
	// router advertisements' M flag, a prefix without the A flag: no
	// SLAAC); false is SLAAC with stateless DHCPv6 for the resolver (the
	// O flag), what most home routers do. Both name the resolver in the
	// advertisements (RDNSS) and in DHCPv6.
	Stateful bool
	// MTU is the LAN's link MTU (zero: Ethernet's 1500): its NIC's and
	// its bridge port's, handed out by DHCP (interface-mtu) and in the
	// router advertisements (the MTU option), as a PPPoE (1492) or a
	// tunnelled (1280, 1400) uplink does.
	MTU int
	// LeaseTime is the DHCP lease time (zero: 2 minutes, dnsmasq's
	// minimum); T1 and T2 are the renewal and rebinding times it hands
	// out (zero: 10 s and 15 s), short so that a client sees a Renumber
	// within seconds.
	LeaseTime, T1, T2 time.Duration
}

// LAN is a running LAN. Its methods are safe for concurrent use.
type LAN struct {
	cfg       Config
	path      string // the namespace's bind mount
	madeBr    bool
	madeDir   bool
	log       *syncbuf.Buffer
	logw      io.Writer
	servers   []io.Closer
	dhcp, dns *dnsmasq
	mac       net.HardwareAddr // the LAN NIC's

	mu      sync.Mutex
	plan    Plan
	reqs    []Request
	grams   []Datagram
	pkts    []Packet
	changed chan struct{}
}

// Request is one request the web server answered.
type Request struct {
	At     time.Time
	Remote netip.AddrPort // as the server saw it: after the provider's NAT
	Host   string
	Path   string
	// Family is the family that reached the server, "IPv4" or "IPv6"
	// (what the front page tells the client too).
	Family string
}

// FamilyOf names a's family as the pages and Request say it, "IPv4" or
// "IPv6" (an IPv4-mapped IPv6 address is IPv4: the dual-stack listener's
// view of an IPv4 client).
func FamilyOf(a netip.Addr) string {
	if a.Unmap().Is4() {
		return "IPv4"
	}
	return "IPv6"
}

// Datagram is one datagram the echo server answered.
type Datagram struct {
	At      time.Time
	Remote  netip.AddrPort
	Payload string
}

// Iface is the LAN's end of the veth, inside its namespace.
const Iface = "eth0"

// Start creates the LAN and waits until its servers answer.
func Start(cfg Config) (l *LAN, err error) {
	if cfg.HostNS == "" || cfg.Bridge == "" {
		return nil, errors.New("lan: HostNS and Bridge are required")
	}
	if cfg.NS == "" {
		var b [4]byte
		rand.Read(b[:])
		cfg.NS = "spt-lan-" + hex.EncodeToString(b[:])
	}
	if cfg.LeaseTime == 0 {
		cfg.LeaseTime = 2 * time.Minute
	}
	if cfg.T1 == 0 {
		cfg.T1 = 10 * time.Second
	}
	if cfg.T2 == 0 {
		cfg.T2 = 15 * time.Second
	}
	l = &LAN{cfg: cfg, path: NSPath(cfg.NS), log: &syncbuf.Buffer{}, plan: First, changed: make(chan struct{})}
	l.logw = l.log
	if cfg.Log != nil {
		l.logw = io.MultiWriter(l.log, cfg.Log)
	}
	defer func() {
		if err != nil {
			l.Close()
			l = nil
		}
	}()
	if l.cfg.Dir == "" {
		if l.cfg.Dir, err = os.MkdirTemp("", "spectrum-lan-"); err != nil {
			return l, err
		}
		l.madeDir = true
	}
	if _, err := os.Stat(l.path); err == nil {
		removeNS(cfg.NS)
	}
	if err := ip("netns", "add", cfg.NS); err != nil {
		return l, err
	}
	if err := ip("-n", cfg.HostNS, "link", "show", cfg.Bridge); err != nil {
		if err := ip("-n", cfg.HostNS, "link", "add", cfg.Bridge, "type", "bridge"); err != nil {
			return l, err
		}
		l.madeBr = true
	}
	port := PortName(cfg.Bridge)
	steps := [][]string{
		{"-n", cfg.HostNS, "link", "set", cfg.Bridge, "up"},
		{"-n", cfg.NS, "link", "set", "lo", "up"},
		{"-n", cfg.NS, "link", "add", Iface, "type", "veth", "peer", "name", port, "netns", cfg.HostNS},
	}
	if cfg.MTU != 0 {
		steps = append(steps, []string{"-n", cfg.NS, "link", "set", Iface, "mtu", strconv.Itoa(cfg.MTU)},
			[]string{"-n", cfg.HostNS, "link", "set", port, "mtu", strconv.Itoa(cfg.MTU)})
	}
	steps = append(steps, []string{"-n", cfg.HostNS, "link", "set", port, "master", cfg.Bridge, "up"})
	if cfg.Mode.IPv4() {
		steps = append(steps,
			// The router's address first: it is the primary address,
			// the DHCP server's identity.
			[]string{"-n", cfg.NS, "addr", "add", Router.String() + "/24", "dev", Iface},
			[]string{"-n", cfg.NS, "addr", "add", First.Web.String() + "/24", "dev", Iface},
			[]string{"-n", cfg.NS, "addr", "add", Second.Web.String() + "/24", "dev", Iface},
			[]string{"-n", cfg.NS, "addr", "add", First.DNS.String() + "/24", "dev", Iface})
	}
	if cfg.Mode.IPv6() {
		// Without duplicate address detection: the servers bind to
		// them at once, and the LAN is the only host with them.
		for _, a := range []netip.Addr{Router6, First.Web6, Second.Web6, First.DNS6} {
			steps = append(steps, []string{"-n", cfg.NS, "addr", "add", a.String() + "/64", "dev", Iface, "nodad"})
		}
	}
	steps = append(steps, []string{"-n", cfg.NS, "link", "set", Iface, "up"})
	for _, s := range steps {
		if err := ip(s...); err != nil {
			return l, err
		}
	}
	if err := l.serve(); err != nil {
		return l, err
	}
	if err := l.startDnsmasq(First); err != nil {
		return l, err
	}
	return l, nil
}

// PortName is the name of the LAN's veth end on the bridge (in HostNS):
// the bridge's name and "-lan", cut to the kernel's 15 bytes.
func PortName(bridge string) string {
	n := bridge + "-lan"
	if len(n) > 15 {
		n = n[:15]
	}
	return n
}

// NS is the LAN's network namespace.
func (l *LAN) NS() string { return l.cfg.NS }

// Path is the LAN namespace's bind mount, for Do and setns(2).
func (l *LAN) Path() string { return l.path }

// Mode is the families the LAN speaks.
func (l *LAN) Mode() Mode { return l.cfg.Mode }

// Plan is the numbering served now.
func (l *LAN) Plan() Plan {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.plan
}

// Log is everything the LAN's servers logged so far.
func (l *LAN) Log() string { return l.log.String() }

func (l *LAN) logf(format string, args ...any) {
	fmt.Fprintf(l.logw, "lan: "+format+"\n", args...)
}

// serve opens the capture, the web server, the echo server and the
// throughput receiver inside the namespace and serves them from this
// process.
func (l *LAN) serve() error {
	if err := l.capture(); err != nil {
		return err
	}
	// Each server on both families (one IPv6 socket that takes IPv4
	// too), whatever the Mode: the family a client reaches it by is the
	// network's doing.
	web, err := Listen(l.path, "tcp", fmt.Sprintf(":%d", WebPort))
	if err != nil {
		return fmt.Errorf("lan: web server: %w", err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(l.handle), ReadHeaderTimeout: 30 * time.Second}
	go srv.Serve(web)
	l.servers = append(l.servers, srv)

	// The echo server answers from the address it was asked at: a
	// socket per family, IPv6's told each datagram's destination (the
	// LAN has several addresses, and a client's connected socket takes
	// replies from the one it sent to only).
	echo, err := ListenPacket(l.path, "udp4", fmt.Sprintf(":%d", EchoPort))
	if err != nil {
		return fmt.Errorf("lan: echo server: %w", err)
	}
	go l.echo(echo.ReadFrom, func(b []byte, to net.Addr) { echo.WriteTo(b, to) })
	l.servers = append(l.servers, echo)
	echo6, err := ListenPacket(l.path, "udp6", fmt.Sprintf(":%d", EchoPort))
	if err != nil {
		return fmt.Errorf("lan: echo server: %w", err)
	}
	l.servers = append(l.servers, echo6)
	pc := ipv6.NewPacketConn(echo6)
	if err := pc.SetControlMessage(ipv6.FlagDst, true); err != nil {
		return fmt.Errorf("lan: echo server: %w", err)
	}
	var dst net.IP
	go l.echo(func(b []byte) (int, net.Addr, error) {
		n, cm, from, err := pc.ReadFrom(b)
		dst = nil
		if cm != nil {
			dst = cm.Dst
		}
		return n, from, err
	}, func(b []byte, to net.Addr) { pc.WriteTo(b, &ipv6.ControlMessage{Src: dst}, to) })

	sink, err := Listen(l.path, "tcp", fmt.Sprintf(":%d", SinkPort))
	if err != nil {
		return fmt.Errorf("lan: throughput receiver: %w", err)
	}
	go tput.Serve(sink)
	l.servers = append(l.servers, sink)
	return nil
}

func (l *LAN) handle(w http.ResponseWriter, r *http.Request) {
	remote, _ := netip.ParseAddrPort(r.RemoteAddr)
	remote = netip.AddrPortFrom(remote.Addr().Unmap(), remote.Port())
	family := FamilyOf(remote.Addr())
	l.mu.Lock()
	l.reqs = append(l.reqs, Request{At: time.Now(), Remote: remote, Host: r.Host, Path: r.URL.Path, Family: family})
	l.notifyLocked()
	l.mu.Unlock()
	l.logf("web: %s http://%s%s from %s over %s", r.Method, r.Host, r.URL.Path, remote, family)
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	switch r.URL.Path {
	case "/":
		w.Write([]byte(FrontPageFor(family)))
	case "/whoami":
		fmt.Fprintf(w, whoamiPage, remote.Addr(), family, remote.Addr())
	case "/about":
		w.Write([]byte(l.about()))
	case BigPath:
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Write(bigPage)
	default:
		w.WriteHeader(http.StatusNotFound)
		fmt.Fprintf(w, notFoundPage, r.URL.Path)
	}
}

// echo serves one echo socket: read gets a datagram, reply answers it
// (both called from this goroutine only).
func (l *LAN) echo(read func([]byte) (int, net.Addr, error), reply func([]byte, net.Addr)) {
	buf := make([]byte, 2048)
	for {
		n, from, err := read(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		remote, _ := netip.ParseAddrPort(from.String())
		remote = netip.AddrPortFrom(remote.Addr().Unmap(), remote.Port())
		l.mu.Lock()
		l.grams = append(l.grams, Datagram{At: time.Now(), Remote: remote, Payload: string(buf[:min(n, 64)])})
		l.notifyLocked()
		l.mu.Unlock()
		reply(buf[:n], from)
	}
}

func (l *LAN) notifyLocked() {
	close(l.changed)
	l.changed = make(chan struct{})
}

// Requests returns every web request so far.
func (l *LAN) Requests() []Request {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]Request(nil), l.reqs...)
}

// Datagrams returns every datagram the echo server got so far, in the
// order it read them.
func (l *LAN) Datagrams() []Datagram {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]Datagram(nil), l.grams...)
}

// WaitDatagram waits for a datagram (already received or still to come)
// for which match is true, and returns it with every datagram received
// before it.
func (l *LAN) WaitDatagram(ctx context.Context, match func(Datagram) bool) (Datagram, []Datagram, error) {
	return waitFor(ctx, l, func() []Datagram { return l.grams }, match, "a datagram")
}

// WaitRequest waits for a web request (already answered or still to come)
// for which match is true.
func (l *LAN) WaitRequest(ctx context.Context, match func(Request) bool) (Request, error) {
	r, _, err := waitFor(ctx, l, func() []Request { return l.reqs }, match, "a web request")
	return r, err
}

// waitFor waits until one of what list returns (under l.mu) matches, and
// returns it with a copy of what came before it; l.changed is closed and
// replaced whenever any list grows.
func waitFor[T any](ctx context.Context, l *LAN, list func() []T, match func(T) bool, what string) (T, []T, error) {
	for {
		l.mu.Lock()
		for i, x := range list() {
			if match(x) {
				before := append([]T(nil), list()[:i]...)
				l.mu.Unlock()
				return x, before, nil
			}
		}
		changed := l.changed
		l.mu.Unlock()
		select {
		case <-ctx.Done():
			var zero T
			return zero, nil, fmt.Errorf("lan: waiting for %s: %w", what, ctx.Err())
		case <-changed:
		}
	}
}

// Renumber serves p from now on: the DNS server moves to p.DNS and
// p.DNS6 (its old addresses are removed, so a client still using one gets
// no answer) and answers p.Web and p.Web6 for WebName; the DHCP server
// hands out p's pool and resolver, and refuses (DHCPNAK) a lease outside
// it, so a client renewing its old lease gets a new one at its next
// renewal (Config.T1); the router advertisements name the new resolver
// from the new server's first one, and DHCPv6 hands out p's.
func (l *LAN) Renumber(p Plan) error {
	old := l.Plan()
	var errs []error
	for _, d := range []*dnsmasq{l.dhcp, l.dns} {
		if d != nil {
			errs = append(errs, d.stop())
		}
	}
	l.dhcp, l.dns = nil, nil
	if l.cfg.Mode.IPv4() && old.DNS != p.DNS {
		errs = append(errs, ip("-n", l.cfg.NS, "addr", "del", old.DNS.String()+"/24", "dev", Iface),
			ip("-n", l.cfg.NS, "addr", "add", p.DNS.String()+"/24", "dev", Iface))
	}
	if l.cfg.Mode.IPv6() && old.DNS6 != p.DNS6 {
		errs = append(errs, ip("-n", l.cfg.NS, "addr", "del", old.DNS6.String()+"/64", "dev", Iface),
			ip("-n", l.cfg.NS, "addr", "add", p.DNS6.String()+"/64", "dev", Iface, "nodad"))
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	l.mu.Lock()
	l.plan = p
	l.mu.Unlock()
	l.logf("renumbered (%v): pool %v-%v, DNS %v, %s %v; pool %v-%v, DNS %v, %s %v", l.cfg.Mode,
		p.RangeStart, p.RangeEnd, p.DNS, WebName, p.Web, p.Range6Start, p.Range6End, p.DNS6, WebName, p.Web6)
	return l.startDnsmasq(p)
}

// Close stops the servers and removes the namespace (and with it the
// veth) and the bridge if Start created it.
func (l *LAN) Close() error {
	var errs []error
	for _, d := range []*dnsmasq{l.dhcp, l.dns} {
		if d != nil {
			errs = append(errs, d.stop())
		}
	}
	l.dhcp, l.dns = nil, nil
	for _, s := range l.servers {
		s.Close()
	}
	l.servers = nil
	if _, err := os.Stat(l.path); err == nil {
		errs = append(errs, removeNS(l.cfg.NS))
	}
	if l.madeBr {
		// The bridge may be gone with spectrumd's namespace already.
		if ip("-n", l.cfg.HostNS, "link", "show", l.cfg.Bridge) == nil {
			errs = append(errs, ip("-n", l.cfg.HostNS, "link", "del", l.cfg.Bridge))
		}
		l.madeBr = false
	}
	if l.madeDir {
		errs = append(errs, os.RemoveAll(l.cfg.Dir))
		l.madeDir = false
	}
	return errors.Join(errs...)
}

// removeNS kills whatever still runs in namespace name (a dnsmasq of a run
// that was killed) and deletes it.
func removeNS(name string) error {
	if out, err := exec.Command("ip", "netns", "pids", name).Output(); err == nil {
		for _, f := range strings.Fields(string(out)) {
			if pid, err := strconv.Atoi(f); err == nil && pid != os.Getpid() {
				syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	}
	return ip("netns", "del", name)
}

func ip(args ...string) error {
	var stderr bytes.Buffer
	cmd := exec.Command("ip", args...)
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, bytes.TrimSpace(stderr.Bytes()))
	}
	return nil
}

// leaseFile is where the DHCP instance of plan p keeps its leases: a new
// file per plan, so a renumbered server remembers no old lease.
func (l *LAN) leaseFile(p Plan) string {
	return filepath.Join(l.cfg.Dir, "leases-"+p.RangeStart.String())
}
