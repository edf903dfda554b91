package router

import (
	"context"
	"net/netip"
	"runtime"
	"strconv"
	"testing"

	"golang.org/x/sys/unix"

	"spectrum-os.org/netcfg/internal/nstest"
)

// TestConntrackKernelFilter: the router's dump of one address's entries
// gets only those from the kernel (CTA_FILTER), not the whole table, and
// flush deletes them and no other.
func TestConntrackKernelFilter(t *testing.T) {
	ns := nstest.New(t)
	add := func(src, dst string, sport int) {
		out, err := ns.Command(context.Background(), "conntrack", "-I", "-p", "udp", "-s", src, "-d", dst,
			"--sport", strconv.Itoa(sport), "--dport", "53", "--timeout", "600").CombinedOutput()
		if err != nil {
			t.Fatalf("conntrack -I: %v\n%s", err, out)
		}
	}
	for i := range 50 {
		add("198.51.100.7", "203.0.113.53", 1024+i)
	}
	add("100.64.0.1", "203.0.113.53", 1024)
	add("100.64.0.1", "203.0.113.54", 1024)
	add("203.0.113.9", "100.64.0.1", 1024)

	var ct *conntrack
	var err error
	inNetns(t, ns, func() { ct, err = dialConntrack() })
	if err != nil {
		t.Fatal(err)
	}
	defer ct.close()
	a := netip.MustParseAddr("100.64.0.1")
	for _, tt := range []struct {
		dir  uint16
		want int
	}{{ctaIPv4Src, 2}, {ctaIPv4Dst, 1}} {
		msgs, err := ct.dump(a, tt.dir)
		if err != nil {
			t.Fatal(err)
		}
		if len(msgs) != tt.want {
			t.Errorf("dump of %v (attribute %d): %d entries from the kernel, want %d", a, tt.dir, len(msgs), tt.want)
		}
	}
	if n, err := ct.flush(a, true, false); n != 2 || err != nil {
		t.Errorf("flush from %v: %d, %v; want 2", a, n, err)
	}
	if n, err := ct.flush(a, true, true); n != 1 || err != nil {
		t.Errorf("flush from and to %v: %d, %v; want 1", a, n, err)
	}
	out, err := ns.Command(context.Background(), "conntrack", "-C").Output()
	if err != nil {
		t.Fatal(err)
	}
	if string(out) != "50\n" {
		t.Errorf("conntrack -C after the flush: %q, want the 50 others", out)
	}
}

// inNetns runs f on a thread in ns.
func inNetns(t *testing.T, ns *nstest.NS, f func()) {
	t.Helper()
	fd, err := unix.Open(ns.Path(), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	done := make(chan error)
	go func() {
		// The thread stays in ns and dies with the goroutine.
		runtime.LockOSThread()
		if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
			done <- err
			return
		}
		f()
		done <- nil
	}()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
