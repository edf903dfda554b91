package cli

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"spectrum-os.org/netcfg/host/alloc"
	"spectrum-os.org/netcfg/internal/printable"
)

// writeVM writes a minimal valid VM directory under data.
func writeVM(t *testing.T, data, name string, providers ...string) {
	t.Helper()
	files := map[string][]byte{"vmlinux": elfHeader(), "blk/root.img": []byte("image")}
	for _, p := range providers {
		files["providers/net/"+p] = nil
	}
	for f, b := range files {
		p := filepath.Join(data, name, f)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// elfHeader is the 64-byte header of an x86-64 ELF executable: all the
// loader reads of a kernel.
func elfHeader() []byte {
	elf := make([]byte, 64)
	copy(elf, "\x7fELF\x02\x01\x01")
	binary.LittleEndian.PutUint16(elf[16:], 2) // ET_EXEC
	return elf
}

func check(t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	var o, e bytes.Buffer
	err = Check(args, &o, &e)
	return o.String(), e.String(), err
}

func TestCheckValid(t *testing.T) {
	dir := t.TempDir()
	data, state := filepath.Join(dir, "data"), filepath.Join(dir, "state")
	writeVM(t, data, "appvm-lynx", "netvm")
	writeVM(t, data, "netvm")
	// The state holds the documented example's id: check shows it.
	if err := os.MkdirAll(state, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(state, alloc.StateFile), []byte(`{"version":1,"links":[{"client":"appvm-lynx","provider":"netvm","id":"a5:46"}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadFile(filepath.Join(state, alloc.StateFile))

	out, _, err := check(t, "-data", data, "-state", state)
	if err != nil {
		t.Fatalf("check: %v\n%s", err, out)
	}
	for _, want := range []string{
		"netvm\n", "appvm-lynx\n",
		filepath.Join(data, "appvm-lynx", "blk", "root.img"),
		"net from   netvm            link a5:46  mac 0a:b3:ec:00:a5:46  100.64.165.70/16 via 169.254.165.70",
		"serves     appvm-lynx       link a5:46  mac 0a:b3:ec:80:a5:46  169.254.165.70/32",
		"2 VMs valid, 0 invalid",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if strings.Index(out, "netvm\n") > strings.Index(out, "appvm-lynx\n") {
		t.Errorf("provider not listed first:\n%s", out)
	}
	after, _ := os.ReadFile(filepath.Join(state, alloc.StateFile))
	if !bytes.Equal(before, after) {
		t.Errorf("check rewrote the state file")
	}
}

func TestCheckWritesNothing(t *testing.T) {
	dir := t.TempDir()
	data, state := filepath.Join(dir, "data"), filepath.Join(dir, "state")
	writeVM(t, data, "a", "b")
	writeVM(t, data, "b")
	out, stderr, err := check(t, "-data", data, "-state", state)
	if err != nil {
		t.Fatalf("check: %v\n%s", err, out)
	}
	if !strings.Contains(out, "mac 0a:b3:ec:00:") || !strings.Contains(out, "mac 0a:b3:ec:80:") {
		t.Errorf("no MACs in:\n%s", out)
	}
	// A report, not a log: no informational log line ("no link id state
	// yet") on stderr.
	if stderr != "" {
		t.Errorf("check of a valid tree wrote to stderr: %q", stderr)
	}
	if _, err := os.Stat(state); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("check created %s: %v", state, err)
	}
}

func TestCheckInvalid(t *testing.T) {
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	writeVM(t, data, "good")
	writeVM(t, data, "bad")
	kernel := filepath.Join(data, "bad", "vmlinux")
	if err := os.WriteFile(kernel, []byte("MZ bzImage"), 0o644); err != nil {
		t.Fatal(err)
	}
	writeVM(t, data, "orphan", "nowhere")

	out, _, err := check(t, "-data", data, "-state", filepath.Join(dir, "state"))
	if !errors.Is(err, ErrInvalid) {
		t.Fatalf("check error %v, want ErrInvalid", err)
	}
	for _, want := range []string{
		"good\n",
		"invalid bad: " + kernel + ": not an ELF executable",
		"invalid orphan: " + filepath.Join(data, "orphan", "providers", "net", "nowhere") + ": no such VM",
		"1 VMs valid, 2 invalid",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}

	out, _, err = check(t, "-data", data, "-state", filepath.Join(dir, "state"), "-json")
	if !errors.Is(err, ErrInvalid) {
		t.Fatalf("check -json error %v, want ErrInvalid", err)
	}
	var r checkReport
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("-json output does not parse: %v\n%s", err, out)
	}
	if len(r.VMs) != 1 || r.VMs[0].Name != "good" {
		t.Errorf("VMs %+v, want good only", r.VMs)
	}
	want := []errorReport{
		{VM: "bad", Path: kernel},
		{VM: "orphan", Path: filepath.Join(data, "orphan", "providers", "net", "nowhere")},
	}
	for i := range r.Errors {
		r.Errors[i].Error = "" // the messages are tested in host/config
	}
	if diff := cmp.Diff(want, r.Errors); diff != "" {
		t.Errorf("errors (-want +got):\n%s", diff)
	}
}

func TestCheckJSON(t *testing.T) {
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	writeVM(t, data, "app", "vpn", "net")
	writeVM(t, data, "vpn", "net")
	writeVM(t, data, "net")
	out, _, err := check(t, "-data", data, "-state", filepath.Join(dir, "state"), "-json")
	if err != nil {
		t.Fatal(err)
	}
	var r checkReport
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("-json output does not parse: %v\n%s", err, out)
	}
	var order []string
	ids := map[string]string{} // client>provider -> id, from both ends
	for _, v := range r.VMs {
		order = append(order, v.Name)
		for _, l := range v.Net {
			if !strings.HasPrefix(l.MAC, "0a:b3:ec:00:") || l.Client != v.Name {
				t.Errorf("%s: client end %+v", v.Name, l)
			}
			ids[l.Client+">"+l.Provider] += l.ID
		}
		for _, l := range v.Serves {
			if !strings.HasPrefix(l.MAC, "0a:b3:ec:80:") || l.Provider != v.Name {
				t.Errorf("%s: provider end %+v", v.Name, l)
			}
			ids[l.Client+">"+l.Provider] += l.ID
		}
	}
	if diff := cmp.Diff([]string{"net", "vpn", "app"}, order); diff != "" {
		t.Errorf("order (-want +got):\n%s", diff)
	}
	if len(ids) != 3 {
		t.Errorf("links %v, want 3", ids)
	}
	for k, v := range ids {
		if len(v) != 10 || v[:5] != v[5:] {
			t.Errorf("link %s: the two ends disagree or one is missing: %q", k, v)
		}
	}
}

func TestCheckCorruptState(t *testing.T) {
	dir := t.TempDir()
	data, state := filepath.Join(dir, "data"), filepath.Join(dir, "state")
	writeVM(t, data, "a", "b")
	writeVM(t, data, "b")
	os.MkdirAll(state, 0o755)
	os.WriteFile(filepath.Join(state, alloc.StateFile), []byte("{garbage"), 0o600)
	_, stderr, err := check(t, "-data", data, "-state", state)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(stderr, "corrupt") {
		t.Errorf("stderr does not say the state is corrupt: %q", stderr)
	}
}

func TestCheckUsage(t *testing.T) {
	for _, args := range [][]string{{"-h"}, {"--help"}} {
		stdout, _, err := check(t, args...)
		if err != nil || !strings.Contains(stdout, "usage: spectrumd check") {
			t.Errorf("check %v: error %v, stdout %q", args, err, stdout)
		}
	}
	for _, args := range [][]string{{"-bogus"}, {"extra"}} {
		_, stderr, err := check(t, args...)
		if !errors.Is(err, ErrUsage) {
			t.Errorf("check %v: error %v", args, err)
		}
		if !strings.Contains(stderr, "usage: spectrumd check") {
			t.Errorf("check %v: no usage in %q", args, stderr)
		}
	}
}

// TestCheckEscapesNames: names and symlink targets are anyone's to choose;
// check shows them escaped, in text and in JSON, so a VM directory's name
// cannot drive the terminal or fake a line of the report.
func TestCheckEscapesNames(t *testing.T) {
	dir := t.TempDir()
	data, state := filepath.Join(dir, "data"), filepath.Join(dir, "state")
	hostile := []string{
		"clip\x1b]52;c;ZWNobyBwd25lZA==\x07",
		"title\x1b]2;pwned\x1b\\\x1b[2J",
		"two\nok: 9 VMs valid, 0 invalid",
		"bidi\u202egnp.exe",
		"zw\u200bsp",
		"c1\u009b6n",
	}
	for _, n := range hostile {
		writeVM(t, data, n)
	}
	// A valid VM whose kernel is a symlink, inside its directory, to a
	// file with a bidi control in its name: its path is shown escaped.
	writeVM(t, data, "ok")
	if err := os.Rename(filepath.Join(data, "ok", "vmlinux"), filepath.Join(data, "ok", "k\u202e")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("k\u202e", filepath.Join(data, "ok", "vmlinux")); err != nil {
		t.Fatal(err)
	}
	// A symlink out of its VM to a hostile target.
	writeVM(t, data, "out")
	if err := os.WriteFile(filepath.Join(dir, "\x1b]0;x\x07"), elfHeader(), 0o644); err != nil {
		t.Fatal(err)
	}
	os.Remove(filepath.Join(data, "out", "vmlinux"))
	if err := os.Symlink("../../\x1b]0;x\x07", filepath.Join(data, "out", "vmlinux")); err != nil {
		t.Fatal(err)
	}

	out, _, err := check(t, "-data", data, "-state", state)
	if !errors.Is(err, ErrInvalid) {
		t.Fatalf("check: %v, want ErrInvalid\n%s", err, out)
	}
	if i := strings.IndexFunc(out, func(r rune) bool { return r != '\n' && printable.Unsafe(r) }); i >= 0 {
		t.Errorf("output holds %q raw:\n%s", []rune(out[i:])[0], out)
	}
	for _, want := range []string{
		`invalid clip\x1b]52;c;ZWNobyBwd25lZA==\x07: `,
		`invalid two\nok: 9 VMs valid, 0 invalid: `,
		`invalid bidi\u202egnp.exe: `,
		`invalid c1\u009b6n: `,
		`invalid out: ` + filepath.Join(data, "out", "vmlinux") + `: symlink leads out of the VM's directory (to ../../\x1b]0;x\x07)`,
		`  kernel     ` + filepath.Join(data, "ok", `k\u202e`) + "\n",
		"1 VMs valid, 7 invalid\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if n := strings.Count(out, "\n"); n != 1+2+1+7+1 {
		t.Errorf("%d lines, want 12 (a name made a line of its own?):\n%s", n, out)
	}

	js, _, err := check(t, "-data", data, "-state", state, "-json")
	if !errors.Is(err, ErrInvalid) {
		t.Fatalf("check -json: %v", err)
	}
	var r checkReport
	if err := json.Unmarshal([]byte(js), &r); err != nil {
		t.Fatalf("check -json: %v\n%s", err, js)
	}
	var walk func(v any)
	walk = func(v any) {
		switch v := v.(type) {
		case string:
			if strings.IndexFunc(v, printable.Unsafe) >= 0 {
				t.Errorf("JSON string %q holds an unsafe character", v)
			}
		case []any:
			for _, x := range v {
				walk(x)
			}
		case map[string]any:
			for _, x := range v {
				walk(x)
			}
		}
	}
	var generic any
	json.Unmarshal([]byte(js), &generic)
	walk(generic)
	var vms []string
	for _, e := range r.Errors {
		vms = append(vms, e.VM)
	}
	slices.Sort(vms)
	want := []string{`bidi\u202egnp.exe`, `c1\u009b6n`, `clip\x1b]52;c;ZWNobyBwd25lZA==\x07`, "out",
		`title\x1b]2;pwned\x1b\\x1b[2J`, `two\nok: 9 VMs valid, 0 invalid`, `zw\u200bsp`}
	if diff := cmp.Diff(want, vms); diff != "" {
		t.Errorf("JSON errors' VMs (-want +got):\n%s", diff)
	}
}
