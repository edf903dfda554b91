package vmlog

import (
	"log/slog"
	"strings"
	"testing"

	"spectrum-os.org/netcfg/host/vmlog/vmlogtest"
)

func TestSerialCannotForgeLogLines(t *testing.T) {
	in := strings.Join(vmlogtest.Forgeries, "\n") + "\n"
	for _, kind := range []string{"text", "json"} {
		t.Run(kind, func(t *testing.T) {
			var out strings.Builder
			var h slog.Handler = slog.NewTextHandler(&out, nil)
			if kind == "json" {
				h = slog.NewJSONHandler(&out, nil)
			}
			Pump(strings.NewReader(in), "guest", slog.New(h), nil)
			vmlogtest.CheckRecords(t, kind, out.String(), "guest", len(vmlogtest.Forgeries))
		})
	}
}
