package daemon

import (
	"os"
	"runtime"
	"testing"
	"time"
)

func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

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
	baseG, baseFD, baseHeap := runtime.NumGoroutine(), openFDs(t), heapInuse()
	start := time.Now()
	for range cycles {
		cycle()
	}
	el := time.Since(start)
	g := settleGoroutines(baseG, 5*time.Second)
	// A supervisor may still be closing its last instance's files.
	fds := openFDs(t)
	for deadline := time.Now().Add(2 * time.Second); fds > baseFD && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
		fds = openFDs(t)
	}
	heap := heapInuse()
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

// settleGoroutines waits until the process runs at most base goroutines
// and returns the count it saw last.
func settleGoroutines(base int, within time.Duration) int {
	deadline := time.Now().Add(within)
	n := runtime.NumGoroutine()
	for n > base && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
		n = runtime.NumGoroutine()
	}
	return n
}
