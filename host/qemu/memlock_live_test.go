package qemu

import (
	"bytes"
	"fmt"
	"os/exec"
	"strings"
	"sync"
	"testing"

	"golang.org/x/sys/unix"

	"spectrum-os.org/netcfg/internal/testenv"
)

// limits is the "Max locked memory" line of the process cmd runs (its
// /proc/self/limits), started by startWithMemlock with memlock.
func lockedLimit(t *testing.T, memlock uint64) string {
	t.Helper()
	cmd := exec.Command("/bin/grep", "Max locked memory", "/proc/self/limits")
	var out bytes.Buffer
	cmd.Stdout = &out
	if err := startWithMemlock(cmd, memlock); err != nil {
		t.Fatalf("startWithMemlock: %v", err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatal(err)
	}
	return strings.Join(strings.Fields(out.String()), " ")
}

// TestMemlockLive: a QEMU with a VFIO device starts with its memlock
// limit, not spectrumd's; spectrumd's own is the same after; a QEMU started
// meanwhile without one gets spectrumd's. The limit asked for is the hard
// limit this machine's root has (raising it needs CAP_SYS_RESOURCE, which
// the nested VFIO test's root has), so the soft limit is what moves here;
// above it, the error names the capability when it is missing.
func TestMemlockLive(t *testing.T) {
	testenv.Root(t, "for a process's limits as QEMU gets them")
	var own unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_MEMLOCK, &own); err != nil {
		t.Fatal(err)
	}
	if own.Max < 1<<20 || own.Max == unix.RLIM_INFINITY {
		testenv.Skip(t, fmt.Sprintf("RLIMIT_MEMLOCK hard limit %d: want a finite one of 1 MiB or more", own.Max))
	}
	base := unix.Rlimit{Cur: 64 << 10, Max: own.Max}
	if err := unix.Setrlimit(unix.RLIMIT_MEMLOCK, &base); err != nil {
		t.Fatal(err)
	}
	defer unix.Setrlimit(unix.RLIMIT_MEMLOCK, &own)
	want := own.Max
	line := func(cur, max uint64) string { return fmt.Sprintf("Max locked memory %d %d bytes", cur, max) }
	if got := lockedLimit(t, want); got != line(want, want) {
		t.Errorf("QEMU's limit: %q, want %q", got, line(want, want))
	}
	var after unix.Rlimit
	unix.Getrlimit(unix.RLIMIT_MEMLOCK, &after)
	if after != base {
		t.Errorf("spectrumd's own limit after: %+v, want %+v", after, base)
	}
	// Forks in parallel: those without a limit never get one.
	var wg sync.WaitGroup
	errs := make(chan string, 40)
	for i := range 40 {
		wg.Go(func() {
			m, w := uint64(0), line(base.Cur, base.Max)
			if i%2 == 0 {
				m, w = want, line(want, want)
			}
			if got := lockedLimit(t, m); got != w {
				errs <- fmt.Sprintf("start %d: %q, want %q", i, got, w)
			}
		})
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}

	// Above the hard limit: only with CAP_SYS_RESOURCE.
	cmd := exec.Command("/bin/true")
	err := startWithMemlock(cmd, own.Max+1<<30)
	if err == nil {
		cmd.Wait()
		if !hasCap(unix.CAP_SYS_RESOURCE) {
			t.Error("raised the hard limit without CAP_SYS_RESOURCE")
		}
	} else if hasCap(unix.CAP_SYS_RESOURCE) || !strings.Contains(err.Error(), "CAP_SYS_RESOURCE") {
		t.Errorf("above the hard limit: %v", err)
	}
	unix.Getrlimit(unix.RLIMIT_MEMLOCK, &after)
	if after != base {
		t.Errorf("spectrumd's own limit after a raise: %+v, want %+v", after, base)
	}
}

// hasCap tells whether this process has capability c in its effective set.
func hasCap(c int) bool {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if unix.Capget(&hdr, &data[0]) != nil {
		return false
	}
	return data[c/32].Effective&(1<<(c%32)) != 0
}
