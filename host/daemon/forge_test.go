package daemon

import (
	"encoding/json"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"spectrum-os.org/netcfg/internal/syncbuf"
)

// forgeries are serial output of a guest trying to pass lines off as
// spectrumd's own: each guest line must stay one record, from the serial
// source, with its control characters escaped.
var forgeries = []string{
	"boot ok\rtime=2026-11-26T00:00:00Z level=ERROR msg=forged",
	"\x1b[2K\x1b[1Glevel=ERROR msg=\"forged\" vm=other",
	`{"time":"x","level":"ERROR","msg":"forged"}`,
	"a\u2028level=ERROR msg=forged\u0085b",
	"tab\there\x00nul\x7fdel\xff",
	"level=ERROR msg=forged", // on its own line: still the guest's
}

// checkRecords parses the host log written by handler kind and checks it
// holds one INFO record per guest line, each tagged as serial output of vm,
// and no raw control character.
func checkRecords(t *testing.T, kind, out, vm string, want int) {
	t.Helper()
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) != want {
		t.Fatalf("%s: %d records for %d guest lines:\n%s", kind, len(lines), want, out)
	}
	for _, l := range lines {
		for _, r := range l {
			if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) || r == 0x2028 || r == 0x2029 {
				t.Errorf("%s: record carries control character %U: %q", kind, r, l)
			}
		}
		switch kind {
		case "text":
			if !strings.HasPrefix(l, "time=") || !strings.Contains(l, " level=INFO msg=") ||
				!strings.HasSuffix(l, " vm="+vm+" source=serial") {
				t.Errorf("text record %q is not one serial INFO record of %s", l, vm)
			}
		case "json":
			var rec map[string]any
			if err := json.Unmarshal([]byte(l), &rec); err != nil {
				t.Errorf("json record %q: %v", l, err)
				continue
			}
			if rec["level"] != "INFO" || rec["vm"] != vm || rec["source"] != "serial" || len(rec) != 5 {
				t.Errorf("json record %q is not one serial INFO record of %s", l, vm)
			}
		}
	}
}

func TestSerialCannotForgeLogLines(t *testing.T) {
	in := strings.Join(forgeries, "\n") + "\n"
	for _, kind := range []string{"text", "json"} {
		t.Run(kind, func(t *testing.T) {
			var out strings.Builder
			var h slog.Handler = slog.NewTextHandler(&out, nil)
			if kind == "json" {
				h = slog.NewJSONHandler(&out, nil)
			}
			PumpSerial(strings.NewReader(in), "guest", slog.New(h), nil)
			checkRecords(t, kind, out.String(), "guest", len(forgeries))
		})
	}
}

// TestDaemonSerialCannotForgeLogLines: the same through the daemon, whose
// own records (launch, stop) must be the only ones not from the serial
// source.
func TestDaemonSerialCannotForgeLogLines(t *testing.T) {
	for _, kind := range []string{"text", "json"} {
		t.Run(kind, func(t *testing.T) {
			var logBuf syncbuf.Buffer
			written := make(chan struct{})
			d, _, _ := newTestDaemon(t, map[string][]string{"evil": nil}, func(o *Options, v *fakeVMM) {
				o.Log = slog.New(slog.NewTextHandler(&logBuf, nil))
				if kind == "json" {
					o.Log = slog.New(slog.NewJSONHandler(&logBuf, nil))
				}
				v.spew = func(w io.Writer) {
					io.WriteString(w, strings.Join(forgeries, "\n")+"\n")
					close(written)
				}
			})
			if err := d.Start("evil"); err != nil {
				t.Fatal(err)
			}
			<-written
			time.Sleep(50 * time.Millisecond)
			if err := d.Stop("evil"); err != nil {
				t.Fatal(err)
			}
			var serial []string
			for _, l := range strings.Split(strings.TrimSuffix(logBuf.String(), "\n"), "\n") {
				if strings.Contains(l, "source=serial") || strings.Contains(l, `"source":"serial"`) {
					serial = append(serial, l)
				} else if strings.Contains(l, "forged") {
					t.Errorf("a forged line became a record of its own: %q", l)
				}
			}
			checkRecords(t, kind, strings.Join(serial, "\n")+"\n", "evil", len(forgeries))
		})
	}
}
