package vmtest

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"spectrum-os.org/netcfg/internal/mac"
	"spectrum-os.org/netcfg/vmtest/lan"
	"spectrum-os.org/netcfg/vmtest/vm"
)

// Mirrors of the test init's forged packets (vmtest/cmd/testinit, spoof).
const (
	spoofPayload = "spectrum-spoof"
	spoofSeq     = 0x53504f46
)

// clients is the shared address space the clients' 100.64.0.0/16 (and the
// virtual resolver) are in: nothing from it may reach the LAN un-NATed.
var clients = netip.MustParsePrefix("100.64.0.0/10")

// TestRouter is the provider's router end to end (issue 10, section 3):
// netvm has an uplink on the LAN (uplinks/net/lan0, IPv4 only, at MTU
// 1280), configures it by DHCP (the test init's client) and runs
// `spectrum-netcfg -watch -route`; two clients behind it.
//
//   - client1's resolv.conf names the two virtual resolvers and no other,
//     and each answers over the IPv4-only uplink; client1 (with Debian's
//     lynx) fetches the LAN's page by name (DNS through netvm's virtual
//     resolver) with lynx and Go's client, and by
//     address, and downloads the 1 MiB page; a datagram too big for the
//     uplink gets it netvm's ICMP fragmentation needed (its kernel learns
//     the path's MTU), and every TCP SYN that reached the LAN has an MSS
//     that fits its MTU; its IPv6 connection to the LAN's IPv6 address
//     fails at once; the LAN sees only netvm's address (issue 18: an
//     IPv4-only uplink).
//   - client2 cannot reach client1, even with an explicit route via its
//     gateway, over IPv4 or IPv6; what it forges (another client's
//     source, an outside one, UDP and TCP SYNs) never reaches the LAN
//     (the LAN's capture, up to the barrier datagram sent after them).
//   - client2 restarted as a hostile client (hostileClient): it reaches
//     no service of netvm's and its Router Advertisement changes nothing.
//   - a new lease on the uplink (the LAN renumbered: new pool, resolver
//     and answer): client1 resolves and fetches again, the new answer,
//     without a restart.
//   - netvm stopped and started: client1 fetches again without a restart
//     (the reference system's own integration test); then client1
//     restarted fetches again.
func TestRouter(t *testing.T) {
	e := newEnv(t, 12*time.Minute)
	start := time.Now()
	const mtu = 1280
	l := e.lanConfig(lan.Config{MTU: mtu})
	e.spec(vm.Spec{Name: "netvm", Uplinks: []string{lanBridge}, Cmdline: "spectrum.watch spectrum.route"})
	e.spec(vm.Spec{Name: "client1", Providers: []string{"netvm"}, Lynx: true})
	e.vm("client2", []string{"netvm"}, "")
	d := e.serve()
	id1, id2 := d.LinkID(t, "client1", "netvm"), d.LinkID(t, "client2", "netvm")
	addr1, addr2 := id1.ClientAddr().String(), id2.ClientAddr().String()
	addr1v6 := id1.ClientAddr6().String()
	ctx := e.ctx
	const outside = "198.51.100.7" // TEST-NET-2: nobody's address here
	big := webURL(lan.First.Web, lan.BigPath)
	netvmTest := "dhcp,fetch:" + webByName + ",listen:" + servicePort + ",ip6watch,serve"
	e.setTest("netvm", netvmTest)
	e.setTest("client1", "resolvconf,resolve:"+lan.WebName+"@"+vm.Resolver+",resolve:"+lan.WebName+"@"+vm.Resolver6+
		",lynx:"+webByName+",fetch:"+webByName+",fetch:"+webByAddr+",fetch:"+big+",pmtu:"+lan.First.Web.String()+"/1500,noconnect:"+lan.First.Web6.String()+"/80,fetchwatch:"+webByName+",serve")
	e.setTest("client2", fmt.Sprintf("fetch:%s,noreach:%s,noreach:%s,spoof:%s>%s,spoof:%s>%s,serve",
		webByName, addr1, addr1v6, addr1, lan.Router, outside, lan.Router))

	c1 := d.Start(t, "client1")
	firstC1 := c1
	netvm := d.Proc("netvm")
	c2 := d.Start(t, "client2")

	// netvm's own lease and fetch: its uplink works before anything is
	// routed through it.
	up1, _ := lease(t, ctx, netvm, "netvm's first lease", func(a netip.Prefix, dns string) bool {
		return inPool(a.Addr(), lan.First) && a.Bits() == 24 && dns == lan.First.DNS.String()
	})
	ok(t, ctx, netvm, "dhcp ok n=1")
	checkPage(t, ok(t, ctx, netvm, "fetch "+webByName+" ok"), lan.First.Web)

	if e := ok(t, ctx, c1, "resolvconf "); vm.Field(e, "nameservers") != vm.Resolver+","+vm.Resolver6 {
		t.Errorf("client1: %s; want its two virtual resolvers, %s and %s, and no other", e, vm.Resolver, vm.Resolver6)
	}
	for _, r := range []string{vm.Resolver, vm.Resolver6} {
		if e := ok(t, ctx, c1, "resolve "+lan.WebName+"@"+r+" ok"); vm.Field(e, "addrs") != lan.First.Web.String() {
			t.Errorf("client1: %s; want addrs=%v through %s", e, lan.First.Web, r)
		}
	}
	ok(t, ctx, c1, "lynx "+webByName+" ok")
	if page := lynxPage(c1, webByName); !strings.Contains(page, lan.PageFamily("IPv4")) {
		t.Errorf("lynx -dump %s shows no %q:\n%s", webByName, lan.PageFamily("IPv4"), page)
	}
	checkPage(t, ok(t, ctx, c1, "fetch "+webByName+" ok"), lan.First.Web)
	checkPage(t, ok(t, ctx, c1, "fetch "+webByAddr+" ok"), lan.First.Web)
	if e := ok(t, ctx, c1, "fetch "+big+" ok"); vm.Field(e, "bytes") != strconv.Itoa(lan.BigSize) || vm.Field(e, "sha256") != lan.BigSum() {
		t.Errorf("client1 at MTU %d: %s; want the %d bytes of sha256 %s", mtu, e, lan.BigSize, lan.BigSum())
	}
	if e := ok(t, ctx, c1, "pmtu "+lan.First.Web.String()+"/1500 ok"); vm.Field(e, "mtu") != strconv.Itoa(mtu) {
		t.Errorf("client1: %s; want mtu=%d, netvm's uplink's (its ICMP fragmentation needed reached client1)", e, mtu)
	}
	checkMSS(t, l, mtu)
	// IPv6 goes nowhere on an IPv4-only uplink, and says so at once: a
	// client never waits for a connection's timeout before its IPv4.
	if e := ok(t, ctx, c1, "noconnect "+lan.First.Web6.String()+"/80 "); vm.Field(e, "err") == "timeout" {
		t.Errorf("client1: %s; want a fast failure (netvm has no IPv6 route: ICMPv6 unreachable)", e)
	}
	checkPage(t, ok(t, ctx, c1, "fetchwatch "+webByName+" up n=1 "), lan.First.Web)
	checkPage(t, ok(t, ctx, c2, "fetch "+webByName+" ok"), lan.First.Web)
	// The LAN saw the clients' requests from netvm's uplink address only,
	// and their DNS queries too (dnsmasq logs each with its source).
	for _, r := range l.Requests() {
		if r.Remote.Addr() != up1.Addr() {
			t.Errorf("the LAN's web server saw a request from %v, want only netvm's %v: %+v", r.Remote, up1.Addr(), r)
		}
	}
	if !strings.Contains(l.Log(), "query[A] "+lan.WebName+" from "+up1.Addr().String()) {
		t.Errorf("the LAN's DNS server logged no query for %s from netvm's %v", lan.WebName, up1.Addr())
	}
	if t.Failed() {
		t.FailNow()
	}

	t.Run("isolation", func(t *testing.T) {
		e := ok(t, ctx, c2, "noreach "+addr1+" route via ")
		if gw := id2.Gateway().String(); !strings.Contains(e, "via "+gw+" ") {
			t.Errorf("client2's explicit route: %s, want via its gateway %s", e, gw)
		}
		ok(t, ctx, c2, "noreach "+addr1+" ok")
		e = ok(t, ctx, c2, "noreach "+addr1v6+" route via ")
		if gw := mac.LinkLocalGateway.String(); !strings.Contains(e, "via "+gw+" ") {
			t.Errorf("client2's explicit route: %s, want via its gateway %s", e, gw)
		}
		ok(t, ctx, c2, "noreach "+addr1v6+" ok")
	})
	t.Run("spoofing", func(t *testing.T) {
		checkForged(t, ctx, l, c2, lan.Router, addr1, outside)
	})
	t.Run("hostile client", func(t *testing.T) {
		hostileClient(t, e, d, netvm, id1, id2, up1.Addr())
		c2 = d.Proc("client2")
	})
	// Nothing from the clients' space reached the LAN un-NATed.
	for _, p := range l.Packets() {
		if clients.Contains(p.Src) {
			t.Errorf("the LAN received a packet from a client's address: %+v", p)
		}
	}
	if t.Failed() {
		t.FailNow()
	}

	t.Run("new lease", func(t *testing.T) {
		if err := l.Renumber(lan.Second); err != nil {
			t.Fatal(err)
		}
		lease(t, ctx, netvm, "netvm's lease from the new pool", func(a netip.Prefix, dns string) bool {
			return inPool(a.Addr(), lan.Second) && dns == lan.Second.DNS.String()
		})
		// The name now resolves to the new web address, which only the
		// new resolver answers: client1 followed netvm's new lease.
		l := c1.Wait(t, ctx, "fetchwatch "+webByName+" up n=2 ")
		e, _ := vm.Event(l.Text)
		checkPage(t, e, lan.Second.Web)
	})
	if t.Failed() {
		t.FailNow()
	}

	t.Run("provider restart", func(t *testing.T) {
		d.Stop(t, "netvm")
		c1.Wait(t, ctx, "fetchwatch "+webByName+" down n=2 ")
		netvm = d.Start(t, "netvm")
		lease(t, ctx, netvm, "netvm's lease after its restart", func(a netip.Prefix, dns string) bool {
			return inPool(a.Addr(), lan.Second)
		})
		l := c1.Wait(t, ctx, "fetchwatch "+webByName+" up n=3 ")
		e, _ := vm.Event(l.Text)
		checkPage(t, e, lan.Second.Web)
		if d.Proc("client1") != c1 {
			t.Errorf("client1 was restarted")
		}
	})
	if t.Failed() {
		t.FailNow()
	}

	t.Run("client restart", func(t *testing.T) {
		d.Stop(t, "client1")
		e.setTest("client1", "fetch:"+webByName+",serve")
		c1 = d.Start(t, "client1")
		checkPage(t, ok(t, ctx, c1, "fetch "+webByName+" ok"), lan.Second.Web)
	})

	// client2's probes of client1 were sent long before all of the
	// above: had one been forwarded, client1's echo server would have
	// reported it.
	for _, a := range []string{addr2, id2.ClientAddr6().String()} {
		if got := firstC1.Serial.Events("echo from " + a + " "); len(got) != 0 {
			t.Errorf("client1 heard client2: %q", got)
		}
	}
	t.Logf("wall time %.1fs", time.Since(start).Seconds())
}

// checkForged checks c's spoof:SRC>DST steps, each source of forged to
// dst: its barrier came back, and the LAN's capture saw none of what c
// forged (UDP and TCP SYNs) before that barrier.
func checkForged(t *testing.T, ctx context.Context, l *lan.LAN, c *vm.Proc, dst netip.Addr, forged ...string) {
	t.Helper()
	for _, src := range forged {
		e := ok(t, ctx, c, "spoof "+src+">"+dst.String()+" ")
		if vm.Field(e, "barrier") != "ok" {
			t.Fatalf("%s: %s", c.Name, e)
		}
		barrier := "spectrum-barrier spoof-" + src
		_, before, err := l.WaitPacket(ctx, func(p lan.Packet) bool { return p.Payload == barrier })
		if err != nil {
			t.Fatalf("the barrier after the packets forged with %s: %v", src, err)
		}
		for _, p := range before {
			if p.Payload == spoofPayload || p.Proto == 6 && p.Seq == spoofSeq {
				t.Errorf("a packet %s forged with source %s reached the LAN: %+v", c.Name, src, p)
			}
		}
	}
}

// servicePort is the port of netvm's TCP service on [::] in TestRouter,
// which no client may reach.
const servicePort = "2222"

// raPrefix is the prefix the hostile client advertises (with A=1).
var raPrefix = netip.MustParsePrefix("2001:db8:17::/64")

// hostileClient restarts client2 as a client that attacks its provider
// netvm (issue 17, rows 1 and 2): it sends Router Advertisements on its
// link (preference high, raPrefix with A=1), then tries netvm's TCP
// service (listen:, on [::]) at its own gateway, at client1's gateway, at
// netvm's uplink address up, and at netvm's IPv6 addresses: its
// link-local and fe80::1 on client2's link, the ULA ::1 of client2's
// link and of client1's.
// Each attempt must fail, and fail fast (a reset or an ICMP error, not a
// drop that leaves the client waiting), except at a link-local netvm does
// not have; netvm must accept no connection and take no route or address
// from the RA (its ip6watch reports).
func hostileClient(t *testing.T, e *env, d *vm.Spectrumd, netvm *vm.Proc, id1, id2 mac.LinkID, up netip.Addr) {
	ctx := e.ctx
	ll := linkLocal(id2.MAC(mac.Provider))
	v4 := []string{id2.Gateway().String(), id1.Gateway().String(), up.String()}
	// netvm's IPv6 addresses on client2's link (the kernel's link-local,
	// the gateway's fe80::1, the link's ULA ::1) and on client1's.
	v6 := []string{ll.String(), mac.LinkLocalGateway.String(), id2.ProviderAddr6().String(), id1.ProviderAddr6().String()}
	targets := append(v4, v6...)
	steps := "ra:" + raPrefix.String()
	for _, a := range targets {
		steps += ",noconnect:" + a + "/" + servicePort
	}
	ok(t, ctx, netvm, "listen "+servicePort+" ok")
	d.Stop(t, "client2")
	e.setTest("client2", steps+",serve")
	c2 := d.Start(t, "client2")
	ra := ok(t, ctx, c2, "ra sent ")
	for _, a := range targets {
		l := c2.Wait(t, ctx, "noconnect "+a+"/"+servicePort+" ", "fail noconnect "+a+"/")
		ev, _ := vm.Event(l.Text)
		if strings.HasPrefix(ev, "fail ") {
			t.Errorf("client2: %s", ev)
			continue
		}
		if slices.Contains(v6, a) && !hasIP6(netvm, "ip6 addr ", a+"/") {
			continue // netvm has no such address: nothing to reject
		}
		if vm.Field(ev, "err") == "timeout" {
			t.Errorf("client2: %s: dropped, want a fast reject (reset or ICMP unreachable)", ev)
		}
	}
	// netvm polls its IPv6 state twice a second: give it time to report
	// what the RAs did, long after the first of them.
	time.Sleep(3 * time.Second)
	for _, a := range netvm.Serial.Events("accept " + servicePort + " ") {
		// Its own test of the service, on loopback, aside.
		if from := vm.Field(strings.Replace(a, " from ", " from=", 1), "from"); !strings.HasPrefix(from, "127.0.0.1:") && !strings.HasPrefix(from, "[::1]:") {
			t.Errorf("netvm accepted a connection: %s", a)
		}
	}
	for _, ev := range netvm.Serial.Events("ip6 ") {
		f := strings.Fields(ev) // ip6 route|addr ...
		if f[1] == "route" && (strings.Contains(ev, " via ") || strings.Contains(ev, raPrefix.Addr().String())) {
			t.Errorf("netvm took a route from client2's RA (%s): %s", ra, ev)
		}
		if f[1] != "addr" || len(f) < 4 {
			continue
		}
		if p, err := netip.ParsePrefix(f[3]); err == nil && raPrefix.Contains(p.Addr()) {
			t.Errorf("netvm took an address from client2's RA (%s): %s", ra, ev)
		}
	}
	if len(netvm.Serial.Events("ip6 done ")) == 0 {
		t.Errorf("netvm reported no IPv6 state")
	}
}

// hasIP6 reports whether p's IPv6 reports had an event starting with
// prefix and containing s.
func hasIP6(p *vm.Proc, prefix, s string) bool {
	for _, ev := range p.Serial.Events(prefix) {
		if strings.Contains(ev, " "+s) {
			return true
		}
	}
	return false
}

// linkLocal is the IPv6 link-local address the kernel derives from hw
// (modified EUI-64, RFC 4291 appendix A).
func linkLocal(hw net.HardwareAddr) netip.Addr {
	a := [16]byte{0: 0xfe, 1: 0x80, 8: hw[0] ^ 2, 9: hw[1], 10: hw[2], 11: 0xff, 12: 0xfe, 13: hw[3], 14: hw[4], 15: hw[5]}
	return netip.AddrFrom16(a)
}

// checkPage checks a fetch report: the LAN's front page (status, checksum,
// title), fetched from web.
func checkPage(t testing.TB, event string, web netip.Addr) {
	t.Helper()
	if vm.Field(event, "status") != "200" || vm.Field(event, "sha256") != lan.PageSum() || vm.Field(event, "addr") != web.String() {
		t.Errorf("fetch: %s; want status 200 from %v, sha256 %s (the LAN's front page)", event, web, lan.PageSum())
	}
}

// TestRouterChain puts a second provider between netvm and an app VM: vpn
// is netvm's client and app's provider, runs the router too, and has no
// uplink (its own client link to netvm is its way out). On a dual-stack
// LAN and on an IPv6-only one (issue 18: both families through a chain),
// app resolves the name through each of its two virtual resolvers (vpn's,
// which ask netvm's in either family: the LAN's families' addresses),
// fetches the LAN's page by name (IPv4 where there is IPv4, RFC 6724) and
// by the address of each family; vpn fetches by name and, on dual-stack,
// by IPv6 address. The LAN sees only netvm's addresses, each family's
// from netvm's address of that family, nothing from the clients'.
func TestRouterChain(t *testing.T) {
	for _, mode := range []lan.Mode{lan.DualStack, lan.IPv6Only} {
		t.Run(mode.String(), func(t *testing.T) { routerChain(t, mode) })
	}
}

func routerChain(t *testing.T, mode lan.Mode) {
	e := newEnv(t, 8*time.Minute)
	l := e.lanMode(mode, false)
	e.spec(vm.Spec{Name: "netvm", Uplinks: []string{lanBridge}, Cmdline: "spectrum.watch spectrum.route"})
	e.vm("vpn", []string{"netvm"}, "spectrum.watch spectrum.route")
	e.vm("app", []string{"vpn"}, "")
	d := e.serve()
	ctx := e.ctx
	webs := map[string]netip.Addr{}
	var families []string // IPv4's first
	if mode.IPv4() {
		families, webs["IPv4"] = append(families, "IPv4"), lan.First.Web
	}
	if mode.IPv6() {
		families, webs["IPv6"] = append(families, "IPv6"), lan.First.Web6
	}
	n := "/" + strconv.Itoa(len(families))
	vpnFetches := []string{webByName}
	if mode == lan.DualStack {
		vpnFetches = append(vpnFetches, web6)
	}
	appFetches := []string{webByName}
	for _, f := range families {
		appFetches = append(appFetches, webURL(webs[f], "/"))
	}
	dhcp := "dhcp:6"
	if mode == lan.DualStack {
		dhcp = "dhcp:46"
	}
	e.setTest("netvm", dhcp+",serve")
	e.setTest("vpn", "fetch:"+strings.Join(vpnFetches, ",fetch:")+",serve")
	e.setTest("app", "resolve:"+lan.WebName+"@"+vm.Resolver+n+",resolve:"+lan.WebName+"@"+vm.Resolver6+n+
		",fetch:"+strings.Join(appFetches, ",fetch:")+",serve")

	app := d.Start(t, "app")
	netvm, vpn := d.Proc("netvm"), d.Proc("vpn")
	if netvm == nil || vpn == nil {
		t.Fatalf("spectrumd start app did not start its providers: %+v", d.List(t))
	}
	from := map[string]netip.Addr{}
	if mode.IPv4() {
		up4, _ := lease(t, ctx, netvm, "netvm's lease", func(a netip.Prefix, dns string) bool { return inPool(a.Addr(), lan.First) })
		from["IPv4"] = up4.Addr()
	}
	up6, _ := lease6(t, ctx, netvm, "netvm's IPv6 configuration", func(addrs []netip.Prefix, dns string) bool {
		return dns == lan.First.DNS6.String()
	})
	from["IPv6"] = up6.Addr()
	var want []string
	for _, f := range families {
		want = append(want, webs[f].String())
	}
	slices.Sort(want)
	for _, r := range []string{vm.Resolver, vm.Resolver6} {
		if e := ok(t, ctx, app, "resolve "+lan.WebName+"@"+r+n+" ok"); vm.Field(e, "addrs") != strings.Join(want, ",") {
			t.Errorf("app: %s; want addrs=%s", e, strings.Join(want, ","))
		}
	}
	// The family a fetch of u reaches the server by: by name, the first.
	family := func(u string) string {
		if u == webByName {
			return families[0]
		}
		if strings.Contains(u, "[") {
			return "IPv6"
		}
		return "IPv4"
	}
	for _, f := range []struct {
		p    *vm.Proc
		urls []string
	}{{vpn, vpnFetches}, {app, appFetches}} {
		for _, u := range f.urls {
			checkPageOf(t, ok(t, ctx, f.p, "fetch "+u+" ok"), family(u), webs[family(u)])
		}
	}
	if got, want := len(l.Requests()), len(vpnFetches)+len(appFetches); got != want {
		t.Errorf("the LAN's web server answered %d requests, want %d (vpn's %d, app's %d)", got, want, len(vpnFetches), len(appFetches))
	}
	for _, r := range l.Requests() {
		if r.Remote.Addr() != from[r.Family] {
			t.Errorf("the LAN's web server saw a request over %s from %v, want only netvm's %v: %+v", r.Family, r.Remote, from[r.Family], r)
		}
	}
	for _, p := range l.Packets() {
		if clients.Contains(p.Src) || mac.ULA.Contains(p.Src) {
			t.Errorf("the LAN received a packet from a client's address: %+v", p)
		}
	}
}
