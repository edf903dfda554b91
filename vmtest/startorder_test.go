package vmtest

import (
	"slices"
	"testing"
	"time"

	"spectrum/internal/mac"
	"spectrum/internal/nstest"
	"spectrum/vmtest/vm"
)

// TestStartOrder starts the documented pair in both orders, wiring by hand
// what spectrumd will do: a client that starts first gets its provider's NIC
// cold-plugged when the provider boots later; a provider that runs already
// gets the NIC hot-plugged through QMP and its agent's -watch configures it.
// Both end connected in both directions.
func TestStartOrder(t *testing.T) {
	k := vm.Require(t)
	a := vm.BuildAssets(t, k)
	id := mac.LinkID(0xa546)
	gw, addr := id.Gateway().String(), id.ClientAddr().String()
	specs := func() (netvm, app vm.Spec) {
		return vm.Spec{Name: "netvm", Test: "ping:" + addr + ",serve", Cmdline: "spectrum.watch spectrum.timeout=150"},
			vm.Spec{Name: "appvm-lynx", Providers: []string{"netvm"}, Test: "ping:" + gw + ",serve", Cmdline: "spectrum.timeout=150"}
	}

	t.Run("client first", func(t *testing.T) {
		ns := nstest.New(t)
		ctx := vm.Context(t, 3*time.Minute)
		client, provider := vm.AddLink(ns, id)
		data, run := t.TempDir(), t.TempDir()
		netSpec, appSpec := specs()
		app := vm.Launch(t, ns, mustDir(t, data, appSpec, a), run, []vm.NIC{client})
		app.Wait(t, ctx, "state done n=1 ")
		netvm := vm.Launch(t, ns, mustDir(t, data, netSpec, a), run, []vm.NIC{provider})
		pingBoth(t, ctx, app, netvm, gw, addr)
	})

	t.Run("provider first", func(t *testing.T) {
		ns := nstest.New(t)
		ctx := vm.Context(t, 3*time.Minute)
		client, provider := vm.AddLink(ns, id)
		data, run := t.TempDir(), t.TempDir()
		netSpec, appSpec := specs()
		netvm := vm.Launch(t, ns, mustDir(t, data, netSpec, a), run, nil)
		netvm.Wait(t, ctx, "state done n=1 ")
		app := vm.Launch(t, ns, mustDir(t, data, appSpec, a), run, []vm.NIC{client})
		netvm.PlugNIC(t, "link-a546", provider)
		want := "addr eth0 " + gw + "/32"
		if _, err := netvm.Serial.WaitState(ctx, func(st []string) bool { return slices.Contains(st, want) }); err != nil {
			t.Fatalf("netvm: hot-plugged NIC not configured (%q): %v", want, err)
		}
		pingBoth(t, ctx, app, netvm, gw, addr)
	})
}

func mustDir(t *testing.T, data string, s vm.Spec, a *vm.Assets) string {
	t.Helper()
	dir, err := vm.WriteDir(data, s, a)
	if err != nil {
		t.Fatal(err)
	}
	return dir
}
