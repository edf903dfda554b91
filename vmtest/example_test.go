package vmtest

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"spectrum-os.org/netcfg/host/link"
	"spectrum-os.org/netcfg/internal/mac"
	"spectrum-os.org/netcfg/vmtest/vm"
)

// TestDocumentedExample runs the reference documentation's example under
// spectrumd: netvm provides networking to appvm-lynx. `spectrumd start
// appvm-lynx` starts netvm first and hot-plugs its NIC of the link (its
// agent runs with -watch); the agent must give appvm-lynx 100.64.A.B/16
// from its MAC with a default route via 169.254.A.B, give netvm the gateway
// and the host route, and packets must flow both ways.
func TestDocumentedExample(t *testing.T) {
	e := newEnv(t, 3*time.Minute)
	start := time.Now()
	e.vm("netvm", nil, "spectrum.watch spectrum.baseline")
	e.vm("appvm-lynx", []string{"netvm"}, "spectrum.baseline")
	d := e.serve()
	id := d.LinkID(t, "appvm-lynx", "netvm")
	gw, addr := id.Gateway().String(), id.ClientAddr().String()
	e.setTest("netvm", "ping:"+addr+",serve")
	e.setTest("appvm-lynx", "ping:"+gw+",serve")

	app := d.Start(t, "appvm-lynx")
	netvm := d.Proc("netvm")
	if netvm == nil {
		t.Fatalf("spectrumd start appvm-lynx did not start its provider netvm: %+v", d.List(t))
	}
	ctx := e.ctx
	for _, p := range []*vm.Proc{netvm, app} {
		p.Wait(t, ctx, "state done n=1 ")
		if _, err := p.Serial.Wait(ctx, "disks ok"); err != nil {
			t.Errorf("%s: disks: %v", p.Name, err)
		}
		if got, want := p.Serial.Events("disk vda"), fmt.Sprintf("disk vda marker=%q", vm.DiskMarker(p.Name)); len(got) != 1 || !strings.HasPrefix(got[0], want) {
			t.Errorf("%s: disk report %q, want %q", p.Name, got, want)
		}
		if exit := p.Timing().AgentExit; exit != "0" {
			t.Errorf("%s: spectrum-netcfg exit status %q, want 0", p.Name, exit)
		}
	}

	clientMAC, providerMAC := id.MAC(mac.Client).String(), id.MAC(mac.Provider).String()
	appState, _ := app.Serial.State(1)
	appNIC := nicIn(t, app, appState, clientMAC)
	if diff := cmp.Diff([]string{"addr " + appNIC + " " + id.ClientPrefix().String()}, filter(appState, "addr "+appNIC)); diff != "" {
		t.Errorf("appvm-lynx addresses (-want +got):\n%s", diff)
	}
	wantRoutes := []string{
		fmt.Sprintf("route %s dev %s scope link", id.ClientPrefix().Masked(), appNIC),
		fmt.Sprintf("route default via %s dev %s metric %s onlink", gw, appNIC, ifindexIn(appState, appNIC)),
		fmt.Sprintf("route %s/32 dev %s scope link", gw, appNIC),
	}
	if diff := cmp.Diff(sorted(wantRoutes), filter(appState, "route ")); diff != "" {
		t.Errorf("appvm-lynx routes (-want +got):\n%s", diff)
	}
	// netvm's NIC was hot-plugged while it booted: its -watch agent
	// configures it whenever it appears, so look for the first dump that
	// has the gateway.
	netState := waitState(t, ctx, netvm, "addr eth0 "+gw+"/32")
	netNIC := nicIn(t, netvm, netState, providerMAC)
	if diff := cmp.Diff([]string{"addr " + netNIC + " " + gw + "/32"}, filter(netState, "addr "+netNIC)); diff != "" {
		t.Errorf("netvm addresses (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{fmt.Sprintf("route %s/32 dev %s scope link", addr, netNIC)}, filter(netState, "route ")); diff != "" {
		t.Errorf("netvm routes (-want +got):\n%s", diff)
	}
	if got := vm.Field(filter(netState, "link "+netNIC+" ")[0], "rp_filter"); got != "1" {
		t.Errorf("netvm %s rp_filter = %s, want 1 (strict)", netNIC, got)
	}
	if t.Failed() {
		// Without the right configuration the pings below could only
		// time out.
		t.FailNow()
	}

	pingBoth(t, ctx, app, netvm, gw, addr)
	// Every test guest has a shell on its virtio-console (hvc0), for
	// `spectrumd console NAME`.
	for _, p := range []*vm.Proc{netvm, app} {
		want := "hvc0-42 " + p.Name
		if out, err := d.ConsoleRun(ctx, p.Name, "echo hvc0-$((6*7)) $(hostname)", want); err != nil {
			t.Errorf("%v\nconsole showed:\n%s", err, out)
		}
	}
	for _, p := range []*vm.Proc{netvm, app} {
		bt, _ := d.BootTime(p)
		t.Logf("%s: QEMU started → agent done %.2fs (spectrumd's clock); %v", p.Name, bt.Seconds(), p.Timing())
	}
	// spectrumd stop: the guest powers off on the ACPI power button, the
	// NIC is unplugged from netvm and the link deleted.
	took := d.Stop(t, "appvm-lynx")
	// Graceful, by the order of events rather than a time bound: the
	// guest saw the button and powered itself off, and then QEMU exited
	// by itself (status 0), not killed at the stop timeout.
	if _, err := app.Serial.Wait(ctx, "power button pressed"); err != nil {
		t.Errorf("appvm-lynx did not see the power button: %v", err)
	}
	if _, err := app.Serial.Wait(ctx, "poweroff"); err != nil {
		t.Errorf("appvm-lynx did not power itself off: %v", err)
	}
	stopped, err := d.WaitRecord(ctx, func(r vm.Record) bool { return r.VM == "appvm-lynx" && r.Msg == "VM stopped" })
	if err != nil || stopped.Exit != "exit status 0" {
		t.Errorf("spectrumd's record of appvm-lynx's stop %+v (%v), want QEMU's exit status 0: the guest was killed, not powered off", stopped, err)
	}
	if out, err := d.LinksIP("-br", "link"); err != nil || strings.Contains(string(out), link.Name(id, link.Bridge)) {
		t.Errorf("link %s's bridge still exists after appvm-lynx stopped (%v):\n%s", id, err, out)
	}
	t.Logf("stop took %v; wall time %.1fs", took, time.Since(start).Seconds())
}

func ifindexIn(st []string, nic string) string {
	for _, e := range filter(st, "link "+nic+" ") {
		return vm.Field(e, "index")
	}
	return "?"
}

// pingBoth waits for the client to reach its gateway and the provider to
// reach the client, each with ICMP echo and UDP echo (the init retries until
// the peer answers).
func pingBoth(t *testing.T, ctx context.Context, client, provider *vm.Proc, gw, addr string) {
	t.Helper()
	for _, c := range []struct {
		p  *vm.Proc
		to string
	}{{client, gw}, {provider, addr}} {
		for _, proto := range []string{"icmp", "udp"} {
			l := c.p.Wait(t, ctx, "ping "+c.to+" "+proto+" ", "fail ping "+c.to+" "+proto)
			if e, _ := vm.Event(l.Text); !strings.HasPrefix(e, "ping "+c.to+" "+proto+" ok") {
				t.Errorf("%s: %s", c.p.Name, e)
			}
		}
	}
}

func sorted(s []string) []string {
	s = append([]string(nil), s...)
	sort.Strings(s)
	return s
}

// nicName returns the guest's name of the NIC with the given MAC, from the
// init's "link NAME index=N mac=M ..." lines.
func nicName(t *testing.T, p *vm.Proc, hw string) string {
	t.Helper()
	for _, e := range events(p, "link ") {
		if vm.Field(e, "mac") == hw {
			return strings.Fields(e)[1]
		}
	}
	t.Fatalf("%s: no NIC with MAC %s in %q", p.Name, hw, events(p, "link "))
	return ""
}

// events returns the lines of p's first state dump (right after the agent's
// run) that start with prefix, sorted (wants are written in sorted order).
func events(p *vm.Proc, prefix string) []string {
	st, _ := p.Serial.State(1)
	var out []string
	for _, e := range st {
		if strings.HasPrefix(e, prefix) {
			out = append(out, e)
		}
	}
	sort.Strings(out)
	return out
}
