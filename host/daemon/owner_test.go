package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"spectrum-os.org/netcfg/host/control"
	"spectrum-os.org/netcfg/internal/mac"
	"spectrum-os.org/netcfg/internal/syncbuf"
)

// gate holds a fake's call until the test opens it: entered is closed when
// the first call arrives.
type gate struct {
	entered, open chan struct{}
	once, opened  sync.Once
}

func newGate(t *testing.T) *gate {
	g := &gate{entered: make(chan struct{}), open: make(chan struct{})}
	t.Cleanup(g.release) // a failing test must not leave the daemon stuck
	return g
}

func (g *gate) hold() {
	g.once.Do(func() { close(g.entered) })
	<-g.open
}

func (g *gate) release() { g.opened.Do(func() { close(g.open) }) }

// within runs f and fails the test if it has not returned in a bound far
// beyond what it needs: the assertion is that it returns at all while
// something else hangs, not how fast.
func within(t *testing.T, what string, f func() error) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- f() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("%s: %v", what, err)
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("%s did not return while the daemon was busy elsewhere", what)
	}
}

// TestReadersAnswerWhileUnplugHangs: a client stops while its provider's
// unplug hangs (a frozen VMM). list, status, logs and console answer before
// the unplug ends, asserted by order: the unplug is let go only after they
// have returned, and the stop only returns after that.
func TestReadersAnswerWhileUnplugHangs(t *testing.T) {
	d, vmm, nw := newTestDaemon(t, map[string][]string{"net": nil, "app": {"net"}})
	path := serveControl(t, d)
	if err := d.Start("app"); err != nil {
		t.Fatal(err)
	}
	g := newGate(t)
	vmm.set(func(f *fakeVMM) {
		f.onUnplug = func(context.Context, string, string) error { g.hold(); return nil }
	})
	stopped := make(chan error, 1)
	go func() { stopped <- d.Stop("app") }()
	<-g.entered

	within(t, "readers", func() error {
		var errs []error
		if l := d.List(); len(l) != 2 {
			errs = append(errs, fmt.Errorf("list: %+v", l))
		}
		if st, err := d.Status("app"); err != nil || st.State != stateStopping {
			errs = append(errs, fmt.Errorf("status app: %+v, %v; want stopping", st, err))
		}
		if st, err := d.Status("net"); err != nil || st.State != stateRunning {
			errs = append(errs, fmt.Errorf("status net: %+v, %v; want running", st, err))
		}
		for _, req := range []control.Request{{Op: "list"}, {Op: "status", Name: "net"}, {Op: "logs", Name: "net"}} {
			if _, err := control.Call(path, req, wait); err != nil {
				errs = append(errs, fmt.Errorf("%s over the socket: %w", req.Op, err))
			}
		}
		if _, err := control.Call(path, control.Request{Op: "console", Name: "net"}, wait); err == nil || !strings.Contains(err.Error(), "console of net") {
			errs = append(errs, fmt.Errorf("console of net (no console socket in the fake): %v", err))
		}
		return errors.Join(errs...)
	})
	select {
	case err := <-stopped:
		t.Fatalf("stop returned (%v) before the unplug was let go", err)
	default:
	}
	g.release()
	if err := <-stopped; err != nil {
		t.Fatal(err)
	}
	if nw.count() != 0 {
		t.Errorf("%d links after the stop, want 0", nw.count())
	}
}

// TestStopRacingTwoStarts: two starts arrive while a stop is powering the
// VM down. Exactly one of them launches it; the other finds it running.
// Never two instances at once, and nothing left restarting.
func TestStopRacingTwoStarts(t *testing.T) {
	lc := &liveConfig{vms: map[string][]string{"net": nil, "app": {"net"}}}
	d, vmm, nw := newTestDaemon(t, nil, func(o *Options, _ *fakeVMM) { o.Links = lc })
	if err := d.Start("app"); err != nil {
		t.Fatal(err)
	}
	g := newGate(t)
	vmm.set(func(f *fakeVMM) {
		f.onShutdown = func(name string) {
			if name == "app" {
				g.hold()
			}
		}
	})
	before := vmm.launchCount()
	errs := make(chan error, 3)
	go func() { errs <- d.Stop("app") }()
	<-g.entered
	lc.mu.Lock()
	loads := lc.loads
	lc.mu.Unlock()
	for range 2 {
		go func() { errs <- d.Start("app") }()
	}
	// The starts have read the configuration; give them a moment to queue
	// behind the stop. (This only makes the race likely; nothing below
	// depends on how long it takes.)
	waitFor(t, "the starts to load the configuration", func() bool {
		lc.mu.Lock()
		defer lc.mu.Unlock()
		return lc.loads > loads
	})
	time.Sleep(50 * time.Millisecond)
	g.release()
	for range 3 {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	time.Sleep(100 * time.Millisecond) // ten backoffs: a second supervisor would have relaunched by now
	vmm.mu.Lock()
	var appLaunches int
	for _, l := range vmm.launches[before:] {
		if strings.HasPrefix(l, "app:") {
			appLaunches++
		}
	}
	maxAlive, alive := vmm.maxAlive["app"], vmm.alive["app"]
	vmm.mu.Unlock()
	if appLaunches != 1 || maxAlive != 1 || alive != 1 {
		t.Errorf("after a stop and two starts: %d launches of app, %d alive, at most %d at once; want 1, 1, 1", appLaunches, alive, maxAlive)
	}
	if st, _ := d.Status("app"); st.State != stateRunning || st.Restarts != 0 {
		t.Errorf("app: %+v, want running with no restarts", st)
	}
	if nw.count() != 1 {
		t.Errorf("%d links, want 1", nw.count())
	}
}

// TestFailedLinkIsFailedStart: a link that cannot be made, or a provider
// that cannot plug its side, fails the client's start. The client is not
// launched, no link is left (not even the one made before it), its status
// says why, and the next start retries.
func TestFailedLinkIsFailedStart(t *testing.T) {
	for _, tt := range []struct {
		name  string
		fail  func(vmm *fakeVMM, nw *fakeNet, bad mac.LinkID, on bool)
		errIs string
	}{
		{"bridge", func(_ *fakeVMM, nw *fakeNet, bad mac.LinkID, on bool) {
			nw.mu.Lock()
			defer nw.mu.Unlock()
			nw.createErr = nil
			if on {
				nw.createErr = func(id mac.LinkID) error {
					if id == bad {
						return errors.New("create bridge: operation not permitted")
					}
					return nil
				}
			}
		}, "create bridge"},
		{"hot-plug", func(vmm *fakeVMM, _ *fakeNet, bad mac.LinkID, on bool) {
			vmm.set(func(f *fakeVMM) {
				f.onHotplug = nil
				if on {
					f.onHotplug = func(_ context.Context, _ string, n NIC) error {
						if n.MAC.String() == bad.MAC(mac.Provider).String() {
							return errors.New("device_add: timed out")
						}
						return nil
					}
				}
			})
		}, "device_add"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			d, vmm, nw := newTestDaemon(t, map[string][]string{"net1": nil, "net2": nil, "app": {"net1", "net2"}})
			for _, n := range []string{"net1", "net2"} {
				if err := d.Start(n); err != nil {
					t.Fatal(err)
				}
			}
			bad, _ := d.LinkID("app", "net2")
			tt.fail(vmm, nw, bad, true)
			err := d.Start("app")
			if err == nil || !strings.Contains(err.Error(), "link "+bad.String()) || !strings.Contains(err.Error(), tt.errIs) {
				t.Fatalf("start app = %v, want an error naming link %s and %q", err, bad, tt.errIs)
			}
			if vmm.inst("app") != nil {
				t.Errorf("app was launched without its link")
			}
			if nw.count() != 0 {
				t.Errorf("%d links left after the failed start, want 0", nw.count())
			}
			for _, n := range []string{"net1", "net2"} {
				if got := vmm.inst(n).NICs(); len(got) != 0 {
					t.Errorf("%s keeps NICs %v of the failed start", n, got)
				}
			}
			st, _ := d.Status("app")
			if st.State != stateFailed || !strings.Contains(st.Error, bad.String()) {
				t.Errorf("status app %+v, want failed with the link's error", st)
			}

			tt.fail(vmm, nw, bad, false)
			if err := d.Start("app"); err != nil {
				t.Fatalf("start app again: %v", err)
			}
			if nw.count() != 2 || len(vmm.inst("net1").NICs()) != 1 || len(vmm.inst("net2").NICs()) != 1 {
				t.Errorf("after the retry: %d links, net1 NICs %v, net2 NICs %v; want 2, one each", nw.count(), vmm.inst("net1").NICs(), vmm.inst("net2").NICs())
			}
			if st, _ := d.Status("app"); st.State != stateRunning || st.Error != "" {
				t.Errorf("status app after the retry %+v", st)
			}
		})
	}
}

// TestCrashRestartRetriesLinks: a link that fails while a client restarts
// after a crash is retried with the restart, and the client comes back
// with it.
func TestCrashRestartRetriesLinks(t *testing.T) {
	d, vmm, nw := newTestDaemon(t, map[string][]string{"net": nil, "app": {"net"}})
	if err := d.Start("app"); err != nil {
		t.Fatal(err)
	}
	id, _ := d.LinkID("app", "net")
	nw.mu.Lock()
	creates := 0
	nw.createErr = func(mac.LinkID) error {
		if creates++; creates <= 3 {
			return errors.New("create bridge: no buffer space available")
		}
		return nil
	}
	delete(nw.links, id) // someone deleted the bridge
	nw.mu.Unlock()
	first := vmm.inst("app")
	first.end(io.ErrUnexpectedEOF)
	waitFor(t, "the link made again", func() bool {
		nw.mu.Lock()
		defer nw.mu.Unlock()
		return creates > 3
	})
	waitFor(t, "app relaunched", func() bool {
		st, _ := d.Status("app")
		return st.State == stateRunning && vmm.inst("app") != first
	})
	if st, _ := d.Status("app"); st.Restarts != 4 {
		t.Errorf("restarts %d, want 4 (the crash and three failed links)", st.Restarts)
	}
	if nw.count() != 1 || len(vmm.inst("net").NICs()) != 1 {
		t.Errorf("%d links, net NICs %v; want the link back", nw.count(), vmm.inst("net").NICs())
	}
}

// TestSerialBurstBeforeExit: a guest that has flooded its console crashes
// with a trace and exits at once. Every line is in its log file, the trace
// is in spectrumd's log, and it comes before the record of the exit.
func TestSerialBurstBeforeExit(t *testing.T) {
	var logBuf syncbuf.Buffer
	var want strings.Builder
	for i := range 1500 {
		fmt.Fprintf(&want, "noise %d\n", i)
	}
	for i := range 40 {
		fmt.Fprintf(&want, "panic trace %d\n", i)
	}
	d, _, _ := newTestDaemon(t, map[string][]string{"app": nil}, func(o *Options, v *fakeVMM) {
		o.Log = slog.New(slog.NewTextHandler(&logBuf, nil))
		o.Backoff = func(int) time.Duration { return time.Hour }
		v.spew = func(w io.Writer) { io.WriteString(w, want.String()) }
		v.crashAfterSpew = errors.New("signal: segmentation fault")
	})
	if err := d.Start("app"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the exit", func() bool { st, _ := d.Status("app"); return st.State == stateBackoff })
	lf, _ := d.Logs("app")
	b, err := os.ReadFile(lf.Path)
	if err != nil {
		t.Fatal(err)
	}
	_, got, _ := strings.Cut(string(b), "\n") // after the boot marker
	if got != want.String() {
		t.Errorf("log file holds %d bytes of serial output, want all %d", len(got), want.Len())
	}
	host := logBuf.String()
	exited := strings.Index(host, "VM exited unexpectedly")
	last := strings.Index(host, `msg="panic trace 39"`)
	if last < 0 || exited < 0 || last > exited {
		t.Errorf("spectrumd's log: the trace's last line at %d, the exit at %d; want both, the trace first:\n%s", last, exited, lastLines(host, 50))
	}
	for i := range 40 {
		if l := fmt.Sprintf(`msg="panic trace %d"`, i); !strings.Contains(host, l) {
			t.Errorf("spectrumd's log lacks %s", l)
		}
	}
}

func lastLines(s string, n int) string {
	l := strings.Split(strings.TrimSuffix(s, "\n"), "\n")
	return strings.Join(l[max(len(l)-n, 0):], "\n")
}

// openLogFiles lists this process's open files under dir.
func openLogFiles(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		if p, err := os.Readlink(filepath.Join("/proc/self/fd", e.Name())); err == nil && strings.HasPrefix(p, dir) {
			out = append(out, p)
		}
	}
	return out
}

// TestVMTableShrinks: a stopped VM's log file is closed; a VM removed from
// the configuration leaves no entry once it is stopped (at once if it was
// stopped already, at its stop if it still ran).
func TestVMTableShrinks(t *testing.T) {
	lc := &liveConfig{vms: map[string][]string{"net": nil, "old": nil, "running": nil}}
	state := t.TempDir()
	d, _, _ := newTestDaemon(t, nil, func(o *Options, _ *fakeVMM) { o.Links, o.State = lc, state })
	for _, n := range []string{"old", "running"} {
		if err := d.Start(n); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "both log files open", func() bool { return len(openLogFiles(t, state)) == 2 })
	if err := d.Stop("old"); err != nil {
		t.Fatal(err)
	}
	if got := openLogFiles(t, state); len(got) != 1 || !strings.HasSuffix(got[0], "running.log") {
		t.Errorf("open log files after stopping old: %v, want running's only", got)
	}
	lc.change(func(vms map[string][]string, _ map[string]bool) {
		delete(vms, "old")
		delete(vms, "running")
	})
	if err := d.Start("net"); err != nil { // any reload
		t.Fatal(err)
	}
	names := func() []string {
		var out []string
		for _, v := range d.List() {
			out = append(out, v.Name+":"+v.State)
		}
		return out
	}
	if got := names(); strings.Join(got, " ") != "net:running running:running" {
		t.Errorf("list after removing old and running = %v, want net, and running until it stops", got)
	}
	if _, err := d.Status("old"); err == nil {
		t.Errorf("status of removed, stopped VM old: no error")
	}
	if err := d.Stop("running"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "running's entry to go", func() bool {
		d.mu.Lock()
		defer d.mu.Unlock()
		return d.vms["running"] == nil
	})
	d.mu.Lock()
	var entries []string
	for n := range d.vms {
		entries = append(entries, n)
	}
	d.mu.Unlock()
	if len(entries) != 1 || entries[0] != "net" {
		t.Errorf("VM table %v, want net only", entries)
	}
	if got := names(); strings.Join(got, " ") != "net:running" {
		t.Errorf("list = %v, want net only", got)
	}
	if got := openLogFiles(t, state); len(got) != 1 || !strings.HasSuffix(got[0], "net.log") {
		t.Errorf("open log files %v, want net's only", got)
	}
}

// TestRelaunchValidatesAgain: a VM that has become invalid since it
// started (its directory changed) is not relaunched after a crash; that is
// logged and its status says why; it starts again once it is valid.
func TestRelaunchValidatesAgain(t *testing.T) {
	var logBuf syncbuf.Buffer
	lc := &liveConfig{vms: map[string][]string{"net": nil, "app": {"net"}}}
	d, vmm, nw := newTestDaemon(t, nil, func(o *Options, _ *fakeVMM) {
		o.Links, o.Log = lc, slog.New(slog.NewTextHandler(&logBuf, nil))
	})
	if err := d.Start("app"); err != nil {
		t.Fatal(err)
	}
	first := vmm.inst("app")
	lc.change(func(_ map[string][]string, bad map[string]bool) { bad["app"] = true })
	first.end(io.ErrUnexpectedEOF)
	waitFor(t, "app failed", func() bool { st, _ := d.Status("app"); return st.State == stateFailed })
	st, _ := d.Status("app")
	if !strings.Contains(st.Error, "not relaunched") || !strings.Contains(st.Error, "symlink out of") {
		t.Errorf("status app %+v, want the validation error", st)
	}
	if vmm.inst("app") != first {
		t.Errorf("app was relaunched while invalid")
	}
	if !strings.Contains(logBuf.String(), "not relaunched") {
		t.Errorf("nothing logged about the refused relaunch:\n%s", logBuf.String())
	}
	if nw.count() != 0 || len(vmm.inst("net").NICs()) != 0 {
		t.Errorf("%d links, net NICs %v after app failed; want none", nw.count(), vmm.inst("net").NICs())
	}
	if l := d.List(); len(l) != 2 || l[0].Name != "app" || l[0].State != stateFailed {
		t.Errorf("list %+v, want app listed as failed", l)
	}
	lc.change(func(_ map[string][]string, bad map[string]bool) { delete(bad, "app") })
	if err := d.Start("app"); err != nil {
		t.Fatalf("start once valid again: %v", err)
	}
}

// TestFirstLaunchFailureNotRetried: a start whose launch fails returns the
// error to whoever asked, leaves the VM failed with no link, and nothing
// retries it behind the user's back; the next start does.
func TestFirstLaunchFailureNotRetried(t *testing.T) {
	d, vmm, nw := newTestDaemon(t, map[string][]string{"net": nil, "app": {"net"}})
	if err := d.Start("net"); err != nil {
		t.Fatal(err)
	}
	tries := 0
	vmm.set(func(f *fakeVMM) {
		f.launchErr = func(s Spec) error {
			if s.VM.Name != "app" {
				return nil
			}
			tries++
			return errors.New("exec: qemu-system-x86_64: not found")
		}
	})
	err := d.Start("app")
	if err == nil || !strings.Contains(err.Error(), "not found") {
		t.Fatalf("start app = %v, want the launch's error", err)
	}
	time.Sleep(200 * time.Millisecond) // twenty backoffs
	vmm.mu.Lock()
	n := tries
	vmm.launchErr = nil
	vmm.mu.Unlock()
	if n != 1 {
		t.Errorf("%d launch attempts after a failed start, want 1", n)
	}
	if st, _ := d.Status("app"); st.State != stateFailed || !strings.Contains(st.Error, "not found") || st.Restarts != 0 {
		t.Errorf("status app %+v, want failed with the launch's error", st)
	}
	if nw.count() != 0 || len(vmm.inst("net").NICs()) != 0 {
		t.Errorf("%d links, net NICs %v after the failed start; want none", nw.count(), vmm.inst("net").NICs())
	}
	if err := d.Start("app"); err != nil {
		t.Fatalf("start app again: %v", err)
	}
}

// TestSwappedRolesStopTogether: after the configuration swapped who
// provides to whom while both VMs ran, each is a client of the other
// (links made under either configuration). Stopping both at once makes
// each owner ask the other to unplug: neither waits on the other for good.
func TestSwappedRolesStopTogether(t *testing.T) {
	lc := &liveConfig{vms: map[string][]string{"a": {"b"}, "b": nil}}
	d, vmm, nw := newTestDaemon(t, nil, func(o *Options, _ *fakeVMM) { o.Links = lc })
	if err := d.Start("a"); err != nil {
		t.Fatal(err)
	}
	if err := d.Stop("b"); err != nil {
		t.Fatal(err)
	}
	lc.change(func(vms map[string][]string, _ map[string]bool) { vms["a"], vms["b"] = nil, []string{"a"} })
	if err := d.Start("b"); err != nil {
		t.Fatal(err)
	}
	if nw.count() != 2 || len(vmm.inst("a").NICs()) != 2 || len(vmm.inst("b").NICs()) != 2 {
		t.Fatalf("%d links, a NICs %v, b NICs %v; want two links, both ends in each", nw.count(), vmm.inst("a").NICs(), vmm.inst("b").NICs())
	}
	within(t, "stopping both at once", func() error {
		errs := make(chan error, 2)
		go func() { errs <- d.Stop("a") }()
		go func() { errs <- d.Stop("b") }()
		return errors.Join(<-errs, <-errs)
	})
	if nw.count() != 0 {
		t.Errorf("%d links after both stopped", nw.count())
	}
}

// TestCloseRefusesStarts: once Close has begun, a start launches nothing.
func TestCloseRefusesStarts(t *testing.T) {
	d, vmm, _ := newTestDaemon(t, map[string][]string{"net": nil})
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if err := d.Start("net"); !errors.Is(err, errClosing) {
		t.Errorf("start after Close = %v, want %v", err, errClosing)
	}
	if n := vmm.launchCount(); n != 0 {
		t.Errorf("%d launches after Close", n)
	}
}
