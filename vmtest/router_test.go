package vmtest

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

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
// netvm has an uplink on the LAN (uplinks/net/lan0), configures it by DHCP
// (the test init's client) and runs `spectrum-netcfg -watch -route`; two
// clients behind it.
//
//   - client1 fetches the LAN's page by name (DNS through netvm's virtual
//     resolver) and by address; the LAN sees only netvm's address.
//   - client2 cannot reach client1, even with an explicit route via its
//     gateway; what it forges (another client's source, an outside one,
//     UDP and TCP SYNs) never reaches the LAN (the LAN's capture, up to
//     the barrier datagram sent after them).
//   - a new lease on the uplink (the LAN renumbered: new pool, resolver
//     and answer): client1 resolves and fetches again, the new answer,
//     without a restart.
//   - netvm stopped and started: client1 fetches again without a restart
//     (the reference system's own integration test); then client1
//     restarted fetches again.
func TestRouter(t *testing.T) {
	e := newEnv(t, 12*time.Minute)
	start := time.Now()
	l := e.lan()
	e.spec(vm.Spec{Name: "netvm", Uplinks: []string{lanBridge}, Cmdline: "spectrum.watch spectrum.route"})
	e.vm("client1", []string{"netvm"}, "")
	e.vm("client2", []string{"netvm"}, "")
	d := e.serve()
	id1, id2 := d.LinkID(t, "client1", "netvm"), d.LinkID(t, "client2", "netvm")
	addr1, addr2 := id1.ClientAddr().String(), id2.ClientAddr().String()
	ctx := e.ctx
	const outside = "198.51.100.7" // TEST-NET-2: nobody's address here
	netvmTest := "dhcp,fetch:" + webByName + ",serve"
	e.setTest("netvm", netvmTest)
	e.setTest("client1", "fetch:"+webByName+",fetch:"+webByAddr+",fetchwatch:"+webByName+",serve")
	e.setTest("client2", fmt.Sprintf("fetch:%s,noreach:%s,spoof:%s>%s,spoof:%s>%s,serve",
		webByName, addr1, addr1, lan.Router, outside, lan.Router))

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

	checkPage(t, ok(t, ctx, c1, "fetch "+webByName+" ok"), lan.First.Web)
	checkPage(t, ok(t, ctx, c1, "fetch "+webByAddr+" ok"), lan.First.Web)
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
	})
	t.Run("spoofing", func(t *testing.T) {
		for _, forged := range []string{addr1, outside} {
			e := ok(t, ctx, c2, "spoof "+forged+">"+lan.Router.String()+" ")
			if vm.Field(e, "barrier") != "ok" {
				t.Fatalf("client2: %s", e)
			}
			barrier := "spectrum-barrier spoof-" + forged
			_, before, err := l.WaitPacket(ctx, func(p lan.Packet) bool { return p.Payload == barrier })
			if err != nil {
				t.Fatalf("the barrier after the packets forged with %s: %v", forged, err)
			}
			for _, p := range before {
				if p.Payload == spoofPayload || p.Proto == 6 && p.Seq == spoofSeq {
					t.Errorf("a packet client2 forged with source %s reached the LAN: %+v", forged, p)
				}
			}
		}
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
	if got := firstC1.Serial.Events("echo from " + addr2 + " "); len(got) != 0 {
		t.Errorf("client1 heard client2: %q", got)
	}
	t.Logf("wall time %.1fs", time.Since(start).Seconds())
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
// uplink (its own client link to netvm is its way out). app fetches the
// LAN's page by name (its DNS goes to vpn's virtual resolver, which sends
// it on to netvm's) and by address; the LAN sees only netvm's address.
func TestRouterChain(t *testing.T) {
	e := newEnv(t, 8*time.Minute)
	l := e.lan()
	e.spec(vm.Spec{Name: "netvm", Uplinks: []string{lanBridge}, Cmdline: "spectrum.watch spectrum.route"})
	e.vm("vpn", []string{"netvm"}, "spectrum.watch spectrum.route")
	e.vm("app", []string{"vpn"}, "")
	d := e.serve()
	ctx := e.ctx
	e.setTest("netvm", "dhcp,serve")
	e.setTest("vpn", "fetch:"+webByName+",serve")
	e.setTest("app", "fetch:"+webByName+",fetch:"+webByAddr+",serve")

	app := d.Start(t, "app")
	netvm, vpn := d.Proc("netvm"), d.Proc("vpn")
	if netvm == nil || vpn == nil {
		t.Fatalf("spectrumd start app did not start its providers: %+v", d.List(t))
	}
	up, _ := lease(t, ctx, netvm, "netvm's lease", func(a netip.Prefix, dns string) bool { return inPool(a.Addr(), lan.First) })
	checkPage(t, ok(t, ctx, vpn, "fetch "+webByName+" ok"), lan.First.Web)
	checkPage(t, ok(t, ctx, app, "fetch "+webByName+" ok"), lan.First.Web)
	checkPage(t, ok(t, ctx, app, "fetch "+webByAddr+" ok"), lan.First.Web)
	if n := len(l.Requests()); n != 3 {
		t.Errorf("the LAN's web server answered %d requests, want 3 (vpn's, app's two)", n)
	}
	for _, r := range l.Requests() {
		if r.Remote.Addr() != up.Addr() {
			t.Errorf("the LAN's web server saw a request from %v, want only netvm's %v: %+v", r.Remote, up.Addr(), r)
		}
	}
	for _, p := range l.Packets() {
		if clients.Contains(p.Src) {
			t.Errorf("the LAN received a packet from a client's address: %+v", p)
		}
	}
}
