package daemon

import (
	"runtime"
	"testing"
	"time"

	"spectrum-os.org/netcfg/internal/leakcheck"
)

// TestChurn starts and stops a client 200 times against one running
// provider. Afterwards the provider has no NIC left, no link exists, and
// the daemon's goroutines, open files and heap are back at their baseline.
func TestChurn(t *testing.T) {
	const cycles = 200
	d, vmm, nw := newTestDaemon(t, map[string][]string{"net": nil, "app": {"net"}})
	if err := d.Start("net"); err != nil {
		t.Fatal(err)
	}
	cycle := func() {
		t.Helper()
		if err := d.Start("app"); err != nil {
			t.Fatal(err)
		}
		if n := len(vmm.inst("net").NICs()); n != 1 {
			t.Fatalf("provider has %d NICs while its client runs, want 1", n)
		}
		if err := d.Stop("app"); err != nil {
			t.Fatal(err)
		}
	}
	// Warm up: the client's log file stays open from its first start, and
	// the runtime opens a file or two lazily (the fd count wobbles by one
	// or two from one moment to the next, whence the slack below; a leak
	// would show as one or more per cycle).
	for range 10 {
		cycle()
	}
	time.Sleep(100 * time.Millisecond)
	baseG, baseFD, baseHeap := runtime.NumGoroutine(), leakcheck.OpenFDs(t), leakcheck.HeapInuse()
	start := time.Now()
	for range cycles {
		cycle()
	}
	el := time.Since(start)
	g := leakcheck.SettleGoroutines(baseG, 5*time.Second)
	// A supervisor may still be closing its last instance's files.
	fds := leakcheck.SettleFDs(t, baseFD, 2*time.Second)
	heap := leakcheck.HeapInuse()
	t.Logf("%d cycles in %v (%v each); goroutines %d -> %d, fds %d -> %d, heap %d -> %d KiB",
		cycles, el.Round(time.Millisecond), (el / cycles).Round(time.Microsecond), baseG, g, baseFD, fds, baseHeap>>10, heap>>10)
	if n := vmm.inst("net").NICs(); len(n) != 0 {
		t.Errorf("provider NICs after churn %v, want none", n)
	}
	if nw.count() != 0 {
		t.Errorf("%d links after churn, want 0", nw.count())
	}
	if g > baseG {
		t.Errorf("goroutines %d after churn, baseline %d", g, baseG)
	}
	if fds > baseFD+2 {
		t.Errorf("open fds %d after churn, baseline %d", fds, baseFD)
	}
	if heap > baseHeap+1<<20 {
		t.Errorf("heap %d KiB after churn, baseline %d KiB", heap>>10, baseHeap>>10)
	}
	st, _ := d.Status("net")
	if st.State != "running" || st.Restarts != 0 {
		t.Errorf("provider after churn: %+v", st)
	}
}
