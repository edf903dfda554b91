package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestDocument(t *testing.T) {
	dir := t.TempDir()
	write := func(name, s string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, name), []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("machine.txt", "date=2026-12-01\nCPUs=2 (AMD EPYC)\n")
	write("guest.txt", `goos: linux
BenchmarkWatchHotplug-2   	      20	   1234567 ns/op	         0.910 median-ms	         1.80 max-ms
BenchmarkAgent/nics=1-2   	      20	   3800000 ns/op	         3.80 ms
PASS
ok  	spectrum-os.org/netcfg/guest	3.1s
`)
	write("daemon.txt", "running VMs: 10\n")
	write("t.tmpl", `{{machine}}
{{table "guest" "."}}
hotplug {{target "guest" "WatchHotplug" "median-ms" "<=" 5}}; one NIC {{target "guest" "Agent/nics=1" "ms" "<=" 2}}; {{targetRatio "guest" "Agent/nics=1" "WatchHotplug" "ns/op" ">=" 2}}
{{value "guest" "WatchHotplug" "max-ms"}} {{ratio "guest" "WatchHotplug" "Agent/nics=1" "ns/op"}}
{{raw "daemon"}}`)
	out := filepath.Join(dir, "out.md")
	if err := run(dir, filepath.Join(dir, "t.tmpl"), out); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(out)
	want := `| | |
| --- | --- |
| date | 2026-12-01 |
| CPUs | 2 (AMD EPYC) |

| benchmark | ms/op | median-ms | max-ms | ms |
| --- | ---: | ---: | ---: | ---: |
| WatchHotplug | 1.23 | 0.91 | 1.80 | |
| Agent/nics=1 | 3.80 | | | 3.80 |

hotplug met (0.91 median-ms, target ≤ 5); one NIC **missed** (3.80 ms, target ≤ 2); met (3.08×, target ≥ 2)
1.80 0.325×
` + "```\nrunning VMs: 10\n```\n"
	if diff := cmp.Diff(want, string(got)); diff != "" {
		t.Errorf("document (-want +got):\n%s", diff)
	}
}

// A figure the template names that no benchmark reported fails the run.
func TestMissingFigure(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "guest.txt"), []byte("BenchmarkA-2 1 5 ns/op\n"), 0o644)
	for _, tmpl := range []string{
		`{{value "guest" "B" "ns/op"}}`,
		`{{value "guest" "A" "ms"}}`,
		`{{value "host" "A" "ns/op"}}`,
		`{{table "guest" "^X"}}`,
		`{{raw "none"}}`,
	} {
		os.WriteFile(filepath.Join(dir, "t.tmpl"), []byte(tmpl), 0o644)
		err := run(dir, filepath.Join(dir, "t.tmpl"), filepath.Join(dir, "out.md"))
		if err == nil || !strings.Contains(err.Error(), "no") {
			t.Errorf("%s: error %v, want one saying what is missing", tmpl, err)
		}
	}
}
