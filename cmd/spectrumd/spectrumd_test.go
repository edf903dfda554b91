package main

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"spectrum-os.org/netcfg/internal/printable"
)

// TestCheckExitStatus runs `spectrumd check` through the dispatcher: 0 when
// every VM is valid, 1 when one is not, 2 on a usage error, 0 for -h.
func TestCheckExitStatus(t *testing.T) {
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	elf := make([]byte, 64)
	copy(elf, "\x7fELF\x02\x01\x01")
	binary.LittleEndian.PutUint16(elf[16:], 2)
	for _, f := range []struct{ path, body string }{
		{"netvm/vmlinux", string(elf)},
		{"netvm/blk/root.img", "x"},
		{"appvm-lynx/vmlinux", string(elf)},
		{"appvm-lynx/blk/root.img", "x"},
		{"appvm-lynx/providers/net/netvm", ""},
	} {
		p := filepath.Join(data, f.path)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(f.body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	state := filepath.Join(dir, "state")
	for _, tt := range []struct {
		name   string
		args   []string
		status int
		out    string // in stdout or stderr
	}{
		{name: "valid", args: []string{"check", "-data", data, "-state", state}, status: 0, out: "2 VMs valid"},
		{name: "json", args: []string{"check", "-data", data, "-state", state, "-json"}, status: 0, out: `"name": "appvm-lynx"`},
		{name: "help", args: []string{"check", "-h"}, status: 0, out: "usage: spectrumd check"},
		{name: "bad flag", args: []string{"check", "-nope"}, status: 2, out: "usage: spectrumd check"},
		{name: "extra argument", args: []string{"check", "extra"}, status: 2, out: `unexpected argument "extra"`},
		{name: "missing data", args: []string{"check", "-data", filepath.Join(dir, "none"), "-state", state}, status: 1, out: "cannot read the data directory"},
		{name: "top-level help lists check", args: []string{"-h"}, status: 0, out: "check"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var o, e bytes.Buffer
			if got := run(tt.args, &o, &e); got != tt.status {
				t.Errorf("exit status %d, want %d\nstdout:\n%s\nstderr:\n%s", got, tt.status, o.String(), e.String())
			}
			if !strings.Contains(o.String()+e.String(), tt.out) {
				t.Errorf("output lacks %q\nstdout:\n%s\nstderr:\n%s", tt.out, o.String(), e.String())
			}
		})
	}
	// An invalid VM: exit 1, and the output names the file at fault.
	kernel := filepath.Join(data, "netvm", "vmlinux")
	os.WriteFile(kernel, []byte("not a kernel"), 0o644)
	var o, e bytes.Buffer
	if got := run([]string{"check", "-data", data, "-state", state}, &o, &e); got != 1 {
		t.Errorf("exit status %d with an invalid VM, want 1", got)
	}
	if !strings.Contains(o.String(), kernel) {
		t.Errorf("output does not name %s:\n%s", kernel, o.String())
	}
}

// TestOutputEscaped: what the daemon sends (an error quoting a name, the
// names in list and status) is printed escaped, whatever daemon answers:
// here a stand-in that sends raw control and format characters.
func TestOutputEscaped(t *testing.T) {
	dir := t.TempDir()
	ln, err := net.Listen("unix", filepath.Join(dir, "control.sock"))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	const evil = "evil\x1b]52;c;ZWNobyBwd25lZA==\x07\x1b[2J\u202e\u009b6n"
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			req, _ := bufio.NewReader(c).ReadString('\n')
			var resp any = map[string]any{"ok": false, "error": "VM " + evil + ": no such\nthing"}
			if strings.Contains(req, `"list"`) || strings.Contains(req, `"status"`) {
				resp = map[string]any{"ok": true, "vms": []map[string]any{{"name": evil, "state": "running\x1b[8m",
					"last_exit": "exit\x1b]0;t\x07", "links": []map[string]any{{"peer": evil, "role": "client", "id": "a5:46", "mac": "0a:b3:ec:00:a5:46"}}}}}
			}
			b, _ := json.Marshal(resp)
			c.Write(append(b, '\n'))
			c.Close()
		}
	}()
	for _, args := range [][]string{
		{"start", "-run", dir, "evil"},
		{"stop", "-run", dir, "evil"},
		{"list", "-run", dir},
		{"list", "-run", dir, "-json"},
		{"status", "-run", dir, "evil"},
		{"status", "-run", dir, "-json", "evil"},
	} {
		var o, e bytes.Buffer
		run(args, &o, &e)
		out := o.String() + e.String()
		if i := strings.IndexFunc(out, func(r rune) bool { return r != '\n' && printable.Unsafe(r) }); i >= 0 {
			t.Errorf("spectrumd %s printed %q raw:\n%s", strings.Join(args, " "), []rune(out[i:])[0], out)
		}
		want := `evil\x1b]52;c;ZWNobyBwd25lZA==\x07\x1b[2J\u202e\u009b6n`
		if slices.Contains(args, "-json") {
			b, _ := json.Marshal(want)
			want = string(b[1 : len(b)-1])
		}
		if !strings.Contains(out, want) {
			t.Errorf("spectrumd %s does not show the name escaped:\n%s", strings.Join(args, " "), out)
		}
		if args[0] == "start" && !strings.Contains(e.String(), ": no such\nthing\n") {
			t.Errorf("spectrumd start: the message's own newline is lost:\n%s", e.String())
		}
	}
}
