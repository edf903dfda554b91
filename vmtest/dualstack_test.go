package vmtest

import (
	"net/netip"
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
// and a client behind netvm's router fetches the page by name through
// netvm (DNS to the virtual resolver, the LAN's resolver answering A and
// AAAA) over the families the router routes, the server seeing netvm's
// address of that family.
func TestDualStackUplink(t *testing.T) {
	e := newEnv(t, 8*time.Minute)
	l := e.lanMode(lan.DualStack)
	e.spec(vm.Spec{Name: "netvm", Uplinks: []string{lanBridge}, Cmdline: "spectrum.watch spectrum.route"})
	e.vm("app", []string{"netvm"}, "")
	d := e.serve()
	ctx := e.ctx
	web6 := "http://[" + lan.First.Web6.String() + "]/"
	e.setTest("netvm", "dhcp,fetch:"+web6+",fetch:"+webByAddr+",serve")
	// The families a client reaches the LAN by through netvm: IPv4 (the
	// router's NAT). IPv6 joins once the router forwards it:
	// {"IPv6", webByName or web6, lan.First.Web6}; a client prefers IPv4
	// by name (RFC 6724: its ULA source against a global destination).
	clientFetches := []struct {
		family, url string
		web         netip.Addr
	}{
		{"IPv4", webByName, lan.First.Web},
	}
	steps := ""
	for _, f := range clientFetches {
		steps += "fetch:" + f.url + ","
	}
	e.setTest("app", steps+"serve")

	app := d.Start(t, "app")
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
		checkPageOf(t, ok(t, ctx, app, "fetch "+f.url+" ok"), f.family, f.web)
	}
	want := map[string]netip.Addr{"IPv4": up4.Addr(), "IPv6": up6.Addr()}
	reqs := l.Requests()
	if len(reqs) != 2+len(clientFetches) {
		t.Errorf("the LAN's web server answered %d requests, want %d: %+v", len(reqs), 2+len(clientFetches), reqs)
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
