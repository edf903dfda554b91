package cli

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"spectrum-os.org/netcfg/host/control"
	"spectrum-os.org/netcfg/internal/nstest"
)

// procFigures reads a process's resident memory (KiB), its open fds and
// its child processes.
func procFigures(t *testing.T, pid int) (rssKiB, fds, children int) {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			rssKiB, _ = strconv.Atoi(strings.Fields(v)[0])
		}
	}
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatal(err)
	}
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, s := range stats {
		b, err := os.ReadFile(s)
		if err != nil {
			continue
		}
		_, after, _ := strings.Cut(string(b), ") ")
		if f := strings.Fields(after); len(f) > 1 && f[1] == strconv.Itoa(pid) && f[0] != "Z" {
			children++
		}
	}
	return rssKiB, len(ents), children
}

// TestSoakServe (make soak; SPECTRUM_SOAK_CYCLES sets the count) runs a
// real `spectrumd serve` with QEMU and the stub kernel and, each cycle,
// starts a client (its provider first: a link wired and hot-plugged) and
// stops both (provider first, so no unplug waits for the stub guest, which
// ignores ACPI). spectrumd's fds, children and links return to their
// baseline and its RSS stays within a bound.
func TestSoakServe(t *testing.T) {
	cycles, _ := strconv.Atoi(os.Getenv("SPECTRUM_SOAK_CYCLES"))
	if cycles <= 0 {
		t.Skip("soak test: make soak runs it (SPECTRUM_SOAK_CYCLES=N), and make test runs make soak, in CI too")
	}
	ns := nstest.New(t)
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	writeStubData(t, data)
	s := startServe(t, ns, filepath.Join(dir, "spectrumd.log"), "-data", data, "-state", filepath.Join(dir, "state"),
		"-run", filepath.Join(dir, "run"), "-accel", "tcg", "-memory", "64", "-stop-timeout", "200ms")
	s.waitServing(t)
	cycle := func(i int) {
		t.Helper()
		if r, err := s.ask(control.Request{Op: "start", Name: "app"}); err != nil || !r.OK {
			s.fail(t, "cycle %d: start app: %+v, %v", i, r, err)
		}
		s.waitRunning(t, "net", "app")
		if got := ourLinks(t, ns, s); len(got) != 3 {
			s.fail(t, "cycle %d: links %v while app runs", i, got)
		}
		for _, n := range []string{"net", "app"} {
			if r, err := s.ask(control.Request{Op: "stop", Name: n}); err != nil || !r.OK {
				s.fail(t, "cycle %d: stop %s: %+v, %v", i, n, r, err)
			}
		}
	}
	pid := s.cmd.Process.Pid
	for i := range 3 { // warm-up
		cycle(i)
	}
	rss0, fds0, ch0 := procFigures(t, pid)
	start := time.Now()
	for i := range cycles {
		cycle(i)
	}
	el := time.Since(start)
	// The last cycle's QEMU may still be being reaped and its files
	// closed: wait for the figures to settle (a leak never does).
	rss, fds, ch := procFigures(t, pid)
	for deadline := time.Now().Add(10 * time.Second); (fds > fds0 || ch > ch0) && time.Now().Before(deadline); {
		time.Sleep(50 * time.Millisecond)
		rss, fds, ch = procFigures(t, pid)
	}
	t.Logf("%d cycles in %v (%v each): spectrumd RSS %d -> %d KiB, fds %d -> %d, child processes %d -> %d",
		cycles, el.Round(time.Second), (el / time.Duration(cycles)).Round(time.Millisecond), rss0, rss, fds0, fds, ch0, ch)
	if fds > fds0 {
		t.Errorf("spectrumd has %d fds after %d cycles, %d before", fds, cycles, fds0)
	}
	if ch != ch0 {
		t.Errorf("spectrumd has %d child processes after, %d before", ch, ch0)
	}
	if got := ourLinks(t, ns, s); len(got) != 0 {
		t.Errorf("links %v after the cycles", got)
	}
	if rss > rss0+16<<10 {
		t.Errorf("spectrumd RSS grew from %d to %d KiB", rss0, rss)
	}
}
