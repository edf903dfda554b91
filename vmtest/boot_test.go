package vmtest

import (
	"slices"
	"strings"
	"testing"
	"time"

	"spectrum-os.org/netcfg/internal/mac"
	"spectrum-os.org/netcfg/internal/nstest"
	"spectrum-os.org/netcfg/vmtest/vm"
)

// TestBootForeignNIC boots one guest with a NIC that lacks the 0A:B3:EC OUI
// beside a client NIC: the init loads its modules, finds its disk, the agent
// succeeds, configures the client NIC and leaves the foreign one alone
// (down, no address), its -watch instance keeps running, and the guest
// powers itself off. QEMU is launched without spectrumd here (vm.Launch,
// still host/qemu's command line): spectrumd only ever gives a VM 0A:B3:EC
// NICs.
func TestBootForeignNIC(t *testing.T) {
	k := vm.Require(t)
	a := vm.BuildAssets(t, k)
	ns := nstest.New(t)
	ctx := vm.Context(t, 3*time.Minute)

	ns.AddTap("spf-0", "")
	id := mac.LinkID(0x0102)
	client, _ := vm.AddLink(ns, id)
	dir, err := vm.WriteDir(t.TempDir(), vm.Spec{Name: "lonely", Test: "poweroff", Cmdline: "spectrum.watch spectrum.baseline"}, a)
	if err != nil {
		t.Fatal(err)
	}
	const foreign = "52:54:00:12:34:56"
	p := vm.Launch(t, ns, dir, []vm.NIC{{Tap: "spf-0", MAC: foreign}, client})
	p.Wait(t, ctx, "poweroff")
	t.Logf("%v", p.Timing())

	if fails := p.Serial.Events("fail"); len(fails) > 0 {
		t.Errorf("init reported failures: %q", fails)
	}
	if exit := p.Timing().AgentExit; exit != "0" {
		t.Errorf("spectrum-netcfg exit status %q, want 0 (a foreign NIC is not an error)", exit)
	}
	if w := p.Serial.Events("agent watch pid="); len(w) != 1 {
		t.Errorf("agent -watch not started: %q", w)
	}
	if _, err := p.Serial.Wait(ctx, "disks ok n=1"); err != nil {
		t.Error(err)
	}
	nic := nicName(t, p, foreign)
	if got := vm.Field(events(p, "link "+nic+" ")[0], "up"); got != "false" {
		t.Errorf("foreign NIC %s up=%s, want false (untouched)", nic, got)
	}
	if got := events(p, "addr "+nic+" "); len(got) != 0 {
		t.Errorf("foreign NIC %s has addresses %q, want none", nic, got)
	}
	for _, r := range events(p, "route ") {
		if strings.Contains(r, " dev "+nic) {
			t.Errorf("route %q on the foreign NIC", r)
		}
	}
	cnic := nicName(t, p, client.MAC)
	if got, want := events(p, "addr "+cnic+" "), []string{"addr " + cnic + " " + id.ClientPrefix().String()}; !slices.Equal(got, want) {
		t.Errorf("client NIC beside the foreign one: addresses %q, want %q", got, want)
	}
	for _, l := range p.Serial.Lines() {
		if strings.Contains(l.Text, foreign) && !strings.HasPrefix(strings.TrimSpace(l.Text), vm.Prefix) {
			t.Errorf("the agent mentions the foreign NIC: %q", l.Text)
		}
	}
	select {
	case <-p.Exited():
	case <-ctx.Done():
		t.Errorf("QEMU still running after the guest powered off")
	}
}

// TestBootNoIPv6: a guest kernel booted with ipv6.disable=1 gets its IPv4
// as always, and the agent's console says, once per NIC, that IPv6 is off;
// its exit status is 0.
func TestBootNoIPv6(t *testing.T) {
	k := vm.Require(t)
	a := vm.BuildAssets(t, k)
	ns := nstest.New(t)
	ctx := vm.Context(t, 3*time.Minute)

	id := mac.LinkID(0x0103)
	client, _ := vm.AddLink(ns, id)
	dir, err := vm.WriteDir(t.TempDir(), vm.Spec{Name: "nov6", Test: "poweroff", Cmdline: "ipv6.disable=1"}, a)
	if err != nil {
		t.Fatal(err)
	}
	p := vm.Launch(t, ns, dir, []vm.NIC{client})
	p.Wait(t, ctx, "poweroff")
	if exit := p.Timing().AgentExit; exit != "0" {
		t.Errorf("spectrum-netcfg exit status %q, want 0 (no IPv6 is not an error)", exit)
	}
	cnic := nicName(t, p, client.MAC)
	if got, want := events(p, "addr "+cnic+" "), []string{"addr " + cnic + " " + id.ClientPrefix().String()}; !slices.Equal(got, want) {
		t.Errorf("client NIC: addresses %q, want %q", got, want)
	}
	want := cnic + " " + client.MAC + ": IPv6 off (no IPv6 in the kernel): IPv4 only"
	n := 0
	for _, l := range p.Serial.Lines() {
		if strings.TrimSpace(l.Text) == want {
			n++
		}
	}
	if n != 1 {
		t.Errorf("the console has %q %d times, want once", want, n)
	}
}
