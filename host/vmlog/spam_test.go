package vmlog

import (
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"spectrum-os.org/netcfg/internal/leakcheck"
)

// spamReader is a guest's serial port writing n bytes of block over and
// over, then tail, as fast as it is read.
type spamReader struct {
	block []byte
	off   int
	n     int64
	tail  *strings.Reader
}

func (s *spamReader) Read(p []byte) (int, error) {
	if s.n <= 0 {
		return s.tail.Read(p)
	}
	p = p[:min(int64(len(p)), s.n)]
	k := 0
	for k < len(p) {
		c := copy(p[k:], s.block[s.off:])
		k += c
		s.off = (s.off + c) % len(s.block)
	}
	s.n -= int64(k)
	return k, nil
}

// countWriter counts what the host's log receives.
type countWriter struct{ bytes, lines atomic.Int64 }

func (c *countWriter) Write(p []byte) (int, error) {
	c.bytes.Add(int64(len(p)))
	c.lines.Add(int64(bytes.Count(p, []byte{'\n'})))
	return len(p), nil
}

// heapPeak samples the heap in use until stop is called and returns the
// largest value seen.
func heapPeak() (stop func() uint64) {
	var peak atomic.Uint64
	done, ended := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(ended)
		var ms runtime.MemStats
		for {
			runtime.ReadMemStats(&ms)
			if ms.HeapInuse > peak.Load() {
				peak.Store(ms.HeapInuse)
			}
			select {
			case <-done:
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	return func() uint64 { close(done); <-ended; return peak.Load() }
}

// TestSerialSpam: a guest writing 200 MB of lines, then one line of 100 MB
// without a newline, as fast as the host reads. The VM's log stays within
// twice its cap, the host's log within its rate, the heap does not grow
// with the input, and the long line is cut, not buffered.
func TestSerialSpam(t *testing.T) {
	const (
		lines   = 200 << 20
		oneLine = 100 << 20
		logCap  = 1 << 20
	)
	line := strings.Repeat("spam ", 199) + "end\n" // 1 KiB lines
	for _, tt := range []struct {
		name  string
		block string
		n     int64
	}{
		{"200 MB of 1 KiB lines", line, lines},
		{"100 MB without a newline", "x", oneLine},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			lf := &File{Path: filepath.Join(dir, "vm.log"), Max: logCap}
			var host countWriter
			r := &spamReader{block: bytes.Repeat([]byte(tt.block), max(1, 64<<10/len(tt.block))), n: tt.n,
				tail: strings.NewReader("\nlast line\n")}
			before := leakcheck.HeapInuse()
			stop := heapPeak()
			start := time.Now()
			Pump(r, "spammer", slog.New(slog.NewTextHandler(&host, nil)), lf)
			el := time.Since(start)
			peak := stop()
			lf.Close()
			size := leakcheck.DirSize(t, dir)
			mbps := float64(tt.n) / (1 << 20) / el.Seconds()
			t.Logf("%d MiB in %v (%.0f MiB/s); VM log %d bytes on disk (cap %d); host log %d lines, %d bytes; heap %d KiB before, peak %d KiB",
				tt.n>>20, el.Round(time.Millisecond), mbps, size, logCap, host.lines.Load(), host.bytes.Load(), before>>10, peak>>10)
			if size > 2*logCap {
				t.Errorf("VM log holds %d bytes, over twice the cap %d", size, logCap)
			}
			if max := int64(hostLogBurst + hostLogRate*el.Seconds()*2 + exitTail + 10); host.lines.Load() > max {
				t.Errorf("host log got %d lines in %v, want at most %d", host.lines.Load(), el, max)
			}
			// The peak includes garbage between collections (several times
			// more under the race detector); what is kept after a
			// collection must not grow with the input at all.
			slack := uint64(16 << 20)
			if raceEnabled {
				slack = 96 << 20
			}
			if peak > before+slack {
				t.Errorf("heap peaked at %d KiB, %d KiB before: grows with the input", peak>>10, before>>10)
			}
			if after := leakcheck.HeapInuse(); after > before+1<<20 {
				t.Errorf("heap in use %d KiB after, %d KiB before", after>>10, before>>10)
			}
			b, err := os.ReadFile(lf.Path)
			if err != nil {
				t.Fatal(err)
			}
			got := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
			if got[len(got)-1] != "last line" {
				t.Errorf("last line in the VM log %q, want %q", got[len(got)-1], "last line")
			}
			if tt.n == oneLine {
				if len(got) != 2 || got[0] != strings.Repeat("x", maxLine)+cutMark {
					t.Errorf("the long line was not cut once: %d lines, first of %d bytes", len(got), len(got[0]))
				}
			}
		})
	}
}
