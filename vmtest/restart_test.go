package vmtest

import (
	"strconv"
	"testing"
	"time"

	"spectrum-os.org/netcfg/internal/mac"
	"spectrum-os.org/netcfg/vmtest/vm"
)

// TestRestart restarts each part of the documented pair in turn under
// spectrumd — the client, the provider, and spectrumd itself — and checks
// that the link keeps its id (so the client keeps its address) and traffic
// flows again, without restarting anything else. Both guests watch the path
// to the other (pingwatch), so a path coming back shows in the log of a VM
// that was not restarted.
func TestRestart(t *testing.T) {
	e := newEnv(t, 5*time.Minute)
	pair := newWatchedPair(e)
	d, id, gw, addr := pair.d, pair.id, pair.gw, pair.addr
	ctx := e.ctx
	clientAddr := "addr eth0 " + id.ClientPrefix().String()

	// checkClient waits for app's address and its path to the gateway.
	checkClient := func(t *testing.T, app *vm.Proc, up int) {
		t.Helper()
		st := waitState(t, ctx, app, clientAddr)
		if got := filter(st, "addr eth"); len(got) != 1 {
			t.Errorf("appvm-lynx addresses %q, want only %q", got, clientAddr)
		}
		if nic := nicIn(t, app, st, id.MAC(mac.Client).String()); nic != "eth0" {
			t.Errorf("appvm-lynx NIC of link %s is %s, want eth0", id, nic)
		}
		app.Wait(t, ctx, "reach "+gw+" up n="+strconv.Itoa(up))
	}

	app := d.Start(t, "appvm-lynx")
	netvm := d.Proc("netvm")
	checkClient(t, app, 1)
	netvm.Wait(t, ctx, "reach "+addr+" up n=1")
	if t.Failed() {
		t.FailNow()
	}

	t.Run("client", func(t *testing.T) {
		d.Stop(t, "appvm-lynx")
		netvm.Wait(t, ctx, "reach "+addr+" down n=1")
		app = d.Start(t, "appvm-lynx")
		if got := d.LinkID(t, "appvm-lynx", "netvm"); got != id {
			t.Errorf("link id after the client's restart %s, want %s", got, id)
		}
		checkClient(t, app, 1)
		netvm.Wait(t, ctx, "reach "+addr+" up n=2")
		if d.Proc("netvm") != netvm {
			t.Errorf("netvm was restarted")
		}
	})
	if t.Failed() {
		t.FailNow()
	}

	t.Run("provider", func(t *testing.T) {
		d.Stop(t, "netvm")
		app.Wait(t, ctx, "reach "+gw+" down n=1")
		netvm = d.Start(t, "netvm")
		netvm.Wait(t, ctx, "reach "+addr+" up n=1")
		app.Wait(t, ctx, "reach "+gw+" up n=2")
		if d.Proc("appvm-lynx") != app {
			t.Errorf("appvm-lynx was restarted")
		}
		if got := d.LinkID(t, "appvm-lynx", "netvm"); got != id {
			t.Errorf("link id after the provider's restart %s, want %s", got, id)
		}
	})
	if t.Failed() {
		t.FailNow()
	}

	t.Run("spectrumd", func(t *testing.T) {
		if err := d.Terminate(); err != nil {
			t.Fatalf("spectrumd after SIGTERM: %v", err)
		}
		for _, p := range []*vm.Proc{app, netvm} {
			select {
			case <-p.Exited():
			case <-time.After(10 * time.Second):
				t.Errorf("%s (pid %d) still running after spectrumd stopped", p.Name, p.PID)
			}
		}
		if out, _ := e.ns.TryIP("-br", "link", "show", "type", "bridge"); len(out) != 0 {
			t.Errorf("bridges left after spectrumd stopped:\n%s", out)
		}
		d = e.serve()
		if got := d.LinkID(t, "appvm-lynx", "netvm"); got != id {
			t.Errorf("link id after spectrumd's restart %s, want %s", got, id)
		}
		app = d.Start(t, "appvm-lynx")
		checkClient(t, app, 1)
		d.Proc("netvm").Wait(t, ctx, "reach "+addr+" up n=1")
	})
}
