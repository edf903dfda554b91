package daemon

import (
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"spectrum-os.org/netcfg/host/config"
	"spectrum-os.org/netcfg/host/control"
	"spectrum-os.org/netcfg/internal/mac"
)

// withUplinks gives the fake configuration uplinks and the fake host the
// bridges that exist.
func withUplinks(vms map[string][]string, uplinks map[string][]config.Uplink, bridges ...string) func(*Options, *fakeVMM) {
	return func(o *Options, _ *fakeVMM) {
		o.Links = staticLinks{vms: vms, uplinks: uplinks}
		nw := o.Net.(*fakeNet)
		nw.bridges = map[string]bool{}
		for _, b := range bridges {
			nw.bridges[b] = true
		}
	}
}

// TestUplinks: a provider with an uplink gets its tap at start, boots with
// its link NICs first and its uplink NIC last, keeps the same tap and MAC
// when it crashes and is restarted, and loses the tap when it stops.
func TestUplinks(t *testing.T) {
	vms := map[string][]string{"net": nil, "app": {"net"}}
	up := config.Uplink{Iface: "br-lan", MAC: mac.DeriveUplink("net", "br-lan"), Derived: true}
	d, vmm, nw := newTestDaemon(t, vms, withUplinks(vms, map[string][]config.Uplink{"net": {up}}, "br-lan"))
	m := up.MAC.String()
	if err := d.Start("app"); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"add " + m + " br-lan"}, nw.uplinkEvents()); diff != "" {
		t.Errorf("uplink taps after start (-want +got):\n%s", diff)
	}
	id, _ := d.LinkID("app", "net")
	provider := id.MAC(mac.Provider).String()
	// net launched before app's link was wired: the uplink only.
	if diff := cmp.Diff([]string{"net:[" + m + "]", "app:[" + id.MAC(mac.Client).String() + "]"}, vmm.launches); diff != "" {
		t.Errorf("launches (-want +got):\n%s", diff)
	}
	st, _ := d.Status("net")
	if diff := cmp.Diff([]control.UplinkStatus{{Iface: "br-lan", MAC: m}}, st.Uplinks); diff != "" {
		t.Errorf("status uplinks (-want +got):\n%s", diff)
	}

	// A crash: relaunched with the link cold-plugged before the uplink,
	// on the tap it had.
	first := vmm.inst("net")
	first.end(io.ErrUnexpectedEOF)
	waitFor(t, "restart", func() bool { i := vmm.inst("net"); return i != first && i != nil })
	waitFor(t, "running", func() bool { st, _ := d.Status("net"); return st.State == "running" })
	vmm.mu.Lock()
	last := vmm.launches[len(vmm.launches)-1]
	vmm.mu.Unlock()
	if want := "net:[" + provider + " " + m + "]"; last != want {
		t.Errorf("relaunch %q, want %q (link NICs, then the uplink)", last, want)
	}
	if ids := vmm.inst("net").nicIDs(); !cmp.Equal(ids, []string{NICID(id), UplinkNICID(0)}) {
		t.Errorf("NIC ids %v", ids)
	}
	if diff := cmp.Diff([]string{"add " + m + " br-lan"}, nw.uplinkEvents()); diff != "" {
		t.Errorf("uplink taps after the restart: the tap was not kept (-want +got):\n%s", diff)
	}

	if err := d.Stop("net"); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"add " + m + " br-lan", "delete " + m}, nw.uplinkEvents()); diff != "" {
		t.Errorf("uplink taps after stop (-want +got):\n%s", diff)
	}
}

// TestUplinkMissingBridge: a VM whose bridge is missing does not start (it
// is failed, not retried), and says which bridge; a VM on a bridge that is there starts, and the VM whose
// bridge was missing starts once it is there.
func TestUplinkMissingBridge(t *testing.T) {
	vms := map[string][]string{"lonely": nil, "net": nil, "app": {"net"}}
	ups := map[string][]config.Uplink{
		"lonely": {{Iface: "br-lan", MAC: mac.DeriveUplink("lonely", "br-lan")}, {Iface: "br-gone", MAC: mac.DeriveUplink("lonely", "br-gone")}},
		"net":    {{Iface: "br-lan", MAC: mac.DeriveUplink("net", "br-lan")}},
	}
	d, vmm, nw := newTestDaemon(t, vms, withUplinks(vms, ups, "br-lan"))
	if err := d.Start("app"); err != nil {
		t.Fatal(err)
	}
	err := d.Start("lonely")
	if err == nil || !strings.Contains(err.Error(), "br-gone") || !strings.Contains(err.Error(), "lonely") {
		t.Fatalf("Start(lonely) = %v, want an error naming lonely and br-gone", err)
	}
	if st, _ := d.Status("lonely"); st.State != stateFailed || st.Restarts != 0 || !strings.Contains(st.Error, "br-gone") {
		t.Errorf("lonely: %+v, want failed (not retried), naming br-gone", st)
	}
	for _, l := range vmm.launches {
		if strings.HasPrefix(l, "lonely:") {
			t.Errorf("lonely was launched: %v", vmm.launches)
		}
	}
	// Its tap on br-lan, made before br-gone failed, is gone again; net's stays.
	want := []string{"add " + ups["net"][0].MAC.String() + " br-lan", "add " + ups["lonely"][0].MAC.String() + " br-lan", "delete " + ups["lonely"][0].MAC.String()}
	if diff := cmp.Diff(want, nw.uplinkEvents()); diff != "" {
		t.Errorf("uplink taps (-want +got):\n%s", diff)
	}
	for _, n := range []string{"net", "app"} {
		if st, _ := d.Status(n); st.State != "running" {
			t.Errorf("%s: %s, want running", n, st.State)
		}
	}
	nw.mu.Lock()
	nw.bridges["br-gone"] = true
	nw.mu.Unlock()
	if err := d.Start("lonely"); err != nil {
		t.Fatalf("Start(lonely) once br-gone exists: %v", err)
	}
}

// TestUplinkMACHeld: a VM whose configuration now has the uplink MAC of a
// VM still running with an older configuration does not start, and the
// running VM keeps its tap.
func TestUplinkMACHeld(t *testing.T) {
	vms := map[string][]string{"a": nil, "b": nil}
	shared := mac.DeriveUplink("a", "br-lan")
	ups := map[string][]config.Uplink{"a": {{Iface: "br-lan", MAC: shared}}}
	d, _, nw := newTestDaemon(t, vms, withUplinks(vms, ups, "br-lan"))
	if err := d.Start("a"); err != nil {
		t.Fatal(err)
	}
	delete(ups, "a")
	ups["b"] = []config.Uplink{{Iface: "br-lan", MAC: shared}}
	err := d.Start("b")
	if err == nil || !strings.Contains(err.Error(), "VM a's") {
		t.Fatalf("Start(b) = %v, want an error naming VM a", err)
	}
	if diff := cmp.Diff([]string{"add " + shared.String() + " br-lan"}, nw.uplinkEvents()); diff != "" {
		t.Errorf("uplink taps (-want +got):\n%s", diff)
	}
	// a runs with the uplink it was started with.
	if st, _ := d.Status("a"); st.State != "running" || len(st.Uplinks) != 1 {
		t.Errorf("a: %+v", st)
	}
	if err := d.Stop("a"); err != nil {
		t.Fatal(err)
	}
	if err := d.Start("b"); err != nil {
		t.Fatalf("Start(b) once a stopped: %v", err)
	}
}

// TestUplinkRestartWhileBridgeGone: a VM whose bridge vanished while it ran
// is not relaunched cut off: it waits in backoff until the bridge is back.
func TestUplinkRestartWhileBridgeGone(t *testing.T) {
	vms := map[string][]string{"net": nil}
	ups := map[string][]config.Uplink{"net": {{Iface: "br-lan", MAC: mac.DeriveUplink("net", "br-lan")}}}
	d, vmm, nw := newTestDaemon(t, vms, withUplinks(vms, ups, "br-lan"))
	if err := d.Start("net"); err != nil {
		t.Fatal(err)
	}
	nw.mu.Lock()
	delete(nw.bridges, "br-lan")
	nw.mu.Unlock()
	first := vmm.inst("net")
	first.end(errors.New("crash"))
	waitFor(t, "a failed relaunch", func() bool { st, _ := d.Status("net"); return st.State == "backoff" && st.Restarts >= 2 })
	if vmm.inst("net") != first {
		t.Error("relaunched while its bridge is missing")
	}
	nw.mu.Lock()
	nw.bridges["br-lan"] = true
	nw.mu.Unlock()
	waitFor(t, "relaunch once the bridge is back", func() bool { st, _ := d.Status("net"); return st.State == "running" })
}
