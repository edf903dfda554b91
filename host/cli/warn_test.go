package cli

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"spectrum-os.org/netcfg/host/control"
	"spectrum-os.org/netcfg/host/control/controltest"
)

// TestCheckWarnings: check names every entry of a VM directory it does not
// use, with the known name it is nearest to, and every blk/ file that is
// not *.img; the VM is valid all the same (exit 0). Before, provider/net
// passed without a word and the VM had no network.
func TestCheckWarnings(t *testing.T) {
	dir := t.TempDir()
	data, state := filepath.Join(dir, "data"), filepath.Join(dir, "state")
	writeVM(t, data, "netvm")
	writeVM(t, data, "appvm-lynx")
	for _, p := range []string{"appvm-lynx/provider/net/netvm", "appvm-lynx/blk/disk.raw"} {
		os.MkdirAll(filepath.Dir(filepath.Join(data, p)), 0o755)
		if err := os.WriteFile(filepath.Join(data, p), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	typo := filepath.Join(data, "appvm-lynx", "provider", "net")
	raw := filepath.Join(data, "appvm-lynx", "blk", "disk.raw")
	out, _, err := check(t, "-data", data, "-state", state)
	if err != nil {
		t.Fatalf("check: %v\n%s", err, out)
	}
	for _, want := range []string{
		"  warning    " + typo + ": unknown entry, not used: did you mean providers/net?\n",
		"  warning    " + raw + ": not a *.img disk image, not given to the VM\n",
		"2 VMs valid, 0 invalid; 2 warnings\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("check output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "net from") {
		t.Errorf("appvm-lynx has a link, which provider/net must not give:\n%s", out)
	}
	out, _, err = check(t, "-data", data, "-state", state, "-json")
	if err != nil {
		t.Fatal(err)
	}
	var r checkReport
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatal(err)
	}
	got := map[string][]warnReport{}
	for _, v := range r.VMs {
		got[v.Name] = v.Warnings
	}
	want := map[string][]warnReport{
		"netvm": {},
		"appvm-lynx": {
			{Path: raw, Warning: "not a *.img disk image, not given to the VM"},
			{Path: typo, Warning: "unknown entry, not used: did you mean providers/net?"},
		},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("check -json warnings (-want +got):\n%s", diff)
	}

	// An invalid VM: its error, and the warning that may say why.
	os.Remove(filepath.Join(data, "netvm", "vmlinux"))
	os.WriteFile(filepath.Join(data, "netvm", "vmlinuz"), elfHeader(), 0o644)
	out, _, err = check(t, "-data", data, "-state", state)
	if !errors.Is(err, ErrInvalid) {
		t.Fatalf("check: %v\n%s", err, out)
	}
	wantLines := "invalid netvm: " + filepath.Join(data, "netvm", "vmlinux") + ": required kernel is missing: file does not exist\n" +
		"  warning    " + filepath.Join(data, "netvm", "vmlinuz") + ": unknown entry, not used: did you mean vmlinux?\n"
	if !strings.Contains(out, wantLines) {
		t.Errorf("check output lacks\n%s\nin:\n%s", wantLines, out)
	}
}

// TestListStatusWarnings: list and status show the warnings the daemon
// sends, escaped, and pass them on in -json.
func TestListStatusWarnings(t *testing.T) {
	h := statusHandler{vms: []control.VMStatus{
		{Name: "app", State: "running", Warnings: []string{"data/app/provider/net: did you mean providers/net?", "data/app/x\x1b[2J: unknown"}},
		{Name: "netvm", State: "running"},
	}}
	run := filepath.Dir(controltest.Serve(t, &control.Server{Handler: h}))
	var out bytes.Buffer
	if err := List([]string{"-run", run}, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	wantList := "warning: app: data/app/provider/net: did you mean providers/net?\nwarning: app: data/app/x\\x1b[2J: unknown\n"
	if !strings.HasSuffix(out.String(), wantList) {
		t.Errorf("list does not end with\n%s\n%s", wantList, out.String())
	}
	out.Reset()
	if err := Status([]string{"app", "-run", run}, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	if want := "warning:  data/app/provider/net: did you mean providers/net?\nwarning:  data/app/x\\x1b[2J: unknown\n"; !strings.HasSuffix(out.String(), want) {
		t.Errorf("status does not end with\n%s\n%s", want, out.String())
	}
	out.Reset()
	if err := Status([]string{"app", "-run", run, "-json"}, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	if want := `"warnings":["data/app/provider/net: did you mean providers/net?","data/app/x\\x1b[2J: unknown"]`; !strings.Contains(out.String(), want) {
		t.Errorf("status -json lacks %s:\n%s", want, out.String())
	}
}
