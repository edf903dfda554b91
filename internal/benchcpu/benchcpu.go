// Package benchcpu reports a benchmark's CPU time next to its wall time.
// On a machine shared with other work, wall time per operation includes
// time spent waiting for a CPU; CPU time does not.
package benchcpu

import (
	"syscall"
	"testing"
	"time"
)

// Report reports the process's CPU time (user and system) per operation
// as cpu-ms/op. Call it after setup and before the loop; it reports when
// the benchmark ends.
func Report(b *testing.B) {
	start := Used()
	b.Cleanup(func() {
		if b.N > 0 {
			b.ReportMetric(float64(Used()-start)/float64(time.Millisecond)/float64(b.N), "cpu-ms/op")
		}
	})
}

// Used is the CPU time this process has used so far.
func Used() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
