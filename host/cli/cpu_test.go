package cli

import (
	"syscall"
	"testing"
	"time"
)

// reportCPU reports the process's CPU time (user and system) per operation
// as cpu-ms/op next to ns/op: on a machine shared with other work, wall time
// per operation includes time spent waiting for a CPU. Call it after setup
// and before the loop; it reports when the benchmark ends.
func reportCPU(b *testing.B) {
	start := cpuTime()
	b.Cleanup(func() {
		if b.N > 0 {
			b.ReportMetric(float64(cpuTime()-start)/float64(time.Millisecond)/float64(b.N), "cpu-ms/op")
		}
	})
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
