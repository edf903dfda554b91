package daemon

import (
	"bytes"
	"io"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"spectrum-os.org/netcfg/host/control"
	"spectrum-os.org/netcfg/internal/leakcheck"
)

// TestDaemonSerialSpam: the same through the daemon, with a fake VM that
// spews for as long as it runs. Its log stays under twice the cap, the
// control socket keeps answering, and Stop ends it.
func TestDaemonSerialSpam(t *testing.T) {
	const logCap = 256 << 10
	var spewed atomic.Int64
	var wg sync.WaitGroup
	d, _, _ := newTestDaemon(t, map[string][]string{"noisy": nil}, func(o *Options, v *fakeVMM) {
		o.LogMax = logCap
		v.spew = func(w io.Writer) {
			wg.Add(1)
			defer wg.Done()
			b := bytes.Repeat([]byte("noise \x1b[31m level=ERROR msg=forged\n"), 2000)
			for {
				n, err := w.Write(b)
				spewed.Add(int64(n))
				if err != nil {
					return
				}
			}
		}
	})
	path := serveControl(t, d)
	start := time.Now()
	if err := d.Start("noisy"); err != nil {
		t.Fatal(err)
	}
	// Far more than twice the cap either way; less under the race
	// detector, whose slower pump would take most of waitFor's deadline.
	want := int64(16 << 20)
	if raceEnabled {
		want = 4 << 20
	}
	waitFor(t, "serial output", func() bool { return spewed.Load() > want })
	el := time.Since(start)
	r, err := control.Call(path, control.Request{Op: "status", Name: "noisy"}, wait)
	if err != nil || !r.OK || r.VMs[0].State != "running" {
		t.Errorf("status while spamming: %+v, %v", r, err)
	}
	if err := d.Stop("noisy"); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	lf, _ := d.Logs("noisy")
	size := leakcheck.DirSize(t, filepath.Dir(lf.Path))
	t.Logf("%d MiB spewed in 40-byte lines in %v (%.1f MiB/s through the daemon); VM log %d bytes on disk (cap %d)",
		spewed.Load()>>20, el.Round(time.Millisecond), float64(spewed.Load())/(1<<20)/el.Seconds(), size, logCap)
	if size > 2*logCap {
		t.Errorf("VM log holds %d bytes, over twice the cap %d", size, logCap)
	}
}
