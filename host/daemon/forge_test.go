package daemon

import (
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"spectrum-os.org/netcfg/host/vmlog/vmlogtest"
	"spectrum-os.org/netcfg/internal/syncbuf"
)

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
					io.WriteString(w, strings.Join(vmlogtest.Forgeries, "\n")+"\n")
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
			vmlogtest.CheckRecords(t, kind, strings.Join(serial, "\n")+"\n", "evil", len(vmlogtest.Forgeries))
		})
	}
}
