package vmtest

import (
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"spectrum/internal/mac"
	"spectrum/internal/nstest"
	"spectrum/vmtest/vm"
)

// TestSeveralProviders wires one client to two providers by hand, plus a NIC
// without the OUI: the client gets one address and one default route per
// link (metrics apart, so they never clash), and the foreign NIC stays
// unconfigured. Traffic is checked on the first link only: with the
// contract's routes, everything the client sends, including to the second
// link's gateway and its replies to the second provider, follows the
// lowest-metric default route, i.e. the first link. Reaching each provider
// would need a host route to each gateway on its NIC (not in DESIGN.md).
func TestSeveralProviders(t *testing.T) {
	k := vm.Require(t)
	a := vm.BuildAssets(t, k)
	ns := nstest.New(t)
	ctx := vm.Context(t, 4*time.Minute)
	data, run := t.TempDir(), t.TempDir()

	ids := []mac.LinkID{0x0101, 0x0102}
	var nics []vm.NIC
	var provs []*vm.Proc
	for i, id := range ids {
		c, p := vm.AddLink(ns, id)
		nics = append(nics, c)
		test := "serve"
		if i == 0 {
			test = "ping:" + id.ClientAddr().String() + ",serve"
		}
		provs = append(provs, vm.Launch(t, ns, mustDir(t, data, vm.Spec{Name: fmt.Sprintf("net%c", 'a'+i),
			Test: test}, a), run, []vm.NIC{p}))
	}
	const foreign = "52:54:00:00:01:02"
	ns.AddTap("spf-multi", "")
	ns.IP("link", "set", "spf-multi", "up")
	nics = append(nics, vm.NIC{Tap: "spf-multi", MAC: foreign})
	app := vm.Launch(t, ns, mustDir(t, data, vm.Spec{Name: "appvm-multi", Providers: []string{"neta", "netb"},
		Test: "ping:" + ids[0].Gateway().String() + ",serve"}, a), run, nics)

	app.Wait(t, ctx, "state done n=1 ")
	if exit := app.Timing().AgentExit; exit != "0" {
		t.Errorf("spectrum-netcfg exit status %q, want 0", exit)
	}
	var wantAddrs, wantRoutes []string
	for i, id := range ids {
		nic := nicName(t, app, nics[i].MAC)
		wantAddrs = append(wantAddrs, "addr "+nic+" "+id.ClientPrefix().String())
		wantRoutes = append(wantRoutes,
			fmt.Sprintf("route default via %s dev %s metric %s onlink", id.Gateway(), nic, ifindex(app, nic)),
			fmt.Sprintf("route %s dev %s scope link", id.ClientPrefix().Masked(), nic))
	}
	if diff := cmp.Diff(sorted(wantAddrs), events(app, "addr eth")); diff != "" {
		t.Errorf("addresses (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(sorted(wantRoutes), events(app, "route ")); diff != "" {
		t.Errorf("routes (-want +got):\n%s", diff)
	}
	fnic := nicName(t, app, foreign)
	if got := vm.Field(events(app, "link "+fnic+" ")[0], "up"); got != "false" {
		t.Errorf("foreign NIC %s up=%s, want false (untouched)", fnic, got)
	}
	if t.Failed() {
		t.FailNow()
	}
	pingBoth(t, ctx, app, provs[0], ids[0].Gateway().String(), ids[0].ClientAddr().String())
}
