package daemon

import (
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/vishvananda/netns"

	"spectrum-os.org/netcfg/host/link"
	"spectrum-os.org/netcfg/internal/nstest"
)

// BenchmarkStartOverhead is spectrumd's own cost from a start request to
// the VMM being asked to exec QEMU: reloading the configuration, assigning
// link ids, creating each link's bridge and taps in a real (fresh) network
// namespace, opening the taps, and plugging provider NICs. The VMM is a fake
// that returns at once, so guest boot and QEMU's own start-up are excluded.
// One op is starting a client (and its providers) and stopping it again.
func BenchmarkStartOverhead(b *testing.B) {
	for _, providers := range []int{0, 1, 8} {
		b.Run(fmt.Sprintf("providers=%d", providers), func(b *testing.B) {
			ns := nstest.New(b)
			h, err := netns.GetFromPath(ns.Path())
			if err != nil {
				b.Fatal(err)
			}
			defer h.Close()
			log := slog.New(slog.NewTextHandler(io.Discard, nil))
			nw, err := link.Open(h, log)
			if err != nil {
				b.Fatal(err)
			}
			defer nw.Close()
			vms := map[string][]string{"app": nil}
			for i := range providers {
				p := fmt.Sprintf("net%d", i)
				vms[p] = nil
				vms["app"] = append(vms["app"], p)
			}
			vmm := &fakeVMM{}
			d, err := New(Options{State: b.TempDir(), Run: b.TempDir(), VMM: vmm, Net: nw,
				Links: staticLinks{vms: vms}, Log: log, StopTimeout: time.Second})
			if err != nil {
				b.Fatal(err)
			}
			defer d.StopAll()
			// Providers run already, as on a host that has been up a while:
			// each op then hot-plugs one NIC into each provider.
			for p := range vms {
				if p != "app" {
					if err := d.Start(p); err != nil {
						b.Fatal(err)
					}
				}
			}
			var start time.Duration
			b.ResetTimer()
			for b.Loop() {
				t0 := time.Now()
				if err := d.Start("app"); err != nil {
					b.Fatal(err)
				}
				start += time.Since(t0)
				if err := d.Stop("app"); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(start.Microseconds())/float64(b.N)/1000, "ms-to-exec/op")
		})
	}
}
