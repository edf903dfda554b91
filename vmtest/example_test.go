package vmtest

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"spectrum/internal/mac"
	"spectrum/internal/nstest"
	"spectrum/vmtest/vm"
)

// TestDocumentedExample boots the reference documentation's example by hand
// (QEMU launched by the test, not yet by spectrumd): netvm provides
// networking to appvm-lynx over link a5:46. The agent must give appvm-lynx
// 100.64.165.70/16 with a default route via 169.254.165.70, give netvm the
// gateway and the host route, and packets must flow both ways.
func TestDocumentedExample(t *testing.T) {
	k := vm.Require(t)
	a := vm.BuildAssets(t, k)
	ns := nstest.New(t)
	ctx := vm.Context(t, 3*time.Minute)
	start := time.Now()

	id := mac.LinkID(0xa546)
	client, provider := vm.AddLink(ns, id)
	data, run := t.TempDir(), t.TempDir()
	gw, addr := id.Gateway().String(), id.ClientAddr().String()
	netDir, err := vm.WriteDir(data, vm.Spec{Name: "netvm", Test: "ping:" + addr + ",serve"}, a)
	if err != nil {
		t.Fatal(err)
	}
	appDir, err := vm.WriteDir(data, vm.Spec{Name: "appvm-lynx", Providers: []string{"netvm"}, Test: "ping:" + gw + ",serve"}, a)
	if err != nil {
		t.Fatal(err)
	}
	netvm := vm.Launch(t, ns, netDir, run, []vm.NIC{provider})
	app := vm.Launch(t, ns, appDir, run, []vm.NIC{client})

	for _, p := range []*vm.Proc{netvm, app} {
		p.Wait(t, ctx, "state done n=1 ")
		if _, err := p.Serial.Wait(ctx, "disks ok"); err != nil {
			t.Errorf("%s: disks: %v", p.Name, err)
		}
		if got, want := p.Serial.Events("disk vda"), fmt.Sprintf("disk vda marker=%q", vm.DiskMarker(p.Name)); len(got) != 1 || !strings.HasPrefix(got[0], want) {
			t.Errorf("%s: disk report %q, want %q", p.Name, got, want)
		}
		t.Logf("%s: %v", p.Name, p.Timing())
		if exit := p.Timing().AgentExit; exit != "0" {
			t.Errorf("%s: spectrum-netcfg exit status %q, want 0", p.Name, exit)
		}
	}

	appNIC := nicName(t, app, client.MAC)
	netNIC := nicName(t, netvm, provider.MAC)
	if diff := cmp.Diff([]string{
		"addr " + appNIC + " " + id.ClientPrefix().String(),
	}, events(app, "addr "+appNIC)); diff != "" {
		t.Errorf("appvm-lynx addresses (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{
		fmt.Sprintf("route %s dev %s scope link", id.ClientPrefix().Masked(), appNIC),
		fmt.Sprintf("route default via %s dev %s metric %s onlink", gw, appNIC, ifindex(app, appNIC)),
	}, events(app, "route ")); diff != "" {
		t.Errorf("appvm-lynx routes (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"addr " + netNIC + " " + gw + "/32"}, events(netvm, "addr "+netNIC)); diff != "" {
		t.Errorf("netvm addresses (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{fmt.Sprintf("route %s/32 dev %s scope link", addr, netNIC)}, events(netvm, "route ")); diff != "" {
		t.Errorf("netvm routes (-want +got):\n%s", diff)
	}
	if got := vm.Field(events(netvm, "link "+netNIC+" ")[0], "rp_filter"); got != "1" {
		t.Errorf("netvm %s rp_filter = %s, want 1 (strict)", netNIC, got)
	}

	if t.Failed() {
		// Without the right configuration the pings below could only
		// time out.
		t.FailNow()
	}

	pingBoth(t, ctx, app, netvm, gw, addr)
	t.Logf("wall time %.1fs", time.Since(start).Seconds())
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

func ifindex(p *vm.Proc, nic string) string {
	for _, e := range events(p, "link "+nic+" ") {
		return vm.Field(e, "index")
	}
	return "?"
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
