// Package lan is the simulated LAN of the VM tests and of `make run`: a
// network namespace of its own, joined by a veth to a bridge in spectrumd's
// namespace (the bridge a VM's uplinks/net/<bridge> entry names), with a
// DHCP server and a DNS server (Debian's dnsmasq, one instance each) and a
// web server, a UDP echo server and a throughput receiver (served by this
// process on sockets opened inside the namespace).
//
// Everything is on 203.0.113.0/24 (TEST-NET-3, RFC 5737), and the LAN's
// namespace has no route beyond it, in particular none to the VMs'
// 100.64.0.0/16: a reply reaches a client VM only through its provider's
// NAT. The DNS server forwards nothing (no upstream), and nothing here sends
// to any host outside the namespaces it and the test created.
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

	"spectrum-os.org/netcfg/internal/syncbuf"
	"spectrum-os.org/netcfg/vmtest/tput"
)

// The LAN's fixed addresses.
var (
	// Prefix is the LAN's subnet.
	Prefix = netip.MustParsePrefix("203.0.113.0/24")
	// Router is the LAN's gateway (the lease's router option) and the DHCP
	// server's address (its server identifier), the same in every Plan.
	Router = netip.MustParseAddr("203.0.113.1")
)

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

// Plan is one numbering of the LAN: what the DHCP server hands out and where
// the DNS server is and what it answers.
type Plan struct {
	RangeStart, RangeEnd netip.Addr // the DHCP pool
	DNS                  netip.Addr // the DNS server's address, handed out as the lease's resolver
	Web                  netip.Addr // what WebName resolves to
}

// First is the numbering Start serves; Second is another one for
// Renumber: a new pool, a resolver at a new address (the old one goes
// away) and the web server's name on a new address (both web addresses
// answer all along, so a fetch by name shows which answer it got).
var (
	First = Plan{RangeStart: netip.MustParseAddr("203.0.113.100"), RangeEnd: netip.MustParseAddr("203.0.113.149"),
		DNS: netip.MustParseAddr("203.0.113.53"), Web: netip.MustParseAddr("203.0.113.80")}
	Second = Plan{RangeStart: netip.MustParseAddr("203.0.113.150"), RangeEnd: netip.MustParseAddr("203.0.113.199"),
		DNS: netip.MustParseAddr("203.0.113.54"), Web: netip.MustParseAddr("203.0.113.81")}
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
		{"-n", cfg.HostNS, "link", "set", port, "master", cfg.Bridge, "up"},
		// The router's address first: it is the primary address, the
		// DHCP server's identity.
		{"-n", cfg.NS, "addr", "add", Router.String() + "/24", "dev", Iface},
		{"-n", cfg.NS, "addr", "add", First.Web.String() + "/24", "dev", Iface},
		{"-n", cfg.NS, "addr", "add", Second.Web.String() + "/24", "dev", Iface},
		{"-n", cfg.NS, "addr", "add", First.DNS.String() + "/24", "dev", Iface},
		{"-n", cfg.NS, "link", "set", Iface, "up"},
	}
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
	web, err := Listen(l.path, "tcp4", fmt.Sprintf(":%d", WebPort))
	if err != nil {
		return fmt.Errorf("lan: web server: %w", err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(l.handle), ReadHeaderTimeout: 30 * time.Second}
	go srv.Serve(web)
	l.servers = append(l.servers, srv)

	echo, err := ListenPacket(l.path, "udp4", fmt.Sprintf(":%d", EchoPort))
	if err != nil {
		return fmt.Errorf("lan: echo server: %w", err)
	}
	go l.echo(echo)
	l.servers = append(l.servers, echo)

	sink, err := Listen(l.path, "tcp4", fmt.Sprintf(":%d", SinkPort))
	if err != nil {
		return fmt.Errorf("lan: throughput receiver: %w", err)
	}
	go tput.Serve(sink)
	l.servers = append(l.servers, sink)
	return nil
}

func (l *LAN) handle(w http.ResponseWriter, r *http.Request) {
	remote, _ := netip.ParseAddrPort(r.RemoteAddr)
	l.mu.Lock()
	l.reqs = append(l.reqs, Request{At: time.Now(), Remote: remote, Host: r.Host, Path: r.URL.Path})
	l.notifyLocked()
	l.mu.Unlock()
	l.logf("web: %s http://%s%s from %s", r.Method, r.Host, r.URL.Path, r.RemoteAddr)
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	switch r.URL.Path {
	case "/":
		w.Write([]byte(FrontPage))
	case "/whoami":
		fmt.Fprintf(w, whoamiPage, remote.Addr(), remote.Addr())
	case "/about":
		p := l.Plan()
		fmt.Fprintf(w, aboutPage, Prefix, Router, Router, p.RangeStart, p.RangeEnd, p.DNS, WebName, p.Web)
	default:
		w.WriteHeader(http.StatusNotFound)
		fmt.Fprintf(w, notFoundPage, r.URL.Path)
	}
}

func (l *LAN) echo(c net.PacketConn) {
	buf := make([]byte, 2048)
	for {
		n, from, err := c.ReadFrom(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		remote, _ := netip.ParseAddrPort(from.String())
		l.mu.Lock()
		l.grams = append(l.grams, Datagram{At: time.Now(), Remote: remote, Payload: string(buf[:min(n, 64)])})
		l.notifyLocked()
		l.mu.Unlock()
		c.WriteTo(buf[:n], from)
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

// Renumber serves p from now on: the DNS server moves to p.DNS (its old
// address is removed, so a client still using it gets no answer) and
// answers p.Web for WebName; the DHCP server hands out p's pool and
// resolver, and refuses (DHCPNAK) a lease outside it, so a client renewing
// its old lease gets a new one at its next renewal (Config.T1).
func (l *LAN) Renumber(p Plan) error {
	old := l.Plan()
	var errs []error
	for _, d := range []*dnsmasq{l.dhcp, l.dns} {
		if d != nil {
			errs = append(errs, d.stop())
		}
	}
	l.dhcp, l.dns = nil, nil
	if old.DNS != p.DNS {
		errs = append(errs, ip("-n", l.cfg.NS, "addr", "del", old.DNS.String()+"/24", "dev", Iface),
			ip("-n", l.cfg.NS, "addr", "add", p.DNS.String()+"/24", "dev", Iface))
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	l.mu.Lock()
	l.plan = p
	l.mu.Unlock()
	l.logf("renumbered: pool %v-%v, DNS %v, %s %v", p.RangeStart, p.RangeEnd, p.DNS, WebName, p.Web)
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
