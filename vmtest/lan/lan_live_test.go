package lan_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/insomniacslk/dhcp/dhcpv4/nclient4"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"spectrum-os.org/netcfg/internal/nstest"
	"spectrum-os.org/netcfg/internal/syncbuf"
	"spectrum-os.org/netcfg/vmtest/dhcpc"
	"spectrum-os.org/netcfg/vmtest/lan"
	"spectrum-os.org/netcfg/vmtest/tput"
)

// client is a host on the LAN's bridge in a namespace of its own, configured
// by the DHCP client the guests run (package dhcpc), natively.
type client struct {
	ns      *nstest.NS
	leases  chan dhcpc.Lease
	leases6 chan dhcpc.Lease6
	resolv  string
	log     *syncbuf.Buffer // the client's log lines
}

const clientIface = "up0"

func newClient(t *testing.T, ctx context.Context, host *nstest.NS, bridge string) *client {
	t.Helper()
	return newClientWith(t, ctx, host, bridge, clientOpts{})
}

// clientOpts are what newClientWith varies.
type clientOpts struct {
	// wrap wraps each DHCP socket opened (given the count of sockets so
	// far).
	wrap func(n int, c net.PacketConn) net.PacketConn
	// timeout is the client's exchange timeout (zero: its default).
	timeout time.Duration
	// ipv6 runs the client's IPv6 side too.
	ipv6 bool
	// forward turns IPv6 forwarding on in the client's namespace first,
	// as on a provider that routes.
	forward bool
}

// newClientWith is newClient with opts.
func newClientWith(t *testing.T, ctx context.Context, host *nstest.NS, bridge string, opts clientOpts) *client {
	t.Helper()
	c := &client{ns: nstest.New(t), leases: make(chan dhcpc.Lease, 16), leases6: make(chan dhcpc.Lease6, 16),
		resolv: filepath.Join(t.TempDir(), "resolv.conf"), log: &syncbuf.Buffer{}}
	host.IP("link", "add", "up0-br", "type", "veth", "peer", "name", clientIface, "netns", c.ns.Name)
	host.IP("link", "set", "up0-br", "master", bridge, "up")
	nsh, err := netns.GetFromPath(c.ns.Path())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nsh.Close() })
	h, err := netlink.NewHandleAt(nsh, unix.NETLINK_ROUTE)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	if opts.forward {
		if err := lan.Do(c.ns.Path(), func() error {
			return os.WriteFile("/proc/sys/net/ipv6/conf/all/forwarding", []byte("1"), 0o644)
		}); err != nil {
			t.Fatal(err)
		}
	}
	opened := 0
	open := func(iface string) (conn net.PacketConn, err error) {
		opened++
		err = lan.Do(c.ns.Path(), func() (err error) {
			conn, err = nclient4.NewRawUDPConn(iface, nclient4.ClientPort)
			return err
		})
		if err == nil && opts.wrap != nil {
			conn = opts.wrap(opened, conn)
		}
		return conn, err
	}
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		dhcpc.Run(ctx, dhcpc.Config{Iface: clientIface, Handle: h, Open: open, ResolvConf: c.resolv,
			Log: func(format string, args ...any) {
				t.Logf(format, args...)
				fmt.Fprintf(c.log, format+"\n", args...)
			}, Timeout: opts.timeout, OnLease: func(l dhcpc.Lease) { c.leases <- l },
			IPv6: opts.ipv6, OnLease6: func(l dhcpc.Lease6) {
				select {
				case c.leases6 <- l:
				case <-ctx.Done():
				}
			},
			Do: func(f func() error) error { return lan.Do(c.ns.Path(), f) }})
	}()
	t.Cleanup(func() { cancel(); wg.Wait() })
	return c
}

// lease waits for the next lease applied.
func (c *client) lease(t *testing.T, ctx context.Context) dhcpc.Lease {
	t.Helper()
	select {
	case l := <-c.leases:
		return l
	case <-ctx.Done():
		t.Fatalf("no DHCP lease: %v", ctx.Err())
		return dhcpc.Lease{}
	}
}

// state reads the client NIC's IPv4 addresses and routes back with ip -j.
func (c *client) state(t *testing.T) (addrs, routes []string) {
	t.Helper()
	var as []struct {
		AddrInfo []struct {
			Family, Local string
			Prefixlen     int
		} `json:"addr_info"`
	}
	if err := json.Unmarshal(c.ns.IP("-j", "-4", "addr", "show", "dev", clientIface), &as); err != nil {
		t.Fatal(err)
	}
	for _, a := range as {
		for _, i := range a.AddrInfo {
			addrs = append(addrs, netip.PrefixFrom(netip.MustParseAddr(i.Local), i.Prefixlen).String())
		}
	}
	var rs []struct{ Dst, Gateway, Dev string }
	if err := json.Unmarshal(c.ns.IP("-j", "-4", "route", "show"), &rs); err != nil {
		t.Fatal(err)
	}
	for _, r := range rs {
		routes = append(routes, strings.TrimSpace(r.Dst+" "+r.Gateway+" "+r.Dev))
	}
	return addrs, routes
}

// httpClient fetches from inside the client's namespace, resolving through
// dns.
func (c *client) httpClient(dns netip.Addr) *http.Client {
	r := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		return lan.Dial(c.ns.Path(), network, netip.AddrPortFrom(dns, 53).String())
	}}
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			host, port, err := net.SplitHostPort(addr)
			if err != nil {
				return nil, err
			}
			ips, err := r.LookupNetIP(ctx, "ip4", host)
			if err != nil {
				return nil, err
			}
			return lan.Dial(c.ns.Path(), network, net.JoinHostPort(ips[0].String(), port))
		}}}
}

func (c *client) lookup(ctx context.Context, dns netip.Addr, name string) ([]netip.Addr, error) {
	r := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		return lan.Dial(c.ns.Path(), network, netip.AddrPortFrom(dns, 53).String())
	}}
	return r.LookupNetIP(ctx, "ip4", name)
}

// TestLAN starts the LAN next to a bridge, as spectrumd's namespace has it,
// and uses it from a host on that bridge with the guests' DHCP client: a
// lease from the first pool (address, default route, resolv.conf, read back
// with ip -j), the name resolved by the LAN's DNS, the front page fetched by
// name, echo and throughput; no route from the LAN to 100.64.0.0/16; then a
// Renumber: the client gets a lease from the new pool with the new
// resolver at its next renewal, the old resolver is gone and the name
// resolves to the new web address. Close leaves no namespace, bridge or
// dnsmasq.
func TestLAN(t *testing.T) {
	nstest.RequirePrivileged(t)
	if _, err := lan.Dnsmasq(); err != nil {
		if os.Getenv("CI") != "" || os.Geteuid() == 0 {
			t.Fatal(err)
		}
		t.Skipf("skipping (runs in CI and as root): %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	host := nstest.New(t)
	const bridge = "lanbr0"
	l, err := lan.Start(lan.Config{HostNS: host.Name, Bridge: bridge})
	if err != nil {
		t.Fatal(err)
	}
	closed := false
	t.Cleanup(func() {
		if !closed {
			l.Close()
		}
		if t.Failed() {
			t.Logf("LAN log:\n%s", l.Log())
		}
	})
	c := newClient(t, ctx, host, bridge)

	first := c.lease(t, ctx)
	if !inPool(first.Addr.Addr(), lan.First) || first.Addr.Bits() != 24 || first.Router != lan.Router ||
		!slices.Equal(first.DNS, []netip.Addr{lan.First.DNS}) || first.Server != lan.Router {
		t.Fatalf("first lease %v, want an address of %v-%v/24, router and server %v, DNS %v",
			first, lan.First.RangeStart, lan.First.RangeEnd, lan.Router, lan.First.DNS)
	}
	addrs, routes := c.state(t)
	if diff := cmp.Diff([]string{first.Addr.String()}, addrs); diff != "" {
		t.Errorf("addresses (-want +got):\n%s", diff)
	}
	wantRoutes := []string{"default " + lan.Router.String() + " " + clientIface, "203.0.113.0/24  " + clientIface}
	if diff := cmp.Diff(wantRoutes, routes); diff != "" {
		t.Errorf("routes (-want +got):\n%s", diff)
	}
	checkResolv(t, c.resolv, lan.First.DNS)

	got, err := c.lookup(ctx, lan.First.DNS, lan.WebName)
	if err != nil || !slices.Equal(got, []netip.Addr{lan.First.Web}) {
		t.Errorf("%s via %v = %v, %v; want %v", lan.WebName, lan.First.DNS, got, err, lan.First.Web)
	}
	if _, err := c.lookup(ctx, lan.First.DNS, "nothing.lan.test"); err == nil {
		t.Errorf("nothing.lan.test resolved; want NXDOMAIN")
	}
	body := get(t, c.httpClient(lan.First.DNS), "http://"+lan.WebName+"/")
	if body != lan.FrontPage {
		t.Errorf("front page by name: %q, want %q", body, lan.FrontPage)
	}
	reqs := l.Requests()
	if len(reqs) != 1 || reqs[0].Remote.Addr() != first.Addr.Addr() || reqs[0].Host != lan.WebName || reqs[0].Path != "/" {
		t.Errorf("web requests %+v, want one for / from %v", reqs, first.Addr.Addr())
	}

	// Echo and throughput from the client.
	conn, err := lan.Dial(c.ns.Path(), "udp4", netip.AddrPortFrom(lan.Router, lan.EchoPort).String())
	if err != nil {
		t.Fatal(err)
	}
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	conn.Write([]byte("hello lan"))
	buf := make([]byte, 64)
	if n, err := conn.Read(buf); err != nil || string(buf[:n]) != "hello lan" {
		t.Errorf("echo: %q, %v", buf[:n], err)
	}
	conn.Close()
	if g, _, err := l.WaitDatagram(ctx, func(g lan.Datagram) bool { return g.Payload == "hello lan" }); err != nil || g.Remote.Addr() != first.Addr.Addr() {
		t.Errorf("echo server's record %+v, %v; want from %v", g, err, first.Addr.Addr())
	}
	p, _, err := l.WaitPacket(ctx, func(p lan.Packet) bool { return p.Proto == 17 && p.Payload == "hello lan" })
	if want := (lan.Packet{Src: first.Addr.Addr(), Dst: lan.Router, Proto: 17, SrcPort: p.SrcPort, DstPort: lan.EchoPort, Payload: "hello lan"}); err != nil || !cmp.Equal(want, p, cmpopts.IgnoreFields(lan.Packet{}, "At"), cmp.Comparer(func(a, b netip.Addr) bool { return a == b })) {
		t.Errorf("captured %+v, %v; want %+v", p, err, want)
	}
	for _, p := range l.Packets() {
		if p.Src.Is4() && !lan.Prefix.Contains(p.Src) && p.Src.IsValid() && !p.Src.IsUnspecified() {
			t.Errorf("captured a packet from outside the LAN: %+v", p)
		}
		if p.Src == lan.Router {
			t.Errorf("captured a packet the LAN sent: %+v", p)
		}
	}
	var res tput.Result
	if err := lan.Do(c.ns.Path(), func() (err error) {
		res, err = tput.Send(netip.AddrPortFrom(lan.Router, lan.SinkPort).String(), 200*time.Millisecond, 10*time.Second)
		return err
	}); err != nil || res.Bytes == 0 {
		t.Errorf("throughput: %+v, %v", res, err)
	}
	t.Logf("throughput host to LAN (veth, bridge, veth): %.0f Mbit/s", res.BitsPerSecond()/1e6)

	// The LAN reaches nothing but itself.
	if out, err := exec.Command("ip", "-n", l.NS(), "route", "get", "100.64.1.2").CombinedOutput(); err == nil {
		t.Errorf("the LAN has a route to 100.64.1.2: %s", out)
	}

	if err := l.Renumber(lan.Second); err != nil {
		t.Fatal(err)
	}
	var second dhcpc.Lease
	for second = c.lease(t, ctx); !inPool(second.Addr.Addr(), lan.Second); second = c.lease(t, ctx) {
		t.Logf("lease after Renumber still from the old plan: %v", second)
	}
	if !slices.Equal(second.DNS, []netip.Addr{lan.Second.DNS}) || second.Router != lan.Router {
		t.Errorf("lease after Renumber %v, want DNS %v and router %v", second, lan.Second.DNS, lan.Router)
	}
	addrs, routes = c.state(t)
	if diff := cmp.Diff([]string{second.Addr.String()}, addrs); diff != "" {
		t.Errorf("addresses after Renumber (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(wantRoutes, routes); diff != "" {
		t.Errorf("routes after Renumber (-want +got):\n%s", diff)
	}
	checkResolv(t, c.resolv, lan.Second.DNS)
	got, err = c.lookup(ctx, lan.Second.DNS, lan.WebName)
	if err != nil || !slices.Equal(got, []netip.Addr{lan.Second.Web}) {
		t.Errorf("%s via %v after Renumber = %v, %v; want %v", lan.WebName, lan.Second.DNS, got, err, lan.Second.Web)
	}
	short, cancelShort := context.WithTimeout(ctx, 3*time.Second)
	if got, err := c.lookup(short, lan.First.DNS, lan.WebName); err == nil {
		t.Errorf("the old resolver %v still answers after Renumber: %v", lan.First.DNS, got)
	}
	cancelShort()
	if body := get(t, c.httpClient(lan.Second.DNS), "http://"+lan.WebName+"/"); body != lan.FrontPage {
		t.Errorf("front page by name after Renumber: %q", body)
	}

	closed = true
	if err := l.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if _, err := os.Stat(lan.NSPath(l.NS())); err == nil {
		t.Errorf("namespace %s left after Close", l.NS())
	}
	if _, err := host.TryIP("link", "show", bridge); err == nil {
		t.Errorf("bridge %s left after Close", bridge)
	}
	if out, _ := exec.Command("pgrep", "-f", "netns exec "+l.NS()).Output(); len(out) != 0 {
		t.Errorf("processes left after Close: %s", out)
	}
}

// TestDHCPClientReopens gives the DHCP client a first socket whose first
// read fails, as a packet socket bound while its NIC is down does (it
// starts with a pending ENETDOWN): that ends nclient4's receive loop for
// good, so every exchange on it times out, as the first versions of this
// client did for ever. The client must open a new socket after failures in
// a row and get a lease.
func TestDHCPClientReopens(t *testing.T) {
	nstest.RequirePrivileged(t)
	if _, err := lan.Dnsmasq(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	host := nstest.New(t)
	const bridge = "lanbr0"
	l, err := lan.Start(lan.Config{HostNS: host.Name, Bridge: bridge})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	c := newClientWith(t, ctx, host, bridge, clientOpts{wrap: func(n int, c net.PacketConn) net.PacketConn {
		if n == 1 {
			return &failFirstRead{PacketConn: c}
		}
		return c
	}, timeout: 2 * time.Second})
	if got := c.lease(t, ctx); !inPool(got.Addr.Addr(), lan.First) {
		t.Errorf("lease %v, want one of the first pool", got)
	}
}

// failFirstRead fails its first read with ENETDOWN.
type failFirstRead struct {
	net.PacketConn
	failed bool
}

func (c *failFirstRead) ReadFrom(b []byte) (int, net.Addr, error) {
	if !c.failed {
		c.failed = true
		return 0, nil, syscall.ENETDOWN
	}
	return c.PacketConn.ReadFrom(b)
}

func inPool(a netip.Addr, p lan.Plan) bool {
	return a.Compare(p.RangeStart) >= 0 && a.Compare(p.RangeEnd) <= 0
}

func checkResolv(t *testing.T, path string, dns netip.Addr) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) == 2 && f[0] == "nameserver" {
			got = append(got, f[1])
		}
	}
	if diff := cmp.Diff([]string{dns.String()}, got); diff != "" {
		t.Errorf("resolv.conf nameservers (-want +got):\n%s\n%s", diff, b)
	}
}

func get(t *testing.T, c *http.Client, url string) string {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Errorf("GET %s: %v", url, err)
		return ""
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != 200 {
		t.Errorf("GET %s: %s, %v", url, resp.Status, err)
	}
	return string(b)
}

func readFile(path string) ([]byte, error) { return os.ReadFile(path) }
