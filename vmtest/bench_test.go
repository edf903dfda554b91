package vmtest

import (
	"slices"
	"testing"
	"time"
)

// BenchmarkBoot boots the documented pair under spectrumd b.N times (`make
// bench` runs it 5 times, after the one run the benchmark framework starts
// with) and reports, per VM, the medians of:
//
//   - boot-s: QEMU started → the agent's summary line (guest.DonePrefix)
//     logged by spectrumd, on spectrumd's clock: what a user waits for;
//   - agent-ms: the agent's run as an init hook, exec to exit, measured by
//     the test init in the guest;
//   - baseline-ms: the same binary exiting at once (spectrum.baseline), the
//     cost of starting a static Go binary in this guest, before the agent
//     (cold: under TCG it also pays for translating the code) and after it
//     (warm);
//   - the agent run a second time (its code already run, and under TCG
//     translated, once), which must change nothing;
//   - share-ms: each agent run − the warm baseline, the agent's own work.
//
// The medians are printed as docs/BENCHMARKS.md's table, each sample below it.
//
// netvm's NIC is hot-plugged while it boots, so its init-hook run may find
// no NIC (its -watch instance configures it): the table says which.
func BenchmarkBoot(b *testing.B) {
	e := newEnv(b, 30*time.Minute)
	e.vm("netvm", nil, "spectrum.watch spectrum.baseline")
	e.vm("appvm-lynx", []string{"netvm"}, "spectrum.baseline")
	d := e.serve()
	id := d.LinkID(b, "appvm-lynx", "netvm")
	e.setTest("netvm", "serve")
	e.setTest("appvm-lynx", "ping:"+id.Gateway().String()+",serve")

	type sample struct{ boot, agent, again, baseline, warm, cpu, againCPU float64 }
	samples := map[string][]sample{}
	names := []string{"netvm", "appvm-lynx"}
	for i := 0; i < b.N; i++ {
		d.Start(b, "appvm-lynx")
		for _, n := range names {
			p := d.Proc(n)
			p.Wait(b, e.ctx, "state done n=1 ")
			bt, ok := d.BootTime(p)
			if !ok {
				b.Fatalf("%s: no boot time in spectrumd's log", n)
			}
			tm := p.Timing()
			if tm.AgentExit != "0" || tm.AgainExit != "0" {
				b.Errorf("%s: agent exit status %q, again %q, want 0", n, tm.AgentExit, tm.AgainExit)
			}
			samples[n] = append(samples[n], sample{boot: bt.Seconds(),
				agent: ms(tm.Agent), again: ms(tm.Again), baseline: ms(tm.Baseline), warm: ms(tm.BaselineWarm),
				cpu: ms(tm.AgentCPU), againCPU: ms(tm.AgainCPU)})
		}
		app := d.Proc("appvm-lynx")
		app.Wait(b, e.ctx, "ping "+id.Gateway().String()+" udp ok")
		d.Stop(b, "appvm-lynx")
		d.Stop(b, "netvm")
	}
	b.StopTimer()
	b.Logf("| VM | QEMU start → agent done | agent, 1st run (cpu) | agent, 2nd run (cpu) | start-only run, cold / warm | share, 1st / 2nd run |")
	b.Logf("| --- | ---: | ---: | ---: | ---: | ---: |")
	for _, n := range names {
		med := func(f func(sample) float64) float64 {
			var v []float64
			for _, s := range samples[n] {
				v = append(v, f(s))
			}
			slices.Sort(v)
			return v[len(v)/2]
		}
		boot := med(func(s sample) float64 { return s.boot })
		share1 := med(func(s sample) float64 { return s.agent - s.warm })
		share2 := med(func(s sample) float64 { return s.again - s.warm })
		b.ReportMetric(boot, n+"-boot-s")
		b.ReportMetric(share1, n+"-share1-ms")
		b.ReportMetric(share2, n+"-share2-ms")
		b.Logf("| %s | %.2f s | %.0f ms (%.0f) | %.0f ms (%.0f) | %.0f / %.0f ms | %.0f / %.0f ms |", n, boot,
			med(func(s sample) float64 { return s.agent }), med(func(s sample) float64 { return s.cpu }),
			med(func(s sample) float64 { return s.again }), med(func(s sample) float64 { return s.againCPU }),
			med(func(s sample) float64 { return s.baseline }), med(func(s sample) float64 { return s.warm }),
			share1, share2)
	}
	for _, n := range names {
		for _, s := range samples[n] {
			b.Logf("    %-10s boot %5.2f s agent %6.1f ms (cpu %6.1f) again %6.1f ms (cpu %6.1f) start-only cold %6.1f warm %6.1f ms",
				n, s.boot, s.agent, s.cpu, s.again, s.againCPU, s.baseline, s.warm)
		}
	}
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
