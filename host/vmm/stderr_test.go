package vmm

import (
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"spectrum-os.org/netcfg/internal/syncbuf"
)

// TestStderrRateLimited: a QEMU that writes 10,000 lines to its stderr at
// once gets its first stderrBurst lines into spectrumd's log and a count of
// the rest; lines after a pause get through again; a line over stderrLine
// bytes is cut; control characters are escaped; each line is tagged
// source=qemu-stderr (SPECTRUM_SOURCE in the journal). (Before the limit every
// one of the 10,000 lines was a record.)
func TestStderrRateLimited(t *testing.T) {
	var out syncbuf.Buffer
	l := newStderrLogger(slog.New(slog.NewTextHandler(&out, nil)))
	now := time.Unix(1000, 0)
	l.now = func() time.Time { return now }

	var in strings.Builder
	for i := range 10000 {
		fmt.Fprintf(&in, "qemu-system-x86_64: line %d\n", i)
	}
	// In odd-sized writes, as a pipe delivers them.
	for s := in.String(); len(s) > 0; {
		n := min(len(s), 1000+len(s)%7)
		l.Write([]byte(s[:n]))
		s = s[n:]
	}
	now = now.Add(time.Minute) // refilled
	l.Write([]byte("after the pause \x1b[31mred\n"))
	l.Write([]byte(strings.Repeat("x", 3*stderrLine) + "\n"))
	l.Close()

	var lines, dropped int
	var reports []string
	for _, rec := range strings.Split(strings.TrimSpace(out.String()), "\n") {
		switch {
		case strings.Contains(rec, "qemu-system-x86_64: line "):
			lines++
			if !strings.HasSuffix(rec, " source=qemu-stderr") {
				t.Errorf("QEMU's line %q is not tagged source=qemu-stderr", rec)
			}
		case strings.Contains(rec, "lines dropped"):
			reports = append(reports, rec)
			var d int
			fmt.Sscanf(rec[strings.Index(rec, "dropped=")+len("dropped="):], "%d", &d)
			dropped += d
		}
	}
	if lines != stderrBurst {
		t.Errorf("%d of 10000 burst lines logged, want %d (the burst)", lines, stderrBurst)
	}
	if lines+dropped != 10000 {
		t.Errorf("%d logged + %d reported dropped = %d, want 10000; reports %q", lines, dropped, lines+dropped, reports)
	}
	if len(reports) > 3 {
		t.Errorf("%d drop reports, want a few: %q", len(reports), reports)
	}
	if !strings.Contains(out.String(), `after the pause \\x1b[31mred`) {
		t.Errorf("the line after the pause is missing or not escaped:\n%s", out.String())
	}
	long := strings.Repeat("x", stderrLine) + "…[cut]"
	if !strings.Contains(out.String(), long) || strings.Contains(out.String(), long+"x") {
		t.Errorf("the long line is not cut at %d bytes", stderrLine)
	}
}
