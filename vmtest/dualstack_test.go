package vmtest

import (
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

// outside6 is an IPv6 source nobody here has (2001:db8::/32, a
// documentation prefix outside the LAN's /64), for forged packets.
const outside6 = "2001:db8:99::7"

// The LAN's front page at its IPv6 address.
var web6 = webURL(lan.First.Web6, "/")

// TestDualStackUplink is netvm on a dual-stack LAN at MTU 1400 (issue 18):
// its network manager (the test init's, vmtest/dhcpc) configures the uplink
// in both families, a DHCP lease and SLAAC with the resolver from the
// router advertisements and stateless DHCPv6; netvm reaches the LAN's web
// server over each family itself, the server seeing its address of that
// family. Behind netvm's router, appvm-lynx and client2 (uplinkClients):
// lynx and Go's client get the page by name over IPv4 (RFC 6724: a ULA
// source against a global destination) and by address over IPv6, each
// family's 1 MiB page, and fetch again after netvm's restart; client2
// reaches nothing of appvm-lynx over IPv6 and what it forges gets nothing
// through.
func TestDualStackUplink(t *testing.T) {
	e := newEnv(t, 10*time.Minute)
	const mtu = 1400
	l := e.lanConfig(lan.Config{Mode: lan.DualStack, MTU: mtu})
	e.spec(vm.Spec{Name: "netvm", Uplinks: []string{lanBridge}, Cmdline: "spectrum.watch spectrum.route"})
	e.spec(vm.Spec{Name: "appvm-lynx", Providers: []string{"netvm"}, Lynx: true})
	e.vm("client2", []string{"netvm"}, "")
	d := e.serve()
	ctx := e.ctx
	// Both families before the fetches: IPv6's address is there only
	// once duplicate address detection passed, a second after the
	// advertisement's default route (in between, netvm's own connections
	// would leave with a source of another NIC, its provider side's ULA).
	e.setTest("netvm", "dhcp:46,fetch:"+web6+",fetch:"+webByAddr+",serve")
	u := newUplinkClients(t, e, d, l, mtu)
	app := d.Start(t, "appvm-lynx")
	netvm := d.Proc("netvm")
	up, ev := u.leases(t, netvm)
	if up6 := up["IPv6"]; !lan.Prefix6.Contains(up6) || !strings.Contains(ev, up6.String()+"/64") ||
		!netip.MustParseAddr(vm.Field(ev, "router")).IsLinkLocalUnicast() {
		t.Errorf("netvm's IPv6: %s; want a SLAAC /64 of %v via a link-local router", ev, lan.Prefix6)
	}
	checkPageOf(t, ok(t, ctx, netvm, "fetch "+web6+" ok"), "IPv6", lan.First.Web6)
	checkPageOf(t, ok(t, ctx, netvm, "fetch "+webByAddr+" ok"), "IPv4", lan.First.Web)
	u.run(t, app, up, 2)
}

// TestIPv6OnlyUplink is netvm on an IPv6-only LAN at MTU 1280 that hands
// out addresses by DHCPv6 (issue 18), routing for its clients (so
// forwarding IPv6): its network manager still takes the router
// advertisements (accept_ra=2), gets a DHCPv6 address of the pool and the
// resolver, and writes resolv.conf with that resolver alone; netvm
// resolves the web name (AAAA only) and fetches the page over IPv6, the
// server seeing its DHCPv6 address. No DHCP lease is reported, and "dhcp
// ok" comes with IPv6's configuration alone. Behind it (uplinkClients),
// appvm-lynx gets the page by name over IPv6 with lynx and Go's client
// through either virtual resolver (the IPv4 one asking netvm's IPv6
// upstream), and the 1 MiB page; client2 reaches nothing of it over IPv6
// and gets nothing forged through; and after netvm's restart appvm-lynx
// fetches again.
func TestIPv6OnlyUplink(t *testing.T) {
	e := newEnv(t, 10*time.Minute)
	const mtu = 1280
	l := e.lanConfig(lan.Config{Mode: lan.IPv6Only, Stateful: true, MTU: mtu})
	e.spec(vm.Spec{Name: "netvm", Uplinks: []string{lanBridge}, Cmdline: "spectrum.watch spectrum.route"})
	e.spec(vm.Spec{Name: "appvm-lynx", Providers: []string{"netvm"}, Lynx: true})
	e.vm("client2", []string{"netvm"}, "")
	d := e.serve()
	ctx := e.ctx
	e.setTest("netvm", "dhcp:6,resolve:"+lan.WebName+",fetch:"+webByName+",serve")
	u := newUplinkClients(t, e, d, l, mtu)
	app := d.Start(t, "appvm-lynx")
	netvm := d.Proc("netvm")
	up, ev := u.leases(t, netvm)
	if up6 := up["IPv6"]; !strings.Contains(ev, up6.String()+"/128") ||
		up6.Compare(lan.First.Range6Start) < 0 || up6.Compare(lan.First.Range6End) > 0 || vm.Field(ev, "m") != "1" {
		t.Errorf("netvm's IPv6: %s; want a DHCPv6 /128 of %v-%v, m=1", ev, lan.First.Range6Start, lan.First.Range6End)
	}
	ok(t, ctx, netvm, "dhcp ok n=1")
	if e := ok(t, ctx, netvm, "resolve "+lan.WebName+" ok"); vm.Field(e, "addrs") != lan.First.Web6.String() {
		t.Errorf("%s; want addrs=%v", e, lan.First.Web6)
	}
	checkPageOf(t, ok(t, ctx, netvm, "fetch "+webByName+" ok"), "IPv6", lan.First.Web6)
	// The uplink's name, from "dhcp6 IFACE lease ...".
	if got := netvm.Serial.Events("dhcp " + strings.Fields(ev)[1] + " lease"); len(got) != 0 {
		t.Errorf("a DHCP lease on an IPv6-only LAN: %q", got)
	}
	u.run(t, app, up, 1)
}

// uplinkClients is the client side of an uplink kind (issue 18): netvm
// routes for appvm-lynx (Debian's lynx) and client2 on a LAN of some mode
// at some MTU.
//
//   - appvm-lynx's resolv.conf names the two virtual resolvers and no
//     other; each of them answers the web name with the addresses of the
//     LAN's families (whatever family netvm's own resolver is on).
//   - appvm-lynx gets the front page by name with lynx and with Go's
//     client, over IPv4 where the LAN has it (RFC 6724), else IPv6; and
//     on a dual-stack LAN by IPv6 address too; the page and the server's
//     record say the family. It downloads the 1 MiB page over each family
//     (the path's MTU below its own), and a datagram too big for the
//     uplink gets it netvm's ICMP "fragmentation needed" or ICMPv6 "packet
//     too big": its kernel learns the uplink's MTU as the path's. Every
//     TCP SYN that reached the LAN carries an MSS that fits the LAN's MTU
//     (netvm clamps a client's).
//   - client2 cannot reach appvm-lynx over IPv6, even with a route to its
//     address via its gateway (fe80::1); UDP and TCP SYNs it forges with
//     appvm-lynx's ULA source and with an outside one never reach the LAN
//     (its capture, up to a barrier sent after them).
//   - netvm stopped and started: appvm-lynx fetches again over each
//     family without a restart (fetchwatch).
//   - the LAN sees only netvm's addresses: nothing from 100.64.0.0/10 or
//     the ULA.
type uplinkClients struct {
	e        *env
	d        *vm.Spectrumd
	l        *lan.LAN
	mtu      int
	families []string
	app, c2  mac.LinkID
	// Per family: the web server's address and the whoami page
	// fetchwatch follows.
	web, watch map[string]string
}

// newUplinkClients writes the clients' steps (netvm's are the caller's).
func newUplinkClients(t *testing.T, e *env, d *vm.Spectrumd, l *lan.LAN, mtu int) *uplinkClients {
	u := &uplinkClients{e: e, d: d, l: l, mtu: mtu, app: d.LinkID(t, "appvm-lynx", "netvm"), c2: d.LinkID(t, "client2", "netvm"),
		web: map[string]string{}, watch: map[string]string{}}
	webs := map[string]netip.Addr{"IPv4": lan.First.Web, "IPv6": lan.First.Web6}
	if l.Mode().IPv4() {
		u.families = append(u.families, "IPv4")
	}
	if l.Mode().IPv6() {
		u.families = append(u.families, "IPv6")
	}
	// Both families' answers where the LAN has both (resolve's /N).
	n := "/" + strconv.Itoa(len(u.families))
	steps := []string{"resolvconf", "resolve:" + lan.WebName + "@" + vm.Resolver + n, "resolve:" + lan.WebName + "@" + vm.Resolver6 + n,
		"lynx:" + webByName, "fetch:" + webByName}
	if l.Mode() == lan.DualStack {
		steps = append(steps, "lynx:"+web6, "fetch:"+web6)
	}
	for _, f := range u.families {
		u.web[f] = webs[f].String()
		u.watch[f] = webURL(webs[f], "/whoami")
		steps = append(steps, "fetch:"+webURL(webs[f], lan.BigPath), "pmtu:"+u.web[f]+"/1500")
	}
	for _, f := range u.families {
		steps = append(steps, "fetchwatch:"+u.watch[f])
	}
	e.setTest("appvm-lynx", strings.Join(append(steps, "serve"), ","))
	a6, web6 := u.app.ClientAddr6().String(), lan.First.Web6.String()
	e.setTest("client2", "noreach:"+a6+",spoof:"+a6+">"+web6+",spoof:"+outside6+">"+web6+",serve")
	return u
}

// leases waits for netvm's configuration of each family and returns its
// uplink address of each, and the report of its IPv6 configuration.
func (u *uplinkClients) leases(t *testing.T, netvm *vm.Proc) (up map[string]netip.Addr, ev6 string) {
	t.Helper()
	up = map[string]netip.Addr{}
	if u.l.Mode().IPv4() {
		a, _ := lease(t, u.e.ctx, netvm, "netvm's DHCP lease", func(a netip.Prefix, dns string) bool {
			return inPool(a.Addr(), lan.First) && dns == lan.First.DNS.String()
		})
		up["IPv4"] = a.Addr()
	}
	if u.l.Mode().IPv6() {
		var a netip.Prefix
		a, ev6 = lease6(t, u.e.ctx, netvm, "netvm's IPv6 configuration", func(addrs []netip.Prefix, dns string) bool {
			return dns == lan.First.DNS6.String()
		})
		up["IPv6"] = a.Addr()
	}
	return up, ev6
}

// run checks the clients once netvm has its uplink addresses up; pages
// is how many front pages netvm itself fetches at each boot.
func (u *uplinkClients) run(t *testing.T, app *vm.Proc, up map[string]netip.Addr, pages int) {
	ctx, d, l := u.e.ctx, u.d, u.l
	c2 := d.Proc("client2")
	if c2 == nil {
		c2 = d.Start(t, "client2")
	}
	netvmAddrs := map[netip.Addr]bool{}
	for _, a := range up {
		netvmAddrs[a] = true
	}

	var want []string
	for _, f := range u.families {
		want = append(want, u.web[f])
	}
	slices.Sort(want)
	if e := ok(t, ctx, app, "resolvconf "); vm.Field(e, "nameservers") != vm.Resolver+","+vm.Resolver6 {
		t.Errorf("appvm-lynx: %s; want its two virtual resolvers, %s and %s, and no other", e, vm.Resolver, vm.Resolver6)
	}
	for _, r := range []string{vm.Resolver, vm.Resolver6} {
		if e := ok(t, ctx, app, "resolve "+lan.WebName+"@"+r+"/"+strconv.Itoa(len(want))+" ok"); vm.Field(e, "addrs") != strings.Join(want, ",") {
			t.Errorf("appvm-lynx: %s; want addrs=%s", e, strings.Join(want, ","))
		}
	}
	byName := u.families[0] // IPv4 first where there is IPv4
	fetches := []struct{ family, url string }{{byName, webByName}}
	if l.Mode() == lan.DualStack {
		fetches = append(fetches, struct{ family, url string }{"IPv6", web6})
	}
	for _, f := range fetches {
		ok(t, ctx, app, "lynx "+f.url+" ok")
		if page := lynxPage(app, f.url); !strings.Contains(page, lan.PageFamily(f.family)) {
			t.Errorf("lynx -dump %s shows no %q:\n%s", f.url, lan.PageFamily(f.family), page)
		}
		checkPageOf(t, ok(t, ctx, app, "fetch "+f.url+" ok"), f.family, netip.MustParseAddr(u.web[f.family]))
	}
	for _, f := range u.families {
		big := webURL(netip.MustParseAddr(u.web[f]), lan.BigPath)
		e := ok(t, ctx, app, "fetch "+big+" ok")
		if vm.Field(e, "status") != "200" || vm.Field(e, "bytes") != strconv.Itoa(lan.BigSize) || vm.Field(e, "sha256") != lan.BigSum() {
			t.Errorf("appvm-lynx over %s at MTU %d: %s; want the %d bytes of sha256 %s", f, u.mtu, e, lan.BigSize, lan.BigSum())
		}
		if e := ok(t, ctx, app, "pmtu "+u.web[f]+"/1500 ok"); vm.Field(e, "mtu") != strconv.Itoa(u.mtu) {
			t.Errorf("appvm-lynx over %s: %s; want mtu=%d, netvm's uplink's (its ICMP error reached appvm-lynx)", f, e, u.mtu)
		}
		ok(t, ctx, app, "fetchwatch "+u.watch[f]+" up n=1 ")
	}
	if t.Failed() {
		t.FailNow()
	}

	t.Run("isolation", func(t *testing.T) {
		a6 := u.app.ClientAddr6().String()
		e := ok(t, ctx, c2, "noreach "+a6+" route via ")
		if !strings.Contains(e, "via "+mac.LinkLocalGateway.String()+" ") {
			t.Errorf("client2's explicit route: %s, want via %v", e, mac.LinkLocalGateway)
		}
		ok(t, ctx, c2, "noreach "+a6+" ok")
	})
	t.Run("spoofing", func(t *testing.T) {
		checkForged(t, ctx, l, c2, lan.First.Web6, u.app.ClientAddr6().String(), outside6)
	})
	if t.Failed() {
		t.FailNow()
	}

	t.Run("provider restart", func(t *testing.T) {
		d.Stop(t, "netvm")
		for _, f := range u.families {
			app.Wait(t, ctx, "fetchwatch "+u.watch[f]+" down n=1 ")
		}
		netvm := d.Start(t, "netvm")
		up, _ := u.leases(t, netvm)
		for _, a := range up {
			netvmAddrs[a] = true
		}
		for _, f := range u.families {
			ok(t, ctx, app, "fetchwatch "+u.watch[f]+" up n=2 ")
		}
		// netvm's own fetches of this boot are done (the count below).
		ok(t, ctx, netvm, "serving")
		if d.Proc("appvm-lynx") != app {
			t.Errorf("appvm-lynx was restarted")
		}
	})

	// The LAN saw netvm's addresses only, each family's from netvm's
	// address of that family.
	fronts := 0
	for _, r := range l.Requests() {
		if r.Path == "/" {
			fronts++
		}
		if !netvmAddrs[r.Remote.Addr()] || lan.FamilyOf(r.Remote.Addr()) != r.Family {
			t.Errorf("the LAN's web server saw a request over %s from %v, want only netvm's %v: %+v", r.Family, r.Remote, netvmAddrs, r)
		}
	}
	if want := 2*pages + 2*len(fetches); fronts != want {
		t.Errorf("the LAN's web server answered %d requests for its front page, want %d (netvm's at each of its two boots, appvm-lynx's with lynx and Go's)", fronts, want)
	}
	for _, p := range l.Packets() {
		if clients.Contains(p.Src) || mac.ULA.Contains(p.Src) {
			t.Errorf("the LAN received a packet from a client's address: %+v", p)
		}
	}
	checkMSS(t, l, u.mtu)
	// client2's probes of appvm-lynx came long before all of the above:
	// had one been forwarded, its echo server would have reported it.
	for _, a := range []netip.Addr{u.c2.ClientAddr(), u.c2.ClientAddr6()} {
		if got := app.Serial.Events("echo from " + a.String() + " "); len(got) != 0 {
			t.Errorf("appvm-lynx heard client2: %q", got)
		}
	}
}

// checkMSS checks that every TCP SYN that reached the LAN carries a
// maximum segment size that fits the LAN's MTU (the IPv4 header and TCP's
// 40 bytes, IPv6's 60): a client's own (its link's 1500) must have been
// clamped by its provider.
func checkMSS(t *testing.T, l *lan.LAN, mtu int) {
	t.Helper()
	n := 0
	for _, p := range l.Packets() {
		if p.Proto != 6 || p.TCPFlags&(lan.TCPSyn|lan.TCPAck) != lan.TCPSyn || p.Seq == spoofSeq {
			continue
		}
		n++
		hdrs := 40
		if p.Src.Is6() {
			hdrs = 60
		}
		if p.MSS == 0 || int(p.MSS) > mtu-hdrs {
			t.Errorf("a TCP SYN reached the LAN (MTU %d) with MSS %d, want at most %d: %+v", mtu, p.MSS, mtu-hdrs, p)
		}
	}
	if n == 0 {
		t.Errorf("no TCP SYN reached the LAN")
	}
}

// checkPageOf is checkPage for the front page of a family.
func checkPageOf(t testing.TB, event, family string, web netip.Addr) {
	t.Helper()
	if vm.Field(event, "status") != "200" || vm.Field(event, "sha256") != lan.PageSumFor(family) || vm.Field(event, "addr") != web.String() {
		t.Errorf("fetch: %s; want status 200 from %v, sha256 %s (the LAN's front page over %s)", event, web, lan.PageSumFor(family), family)
	}
}

// lynxPage is what p's lynx:URL step printed: the console's lines between
// "lynx -dump URL" and "lynx URL ok".
func lynxPage(p *vm.Proc, url string) string {
	var b strings.Builder
	in := false
	for _, l := range p.Serial.Lines() {
		e, isEvent := vm.Event(l.Text)
		switch {
		case isEvent && strings.HasPrefix(e, "lynx -dump "+url):
			in = true
		case isEvent && strings.HasPrefix(e, "lynx "+url+" ok"):
			return b.String()
		case in && !isEvent:
			b.WriteString(l.Text + "\n")
		}
	}
	return b.String()
}
