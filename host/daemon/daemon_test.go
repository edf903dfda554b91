package daemon

import (
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// newTestDaemon returns a daemon on a fake VMM and network; each of opts
// may change its options (and the fake VMM) before it is made.
func newTestDaemon(t testing.TB, vms map[string][]string, opts ...func(*Options, *fakeVMM)) (*Daemon, *fakeVMM, *fakeNet) {
	t.Helper()
	vmm, nw := &fakeVMM{}, &fakeNet{}
	opt := Options{
		State: t.TempDir(), Run: t.TempDir(), VMM: vmm, Net: nw,
		Links:   staticLinks{vms: vms},
		Log:     slog.New(slog.NewTextHandler(io.Discard, nil)),
		Backoff: func(int) time.Duration { return 10 * time.Millisecond },
	}
	for _, o := range opts {
		o(&opt, vmm)
	}
	d, err := New(opt)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.StopAll() })
	return d, vmm, nw
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestStartStartsProvidersFirstAndHotplugs(t *testing.T) {
	d, vmm, nw := newTestDaemon(t, map[string][]string{"netvm": nil, "appvm-lynx": {"netvm"}})
	if err := d.Start("appvm-lynx"); err != nil {
		t.Fatal(err)
	}
	id, _ := d.LinkID("appvm-lynx", "netvm")
	want := []string{"launch netvm", "hotplug netvm " + "0a:b3:ec:80:" + id.String(), "launch appvm-lynx"}
	if diff := cmp.Diff(want, vmm.events); diff != "" {
		t.Errorf("events (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"netvm:[]", "appvm-lynx:[0a:b3:ec:00:" + id.String() + "]"}, vmm.launches); diff != "" {
		t.Errorf("launches (-want +got):\n%s", diff)
	}
	if nw.count() != 1 {
		t.Errorf("links = %d, want 1", nw.count())
	}

	if err := d.Stop("appvm-lynx"); err != nil {
		t.Fatal(err)
	}
	if nw.count() != 0 {
		t.Errorf("links after stop = %d, want 0", nw.count())
	}
	if got := vmm.inst("netvm").NICs(); len(got) != 0 {
		t.Errorf("provider still has NICs %v after its client stopped", got)
	}
	st, _ := d.Status("appvm-lynx")
	if st.State != "stopped" {
		t.Errorf("state = %s", st.State)
	}
}

func TestProviderRestartColdPlugsRunningClients(t *testing.T) {
	d, vmm, _ := newTestDaemon(t, map[string][]string{"net": nil, "a": {"net"}, "b": {"net"}})
	for _, n := range []string{"a", "b"} {
		if err := d.Start(n); err != nil {
			t.Fatal(err)
		}
	}
	if err := d.Stop("net"); err != nil {
		t.Fatal(err)
	}
	if err := d.Start("net"); err != nil {
		t.Fatal(err)
	}
	ida, _ := d.LinkID("a", "net")
	idb, _ := d.LinkID("b", "net")
	want := []string{"0a:b3:ec:80:" + ida.String(), "0a:b3:ec:80:" + idb.String()}
	if diff := cmp.Diff(want, vmm.inst("net").NICs()); diff != "" {
		t.Errorf("provider NICs after restart (-want +got):\n%s", diff)
	}
	last := vmm.launches[len(vmm.launches)-1]
	if !strings.HasPrefix(last, "net:") || !strings.Contains(last, want[0]) || !strings.Contains(last, want[1]) {
		t.Errorf("provider relaunch %q does not cold-plug both links", last)
	}
}

func TestCrashRestartsWithSameMACs(t *testing.T) {
	d, vmm, nw := newTestDaemon(t, map[string][]string{"net": nil, "a": {"net"}})
	if err := d.Start("a"); err != nil {
		t.Fatal(err)
	}
	first := vmm.inst("a")
	first.end(io.ErrUnexpectedEOF)
	waitFor(t, "restart", func() bool { i := vmm.inst("a"); return i != first && i != nil })
	waitFor(t, "running", func() bool { st, _ := d.Status("a"); return st.State == "running" })
	st, _ := d.Status("a")
	if st.Restarts != 1 || !strings.Contains(st.LastExit, "unexpected EOF") {
		t.Errorf("status after crash = %+v", st)
	}
	if len(vmm.launches) != 3 || vmm.launches[1] != vmm.launches[2] {
		t.Errorf("launches %v: restart differs from first start", vmm.launches)
	}
	if nw.count() != 1 {
		t.Errorf("links = %d, want 1 (kept across the crash)", nw.count())
	}
	if got := vmm.inst("net").NICs(); len(got) != 1 {
		t.Errorf("provider NICs = %v, want the one link kept", got)
	}
}

func TestStartUnknownAndStopIdle(t *testing.T) {
	d, _, _ := newTestDaemon(t, map[string][]string{"net": nil})
	if err := d.Start("nope"); err == nil || !strings.Contains(err.Error(), "nope") {
		t.Errorf("Start(nope) = %v", err)
	}
	if err := d.Stop("net"); err != nil {
		t.Errorf("Stop of a stopped VM = %v, want nil", err)
	}
	if err := d.Start("net"); err != nil {
		t.Fatal(err)
	}
	if err := d.Start("net"); err != nil {
		t.Errorf("second Start = %v, want nil", err)
	}
}

func TestStopAllStopsClientsFirst(t *testing.T) {
	d, vmm, nw := newTestDaemon(t, map[string][]string{"net": nil, "vpn": {"net"}, "app": {"vpn"}})
	if err := d.Start("app"); err != nil {
		t.Fatal(err)
	}
	if err := d.StopAll(); err != nil {
		t.Fatal(err)
	}
	var order []string
	for _, e := range vmm.events {
		if n, ok := strings.CutPrefix(e, "shutdown "); ok {
			order = append(order, n)
		}
	}
	if diff := cmp.Diff([]string{"app", "vpn", "net"}, order); diff != "" {
		t.Errorf("shutdown order (-want +got):\n%s", diff)
	}
	if nw.count() != 0 {
		t.Errorf("%d links left after StopAll", nw.count())
	}
}

func TestSerialReachesLogFile(t *testing.T) {
	d, _, _ := newTestDaemon(t, map[string][]string{"net": nil})
	if err := d.Start("net"); err != nil {
		t.Fatal(err)
	}
	lf, err := d.Logs("net")
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "serial line in log file", func() bool {
		b, _ := os.ReadFile(lf.Path)
		return strings.Contains(string(b), "booted net\n")
	})
	if filepath.Base(lf.Path) != "net.log" {
		t.Errorf("log path %s", lf.Path)
	}
}

// TestUnplugTimeoutThenReplug: a provider whose guest never releases an
// unplugged NIC still holds its id, so the client's next start hot-plugs
// its link under another id instead of failing.
func TestUnplugTimeoutThenReplug(t *testing.T) {
	d, vmm, nw := newTestDaemon(t, map[string][]string{"net": nil, "a": {"net"}})
	if err := d.Start("a"); err != nil {
		t.Fatal(err)
	}
	net := vmm.inst("net")
	net.mu.Lock()
	net.holdNICs = true
	net.mu.Unlock()
	if err := d.Stop("a"); err != nil {
		t.Fatal(err)
	}
	if nw.count() != 0 {
		t.Errorf("links = %d after stop, want 0", nw.count())
	}
	if err := d.Start("a"); err != nil {
		t.Fatalf("second start: %v", err)
	}
	id, _ := d.LinkID("a", "net")
	net.mu.Lock()
	_, plain := net.nics[NICID(id)]
	_, second := net.nics[NICID(id)+"-1"]
	net.mu.Unlock()
	if !plain || !second {
		t.Errorf("provider NICs %v: want the stuck %s and the new %s-1", net.NICs(), NICID(id), NICID(id))
	}
	net.mu.Lock()
	net.holdNICs = false
	net.mu.Unlock()
	if err := d.Stop("a"); err != nil {
		t.Fatal(err)
	}
	net.mu.Lock()
	_, second = net.nics[NICID(id)+"-1"]
	net.mu.Unlock()
	if second {
		t.Errorf("the re-plugged NIC was not unplugged by its own id")
	}
}
