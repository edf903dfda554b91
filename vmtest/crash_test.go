package vmtest

import (
	"strings"
	"syscall"
	"testing"
	"time"

	"spectrum-os.org/netcfg/internal/mac"
)

// TestQEMUKilled kills -9 the QEMU of each end of the documented pair in
// turn. spectrumd restarts the VM with the same MAC (the client gets its
// address back; a restarted provider gets the running client's link
// cold-plugged again), traffic flows again without anything else being
// restarted, and the host has exactly the link's bridge and two taps.
func TestQEMUKilled(t *testing.T) {
	e := newEnv(t, 5*time.Minute)
	pair := newWatchedPair(e)
	d, id, gw, addr := pair.d, pair.id, pair.gw, pair.addr
	ctx := e.ctx

	app := d.Start(t, "appvm-lynx")
	netvm := d.Proc("netvm")
	app.Wait(t, ctx, "reach "+gw+" up n=1")
	netvm.Wait(t, ctx, "reach "+addr+" up n=1")
	if t.Failed() {
		t.FailNow()
	}

	hostLinks := func(t *testing.T) {
		t.Helper()
		// Nothing of ours in spectrumd's own namespace; the link in the
		// links' namespace.
		if out, err := e.ns.TryIP("-br", "link"); err != nil || strings.Contains(string(out), "sp") {
			t.Errorf("spectrumd's own namespace: %v\n%s", err, out)
		}
		out, err := d.LinksIP("-br", "link")
		if err != nil {
			t.Fatal(err)
		}
		var ours []string
		for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			if f := strings.Fields(l); len(f) > 0 && strings.HasPrefix(f[0], "sp") {
				ours = append(ours, strings.SplitN(f[0], "@", 2)[0])
			}
		}
		s := id.String()
		want := []string{"spbr-" + s[:2] + s[3:], "spc-" + s[:2] + s[3:], "spp-" + s[:2] + s[3:]}
		if strings.Join(sorted(ours), " ") != strings.Join(sorted(want), " ") {
			t.Errorf("host links %q, want exactly %q", ours, want)
		}
	}

	t.Run("client", func(t *testing.T) {
		if err := syscall.Kill(app.PID, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		app = d.Relaunched(t, ctx, "appvm-lynx", app.PID)
		st := waitState(t, ctx, app, "addr eth0 "+id.ClientPrefix().String())
		if nic := nicIn(t, app, st, id.MAC(mac.Client).String()); nic != "eth0" {
			t.Errorf("relaunched client's NIC of link %s is %s, want eth0", id, nic)
		}
		app.Wait(t, ctx, "reach "+gw+" up n=1")
		// netvm's probe reaches the new boot. (Whether netvm saw the path
		// go down at all depends on how fast the client came back: its
		// probe calls a path down after 3 missed rounds.)
		app.Wait(t, ctx, "echo from "+gw)
		if d.Proc("netvm") != netvm {
			t.Errorf("netvm was restarted")
		}
		if st := d.Status(t, "appvm-lynx"); st.Restarts != 1 || !strings.Contains(st.LastExit, "killed") {
			t.Errorf("client status after kill -9: restarts %d, last exit %q; want 1 and killed", st.Restarts, st.LastExit)
		}
		hostLinks(t)
	})
	if t.Failed() {
		t.FailNow()
	}

	t.Run("provider", func(t *testing.T) {
		if err := syscall.Kill(netvm.PID, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		netvm = d.Relaunched(t, ctx, "netvm", netvm.PID)
		netvm.Wait(t, ctx, "reach "+addr+" up n=1")
		netvm.Wait(t, ctx, "echo from "+addr) // the client's probe reaches the new boot
		if d.Proc("appvm-lynx") != app {
			t.Errorf("appvm-lynx was restarted")
		}
		if got := d.LinkID(t, "appvm-lynx", "netvm"); got != id {
			t.Errorf("link id after the provider's crash %s, want %s", got, id)
		}
		hostLinks(t)
	})
}
