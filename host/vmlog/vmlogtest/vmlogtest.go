// Package vmlogtest holds what the tests of vmlog and of its users share:
// serial lines that try to forge log records, and a check of the host's log
// they were written to.
package vmlogtest

import (
	"encoding/json"
	"strings"
	"testing"
)

// Forgeries are serial output of a guest trying to pass lines off as
// spectrumd's own: each guest line must stay one record, from the serial
// source, with its control characters escaped.
var Forgeries = []string{
	"boot ok\rtime=2026-11-26T00:00:00Z level=ERROR msg=forged",
	"\x1b[2K\x1b[1Glevel=ERROR msg=\"forged\" vm=other",
	`{"time":"x","level":"ERROR","msg":"forged"}`,
	"a\u2028level=ERROR msg=forged\u0085b",
	"tab\there\x00nul\x7fdel\xff",
	"level=ERROR msg=forged", // on its own line: still the guest's
}

// CheckRecords parses the host log written by handler kind and checks it
// holds one record per guest line, each tagged as serial output of vm, at
// INFO or at the ERROR a line saying "ERROR" asks for (a guest chooses its
// lines' priority, up to crit), and no raw control character.
func CheckRecords(t testing.TB, kind, out, vm string, want int) {
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
			if !strings.HasPrefix(l, "time=") || !(strings.Contains(l, " level=INFO msg=") || strings.Contains(l, " level=ERROR msg=")) ||
				!strings.HasSuffix(l, " vm="+vm+" source=serial") {
				t.Errorf("text record %q is not one serial record of %s", l, vm)
			}
		case "json":
			var rec map[string]any
			if err := json.Unmarshal([]byte(l), &rec); err != nil {
				t.Errorf("json record %q: %v", l, err)
				continue
			}
			if (rec["level"] != "INFO" && rec["level"] != "ERROR") || rec["vm"] != vm || rec["source"] != "serial" || len(rec) != 5 {
				t.Errorf("json record %q is not one serial record of %s", l, vm)
			}
		}
	}
}
