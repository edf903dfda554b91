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
// flush deletes them and no other; IPv6's are picked by the link's mark
// (7 here; the others' 9), the kernel's IPv6 address filter being
// inverted.
func TestConntrackKernelFilter(t *testing.T) {
	for _, tt := range []struct {
		name                      string
		other, a, dst1, dst2, src string
		srcAttr                   uint16
		dumped                    [2]int // what the kernel sends for a's entries from and to it
	}{
		{"IPv4", "198.51.100.7", "100.64.0.1", "203.0.113.53", "203.0.113.54", "203.0.113.9", ctaIPv4Src, [2]int{2, 1}},
		{"IPv6", "fd9f:2b8:5010:9::2", "fd9f:2b8:5010:1::2", "2001:db8::53", "2001:db8::54", "2001:db8::9", ctaIPv6Src, [2]int{3, 3}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ns := nstest.New(t)
			add := func(src, dst string, sport int, mark string) {
				out, err := ns.Command(context.Background(), "conntrack", "-I", "-p", "udp", "-s", src, "-d", dst,
					"--sport", strconv.Itoa(sport), "--dport", "53", "--timeout", "600", "--mark", mark).CombinedOutput()
				if err != nil {
					t.Fatalf("conntrack -I: %v\n%s", err, out)
				}
			}
			for i := range 50 {
				add(tt.other, tt.dst1, 1024+i, "9")
			}
			add(tt.a, tt.dst1, 1024, "7")
			add(tt.a, tt.dst2, 1024, "7")
			add(tt.src, tt.a, 1024, "7")

			var ct *conntrack
			var err error
			inNetns(t, ns, func() { ct, err = dialConntrack() })
			if err != nil {
				t.Fatal(err)
			}
			defer ct.close()
			a := netip.MustParseAddr(tt.a)
			for _, d := range []struct {
				dir  uint16
				want int
			}{{tt.srcAttr, tt.dumped[0]}, {tt.srcAttr + 1, tt.dumped[1]}} {
				msgs, err := ct.dump(a, 7, d.dir)
				if err != nil {
					t.Fatal(err)
				}
				if len(msgs) != d.want {
					t.Errorf("dump of %v (attribute %d): %d entries from the kernel, want %d", a, d.dir, len(msgs), d.want)
				}
			}
			if n, err := ct.flush(a, 7, true, false); n != 2 || err != nil {
				t.Errorf("flush from %v: %d, %v; want 2", a, n, err)
			}
			if n, err := ct.flush(a, 7, true, true); n != 1 || err != nil {
				t.Errorf("flush from and to %v: %d, %v; want 1", a, n, err)
			}
			out, err := ns.Command(context.Background(), "conntrack", "-C").Output()
			if err != nil {
				t.Fatal(err)
			}
			if string(out) != "50\n" {
				t.Errorf("conntrack -C after the flush: %q, want the 50 others", out)
			}
		})
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
