package vmtest

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"spectrum-os.org/netcfg/internal/mac"
	"spectrum-os.org/netcfg/vmtest/lan"
	"spectrum-os.org/netcfg/vmtest/vm"
)

// TestDualStackUplink is netvm on a dual-stack LAN (issue 18): its network
// manager (the test init's, vmtest/dhcpc) configures the uplink in both
// families, a DHCP lease and SLAAC with the resolver from the router
// advertisements and stateless DHCPv6; netvm reaches the LAN's web server
// over each family itself, the server seeing its address of that family;
// and appvm-lynx behind netvm's router gets the page by name through netvm
// (DNS to the virtual resolver, the LAN's resolver answering A and AAAA),
// with Debian's lynx (glibc's resolver and address sorting) and with Go's
// client, over the families the router routes: lynx shows the page saying
// that family, and the server sees netvm's address of that family.
func TestDualStackUplink(t *testing.T) {
	e := newEnv(t, 8*time.Minute)
	l := e.lanMode(lan.DualStack, false)
	e.spec(vm.Spec{Name: "netvm", Uplinks: []string{lanBridge}, Cmdline: "spectrum.watch spectrum.route"})
	e.spec(vm.Spec{Name: "appvm-lynx", Providers: []string{"netvm"}, Lynx: true})
	d := e.serve()
	ctx := e.ctx
	web6 := "http://[" + lan.First.Web6.String() + "]/"
	// Both families before the fetches: IPv6's address is there only
	// once duplicate address detection passed, a second after the
	// advertisement's default route (in between, netvm's own connections
	// would leave with a source of another NIC, its provider side's ULA).
	e.setTest("netvm", "dhcp:46,fetch:"+web6+",fetch:"+webByAddr+",serve")
	// The families a client reaches the LAN by through netvm: IPv4 (the
	// router's NAT) by name, as a client prefers IPv4 by name (RFC 6724:
	// its ULA source against a global destination), and IPv6 (NAT66) by
	// address.
	clientFetches := []struct {
		family, url string
		web         netip.Addr
	}{
		{"IPv4", webByName, lan.First.Web},
		{"IPv6", web6, lan.First.Web6},
	}
	steps := ""
	for _, f := range clientFetches {
		steps += "lynx:" + f.url + ",fetch:" + f.url + ","
	}
	e.setTest("appvm-lynx", steps+"serve")

	app := d.Start(t, "appvm-lynx")
	netvm := d.Proc("netvm")
	up4, _ := lease(t, ctx, netvm, "netvm's DHCP lease", func(a netip.Prefix, dns string) bool {
		return inPool(a.Addr(), lan.First) && dns == lan.First.DNS.String()
	})
	up6, ev := lease6(t, ctx, netvm, "netvm's IPv6 configuration", func(addrs []netip.Prefix, dns string) bool {
		return dns == lan.First.DNS6.String()
	})
	if !lan.Prefix6.Contains(up6.Addr()) || up6.Bits() != 64 || !netip.MustParseAddr(vm.Field(ev, "router")).IsLinkLocalUnicast() {
		t.Errorf("netvm's IPv6: %s; want a SLAAC /64 of %v via a link-local router", ev, lan.Prefix6)
	}
	checkPageOf(t, ok(t, ctx, netvm, "fetch "+web6+" ok"), "IPv6", lan.First.Web6)
	checkPageOf(t, ok(t, ctx, netvm, "fetch "+webByAddr+" ok"), "IPv4", lan.First.Web)
	for _, f := range clientFetches {
		ok(t, ctx, app, "lynx "+f.url+" ok")
		if page := lynxPage(app, f.url); !strings.Contains(page, lan.PageFamily(f.family)) {
			t.Errorf("lynx -dump %s shows no %q:\n%s", f.url, lan.PageFamily(f.family), page)
		}
		checkPageOf(t, ok(t, ctx, app, "fetch "+f.url+" ok"), f.family, f.web)
	}
	want := map[string]netip.Addr{"IPv4": up4.Addr(), "IPv6": up6.Addr()}
	reqs := l.Requests()
	if len(reqs) != 2+2*len(clientFetches) {
		t.Errorf("the LAN's web server answered %d requests, want %d: %+v", len(reqs), 2+2*len(clientFetches), reqs)
	}
	for _, r := range reqs {
		if r.Remote.Addr() != want[r.Family] {
			t.Errorf("the LAN's web server saw a request over %s from %v, want only netvm's %v: %+v", r.Family, r.Remote, want[r.Family], r)
		}
	}
	for _, p := range l.Packets() {
		if clients.Contains(p.Src) || mac.ULA.Contains(p.Src) {
			t.Errorf("the LAN received a packet from a client's address: %+v", p)
		}
	}
}

// checkPageOf is checkPage for the front page of a family.
func checkPageOf(t testing.TB, event, family string, web netip.Addr) {
	t.Helper()
	if vm.Field(event, "status") != "200" || vm.Field(event, "sha256") != lan.PageSumFor(family) || vm.Field(event, "addr") != web.String() {
		t.Errorf("fetch: %s; want status 200 from %v, sha256 %s (the LAN's front page over %s)", event, web, lan.PageSumFor(family), family)
	}
}

// TestIPv6OnlyUplink is netvm on an IPv6-only LAN that hands out addresses
// by DHCPv6 (issue 18), forwarding IPv6 as a router does: its network
// manager still takes the router advertisements (accept_ra=2), gets a
// DHCPv6 address of the pool and the resolver, and writes resolv.conf with
// that resolver alone; netvm resolves the web name (AAAA only) and fetches
// the page over IPv6, the server seeing its DHCPv6 address. No DHCP lease
// is reported, and "dhcp ok" comes with IPv6's configuration alone.
func TestIPv6OnlyUplink(t *testing.T) {
	e := newEnv(t, 6*time.Minute)
	l := e.lanMode(lan.IPv6Only, true)
	e.spec(vm.Spec{Name: "netvm", Uplinks: []string{lanBridge}})
	d := e.serve()
	ctx := e.ctx
	e.setTest("netvm", "sysctl:net.ipv6.conf.all.forwarding=1,dhcp:6,resolve:"+lan.WebName+",fetch:"+webByName+",serve")
	netvm := d.Start(t, "netvm")
	up6, ev := lease6(t, ctx, netvm, "netvm's IPv6 configuration", func(addrs []netip.Prefix, dns string) bool {
		return dns == lan.First.DNS6.String()
	})
	t.Logf("netvm: %s", ev)
	ok(t, ctx, netvm, "sysctl net.ipv6.conf.all.forwarding=1")
	if up6.Bits() != 128 || up6.Addr().Compare(lan.First.Range6Start) < 0 || up6.Addr().Compare(lan.First.Range6End) > 0 ||
		vm.Field(ev, "m") != "1" {
		t.Errorf("netvm's IPv6: %s; want a DHCPv6 /128 of %v-%v, m=1", ev, lan.First.Range6Start, lan.First.Range6End)
	}
	ok(t, ctx, netvm, "dhcp ok n=1")
	if e := ok(t, ctx, netvm, "resolve "+lan.WebName+" ok"); vm.Field(e, "addrs") != lan.First.Web6.String() {
		t.Errorf("%s; want addrs=%v", e, lan.First.Web6)
	}
	checkPageOf(t, ok(t, ctx, netvm, "fetch "+webByName+" ok"), "IPv6", lan.First.Web6)
	if r := l.Requests(); len(r) != 1 || r[0].Family != "IPv6" || r[0].Remote.Addr() != up6.Addr() {
		t.Errorf("the LAN's web server saw %+v, want one request over IPv6 from %v", r, up6.Addr())
	}
	// The uplink's name, from "dhcp6 IFACE lease ...".
	if got := netvm.Serial.Events("dhcp " + strings.Fields(ev)[1] + " lease"); len(got) != 0 {
		t.Errorf("a DHCP lease on an IPv6-only LAN: %q", got)
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
