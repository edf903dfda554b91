package cli

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"spectrum-os.org/netcfg/host/control"
	"spectrum-os.org/netcfg/internal/nstest"
	"spectrum-os.org/netcfg/internal/stubkernel"
)

// writeTenVMs writes a data directory of ten VMs booting the stub kernel:
// "net", and app1 to app9, its clients.
func writeTenVMs(t testing.TB, data string) []string {
	t.Helper()
	names := []string{"net"}
	for i := 1; i <= 9; i++ {
		names = append(names, fmt.Sprintf("app%d", i))
	}
	for _, n := range names {
		files := map[string][]byte{"vmlinux": stubkernel.ELF(), "blk/root.img": make([]byte, 1<<20)}
		if n != "net" {
			files["providers/net/net"] = nil
		}
		for f, body := range files {
			p := filepath.Join(data, n, f)
			os.MkdirAll(filepath.Dir(p), 0o755)
			if err := os.WriteFile(p, body, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	return names
}

// roundTrips measures list round trips (a fresh connection each, as the
// CLI makes) back to back until busy is closed, and at least min of them.
func roundTrips(b *testing.B, run string, busy <-chan struct{}, min int) []time.Duration {
	b.Helper()
	var rtts []time.Duration
	for {
		select {
		case <-busy:
			if len(rtts) >= min {
				return rtts
			}
		default:
		}
		t0 := time.Now()
		if _, err := call(run, control.Request{Op: "list"}, DefaultTimeout); err != nil {
			b.Fatalf("list: %v", err)
		}
		rtts = append(rtts, time.Since(t0))
		time.Sleep(2 * time.Millisecond)
	}
}

func reportRTTs(b *testing.B, rtts []time.Duration) {
	slices.Sort(rtts)
	ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
	b.ReportMetric(ms(rtts[len(rtts)/2]), "ms-median")
	b.ReportMetric(ms(rtts[len(rtts)-1]), "ms-worst")
	b.ReportMetric(float64(len(rtts)), "lists")
	if load, err := os.ReadFile("/proc/loadavg"); err == nil {
		b.Logf("%d list round trips: median %v, worst %v; load %s", len(rtts), rtts[len(rtts)/2], rtts[len(rtts)-1], load[:14])
	}
}

// BenchmarkListRoundTrip is a `list` round trip (connect, request, reply)
// to a real `spectrumd serve` with QEMU (the stub kernel, TCG): while
// another VM's unplug hangs (its provider's QEMU frozen by SIGSTOP while
// the client stops), and while ten VMs start at once. Each op is one run of
// the scenario, with list round trips back to back for as long as it lasts.
func BenchmarkListRoundTrip(b *testing.B) {
	requireQEMU(b)
	ns := nstest.New(b)
	dir := b.TempDir()
	data := filepath.Join(dir, "data")
	names := writeTenVMs(b, data)
	s := startServe(b, ns, filepath.Join(dir, "spectrumd.log"), "-data", data, "-state", filepath.Join(dir, "state"),
		"-run", filepath.Join(dir, "run"), "-accel", "tcg", "-memory", "64", "-stop-timeout", "200ms",
		"-nic-timeout", "5s", "-vm-uids", testUIDs())
	s.waitServing(b)
	try := func(op, name string) error {
		if r, err := s.ask(control.Request{Op: op, Name: name}); err != nil || !r.OK {
			return fmt.Errorf("%s %s: %+v, %v", op, name, r, err)
		}
		return nil
	}
	ask := func(op, name string) {
		if err := try(op, name); err != nil {
			s.fail(b, "%v", err)
		}
	}

	b.Run("idle", func(b *testing.B) {
		ask("start", "app1")
		closed := make(chan struct{})
		close(closed)
		var rtts []time.Duration
		for b.Loop() {
			rtts = append(rtts, roundTrips(b, s.run, closed, 1)...)
		}
		reportRTTs(b, rtts)
		ask("stop", "net") // the provider first: the stub guest never releases a NIC
		ask("stop", "app1")
	})

	b.Run("unplug-hangs", func(b *testing.B) {
		var rtts []time.Duration
		for range b.N {
			ask("start", "app1")
			netPID := s.waitRunning(b, "net")["net"].PID
			syscall.Kill(netPID, syscall.SIGSTOP)
			stopped := make(chan struct{})
			var stopErr error
			go func() { stopErr = try("stop", "app1"); close(stopped) }()
			// Once app1 is reaped its owner waits on net's unplug, for the
			// 5 s of -nic-timeout.
			for {
				r, err := call(s.run, control.Request{Op: "status", Name: "app1"}, DefaultTimeout)
				if err != nil {
					b.Fatal(err)
				}
				if st := r.VMs[0]; st.State == "stopping" && st.PID == 0 {
					break
				}
				time.Sleep(10 * time.Millisecond)
			}
			hang := make(chan struct{})
			go func() { time.Sleep(3 * time.Second); close(hang) }()
			rtts = append(rtts, roundTrips(b, s.run, hang, 10)...)
			select {
			case <-stopped:
				b.Fatal("the stop ended while the unplug was to hang")
			default:
			}
			syscall.Kill(netPID, syscall.SIGCONT)
			<-stopped
			if stopErr != nil {
				s.fail(b, "%v", stopErr)
			}
			ask("stop", "net")
		}
		reportRTTs(b, rtts)
	})

	b.Run("ten-start", func(b *testing.B) {
		var rtts []time.Duration
		for range b.N {
			started := make(chan struct{})
			var wg sync.WaitGroup
			errs := make(chan error, len(names))
			for _, n := range names {
				wg.Go(func() { errs <- try("start", n) })
			}
			go func() { wg.Wait(); close(started) }()
			rtts = append(rtts, roundTrips(b, s.run, started, 10)...)
			for range names {
				if err := <-errs; err != nil {
					s.fail(b, "%v", err)
				}
			}
			ask("stop", "net")
			for _, n := range names[1:] {
				ask("stop", n)
			}
		}
		reportRTTs(b, rtts)
	})
}
