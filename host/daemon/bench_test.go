package daemon

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"spectrum-os.org/netcfg/host/control"
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
			log := slog.New(slog.NewTextHandler(io.Discard, nil))
			nw, err := link.OpenPath(ns.Path(), log)
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

// BenchmarkListWhileBusy is a list round trip over the control socket
// (fake VMM): while a provider's unplug hangs, and while ten VMs start at
// once, each launch taking 200 ms (QEMU's start-up, without its CPU). The
// median and the worst are reported: list must not wait for either.
func BenchmarkListWhileBusy(b *testing.B) {
	rtt := func(b *testing.B, path string, busy <-chan struct{}) []time.Duration {
		var out []time.Duration
		for {
			select {
			case <-busy:
				if len(out) >= 10 {
					return out
				}
			default:
			}
			t0 := time.Now()
			if _, err := control.Call(path, control.Request{Op: "list"}, wait); err != nil {
				b.Fatal(err)
			}
			out = append(out, time.Since(t0))
			time.Sleep(time.Millisecond)
		}
	}
	report := func(b *testing.B, d []time.Duration) {
		slices.Sort(d)
		b.ReportMetric(float64(d[len(d)/2].Microseconds())/1000, "ms-median")
		b.ReportMetric(float64(d[len(d)-1].Microseconds())/1000, "ms-worst")
	}
	b.Run("unplug-hangs", func(b *testing.B) {
		d, vmm, _ := newTestDaemon(b, map[string][]string{"net": nil, "app": {"net"}})
		path := serveControl(b, d)
		var all []time.Duration
		for range b.N {
			if err := d.Start("app"); err != nil {
				b.Fatal(err)
			}
			entered, release := make(chan struct{}), make(chan struct{})
			vmm.set(func(f *fakeVMM) {
				f.onUnplug = func(context.Context, string, string) error { close(entered); <-release; return nil }
			})
			stopped := make(chan error, 1)
			go func() { stopped <- d.Stop("app") }()
			<-entered
			hang := make(chan struct{})
			go func() { time.Sleep(200 * time.Millisecond); close(hang) }()
			all = append(all, rtt(b, path, hang)...)
			close(release)
			if err := <-stopped; err != nil {
				b.Fatal(err)
			}
			vmm.set(func(f *fakeVMM) { f.onUnplug = nil })
		}
		report(b, all)
	})
	b.Run("ten-start", func(b *testing.B) {
		vms := map[string][]string{"net": nil}
		for i := 1; i <= 9; i++ {
			vms[fmt.Sprintf("app%d", i)] = []string{"net"}
		}
		d, vmm, _ := newTestDaemon(b, vms)
		vmm.set(func(f *fakeVMM) { f.launchDelay = 200 * time.Millisecond })
		path := serveControl(b, d)
		var all []time.Duration
		for range b.N {
			var wg sync.WaitGroup
			for n := range vms {
				wg.Go(func() {
					if err := d.Start(n); err != nil {
						b.Error(err)
					}
				})
			}
			started := make(chan struct{})
			go func() { wg.Wait(); close(started) }()
			all = append(all, rtt(b, path, started)...)
			if err := d.StopAll(); err != nil {
				b.Fatal(err)
			}
		}
		report(b, all)
	})
}
