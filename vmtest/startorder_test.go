package vmtest

import (
	"testing"
	"time"

	"spectrum-os.org/netcfg/internal/mac"
	"spectrum-os.org/netcfg/vmtest/vm"
)

// TestStartOrder starts the documented pair under one spectrumd in both
// orders. Provider first: netvm runs when appvm-lynx starts, so spectrumd
// hot-plugs netvm's NIC through QMP and netvm's -watch agent configures it.
// Client first: netvm is stopped while appvm-lynx keeps running and started
// again, so its NIC of the running client's link is cold-plugged at launch
// and configured by the agent as an init hook. Both end connected in both
// directions; the client, never restarted, sees its gateway come back.
func TestStartOrder(t *testing.T) {
	e := newEnv(t, 4*time.Minute)
	e.vm("netvm", nil, "spectrum.watch spectrum.timeout=150")
	e.vm("appvm-lynx", []string{"netvm"}, "spectrum.timeout=150")
	d := e.serve()
	id := d.LinkID(t, "appvm-lynx", "netvm")
	gw, addr := id.Gateway().String(), id.ClientAddr().String()
	e.setTest("netvm", "ping:"+addr+",serve")
	e.setTest("appvm-lynx", "pingwatch:"+gw+",ping:"+gw+",serve")
	ctx := e.ctx

	var app *vm.Proc
	t.Run("provider first (hot-plug)", func(t *testing.T) {
		netvm := d.Start(t, "netvm")
		netvm.Wait(t, ctx, "state done n=1 ")
		if st, _ := netvm.Serial.State(1); len(filter(st, "addr eth")) != 0 {
			t.Fatalf("netvm has addresses before any client started: %q", st)
		}
		app = d.Start(t, "appvm-lynx")
		if p := d.Proc("netvm"); p != netvm {
			t.Fatalf("starting appvm-lynx restarted its running provider netvm")
		}
		waitState(t, ctx, netvm, "addr eth0 "+gw+"/32", "route "+addr+"/32 dev eth0 scope link")
		pingBoth(t, ctx, app, netvm, gw, addr)
		app.Wait(t, ctx, "reach "+gw+" up n=1")
	})
	if t.Failed() {
		t.FailNow()
	}
	t.Run("client first (cold-plug)", func(t *testing.T) {
		d.Stop(t, "netvm")
		app.Wait(t, ctx, "reach "+gw+" down n=1")
		netvm := d.Start(t, "netvm")
		// The NIC is there at boot: the init hook configures it, so the
		// first dump has it.
		netvm.Wait(t, ctx, "state done n=1 ")
		st, _ := netvm.Serial.State(1)
		nic := nicIn(t, netvm, st, id.MAC(mac.Provider).String())
		if got := filter(st, "addr "+nic+" "); len(got) != 1 || got[0] != "addr "+nic+" "+gw+"/32" {
			t.Errorf("netvm cold-plugged NIC %s addresses %q, want %s/32", nic, got, gw)
		}
		for _, proto := range []string{"icmp", "udp"} {
			if l := netvm.Wait(t, ctx, "ping "+addr+" "+proto+" ", "fail ping "+addr+" "+proto); !hasEvent(l, "ping "+addr+" "+proto+" ok") {
				t.Errorf("netvm: %s", l.Text)
			}
		}
		app.Wait(t, ctx, "reach "+gw+" up n=2")
		if p := d.Proc("appvm-lynx"); p != app {
			t.Errorf("appvm-lynx was restarted")
		}
	})
}

func hasEvent(l vm.Line, prefix string) bool {
	e, _ := vm.Event(l.Text)
	return len(e) >= len(prefix) && e[:len(prefix)] == prefix
}
