package vmtest

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"spectrum-os.org/netcfg/internal/mac"
	"spectrum-os.org/netcfg/vmtest/vm"
)

// TestSeveralProviders runs a client with two providers under spectrumd:
// the client gets one address, one default route (metrics apart, so they
// never clash) and one host route to the gateway per link, each provider
// the gateway of its own link, and the client exchanges packets with both
// providers in both directions. Without the host routes everything the
// client sent, even to the second link's gateway, followed the default
// route with the lowest metric, i.e. the first link (this test showed it).
//
// The NIC without the OUI is in TestBootForeignNIC: spectrumd gives a VM
// only 0A:B3:EC NICs, so that test launches QEMU by hand.
func TestSeveralProviders(t *testing.T) {
	e := newEnv(t, 4*time.Minute)
	names := []string{"neta", "netb"}
	for _, n := range names {
		e.vm(n, nil, "spectrum.watch")
	}
	e.vm("appvm-multi", names, "")
	d := e.serve()
	ids := []mac.LinkID{d.LinkID(t, "appvm-multi", "neta"), d.LinkID(t, "appvm-multi", "netb")}
	if ids[0] == ids[1] {
		t.Fatalf("both links have id %s", ids[0])
	}
	var appTest []string
	for i, n := range names {
		e.setTest(n, "ping:"+ids[i].ClientAddr().String()+",serve")
		appTest = append(appTest, "ping:"+ids[i].Gateway().String())
	}
	e.setTest("appvm-multi", strings.Join(appTest, ",")+",serve")
	ctx := e.ctx

	app := d.Start(t, "appvm-multi")
	app.Wait(t, ctx, "state done n=1 ")
	if exit := app.Timing().AgentExit; exit != "0" {
		t.Errorf("spectrum-netcfg exit status %q, want 0", exit)
	}
	st, _ := app.Serial.State(1)
	var wantAddrs, wantRoutes []string
	for _, id := range ids {
		nic := nicIn(t, app, st, id.MAC(mac.Client).String())
		wantAddrs = append(wantAddrs, "addr "+nic+" "+id.ClientPrefix().String())
		wantRoutes = append(wantRoutes,
			fmt.Sprintf("route default via %s dev %s metric %s onlink", id.Gateway(), nic, ifindexIn(st, nic)),
			fmt.Sprintf("route %s dev %s scope link", id.ClientPrefix().Masked(), nic),
			fmt.Sprintf("route %s/32 dev %s scope link", id.Gateway(), nic))
	}
	if diff := cmp.Diff(sorted(wantAddrs), filter(st, "addr eth")); diff != "" {
		t.Errorf("addresses (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(sorted(wantRoutes), filter(st, "route ")); diff != "" {
		t.Errorf("routes (-want +got):\n%s", diff)
	}
	var provs []*vm.Proc
	for i, name := range names {
		p := d.Proc(name)
		provs = append(provs, p)
		gw := ids[i].Gateway().String()
		pst := waitState(t, ctx, p, "addr eth0 "+gw+"/32")
		if got := filter(pst, "addr eth"); len(got) != 1 {
			t.Errorf("%s addresses %q, want only %s/32", name, got, gw)
		}
	}
	if t.Failed() {
		t.FailNow()
	}
	for i := range names {
		pingBoth(t, ctx, app, provs[i], ids[i].Gateway().String(), ids[i].ClientAddr().String())
	}
}
