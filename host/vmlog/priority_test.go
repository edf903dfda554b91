package vmlog

import (
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"spectrum-os.org/netcfg/host/hostlog"
)

func TestLinePriority(t *testing.T) {
	for _, tc := range []struct {
		name, line string
		level      slog.Level
		msg        string
	}{
		{"plain", "[    0.000000] Linux version 6.1.0", slog.LevelInfo, "[    0.000000] Linux version 6.1.0"},
		// console_msg_format=syslog: the kernel's own priority, taken off.
		{"kernel info", "<6>[    0.000000] Linux version 6.1.0", slog.LevelInfo, "[    0.000000] Linux version 6.1.0"},
		{"kernel err", "<3>[    1.5] virtio_net: probe failed", slog.LevelError, "[    1.5] virtio_net: probe failed"},
		{"kernel warning", "<4>[    2.0] clocksource: unstable", slog.LevelWarn, "[    2.0] clocksource: unstable"},
		{"kernel notice", "<5>[    2.0] random: crng init done", hostlog.LevelNotice, "[    2.0] random: crng init done"},
		{"kernel crit", "<2>[    9.9] thermal: critical", hostlog.LevelCrit, "[    9.9] thermal: critical"},
		{"debug", "<7>noise", slog.LevelDebug, "noise"},
		// A guest never reaches alert or emerg.
		{"emerg is crit", "<0>Kernel panic - not syncing", hostlog.LevelCrit, "Kernel panic - not syncing"},
		{"alert is crit", "<1>everyone look", hostlog.LevelCrit, "everyone look"},
		// Facility×8 + severity: user.err, local7.debug.
		{"user err", "<11>myapp: failed", slog.LevelError, "myapp: failed"},
		{"largest", "<191>x", slog.LevelDebug, "x"},
		{"prefix alone", "<3>", slog.LevelError, ""},
		// Not a syslog prefix: kept, and the markers decide.
		{"over 191", "<192>x", slog.LevelInfo, "<192>x"},
		{"four digits", "<0003>x", slog.LevelInfo, "<0003>x"},
		{"no digits", "<>x", slog.LevelInfo, "<>x"},
		{"not closed", "<3 error", slog.LevelError, "<3 error"},
		{"html", "<b>bold</b>", slog.LevelInfo, "<b>bold</b>"},
		{"not at the start", "x <3>y", slog.LevelInfo, "x <3>y"},
		// The kernel's words for its worst.
		{"panic", "[    3.1] Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000100", hostlog.LevelCrit, "[    3.1] Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000100"},
		{"oops", "[    3.1] Oops: 0002 [#1] PREEMPT SMP NOPTI", hostlog.LevelCrit, "[    3.1] Oops: 0002 [#1] PREEMPT SMP NOPTI"},
		{"bug", "[    3.1] BUG: kernel NULL pointer dereference, address: 0000000000000000", hostlog.LevelCrit, "[    3.1] BUG: kernel NULL pointer dereference, address: 0000000000000000"},
		{"gpf", "[    3.1] general protection fault, probably for non-canonical address", hostlog.LevelCrit, "[    3.1] general protection fault, probably for non-canonical address"},
		{"arm64", "[    3.1] Unable to handle kernel paging request at virtual address 0", hostlog.LevelCrit, "[    3.1] Unable to handle kernel paging request at virtual address 0"},
		// Words, in any case, as words.
		{"error", "spectrum-netcfg: eth0: error: no such device", slog.LevelError, "spectrum-netcfg: eth0: error: no such device"},
		{"I/O error", "[    5.0] blk_update_request: I/O error, dev vda", slog.LevelError, "[    5.0] blk_update_request: I/O error, dev vda"},
		{"ERROR", "ERROR", slog.LevelError, "ERROR"},
		{"errors", "fsck: 0 errors", slog.LevelInfo, "fsck: 0 errors"},
		{"no_error", "status=no_error", slog.LevelInfo, "status=no_error"},
		{"terror", "terror", slog.LevelInfo, "terror"},
		{"warning", "Warning: clock skew", slog.LevelWarn, "Warning: clock skew"},
		{"kernel WARNING", "[    4.2] WARNING: CPU: 0 PID: 1 at kernel/fork.c:10", slog.LevelWarn, "[    4.2] WARNING: CPU: 0 PID: 1 at kernel/fork.c:10"},
		{"error beats warning", "warning: error", slog.LevelError, "warning: error"},
		{"escaped", `\x1b[31merror\x1b[0m`, slog.LevelInfo, `\x1b[31merror\x1b[0m`}, // "31merror" is one word
		{"empty", "", slog.LevelInfo, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			level, msg := linePriority(tc.line)
			if level != tc.level || msg != tc.msg {
				t.Errorf("linePriority(%q) = %v, %q; want %v, %q", tc.line, level, msg, tc.level, tc.msg)
			}
		})
	}
}

// FuzzLinePriority: whatever a guest writes, its line's level is within
// debug to crit, and what is logged is the line or the line less a short
// "<N>" prefix.
func FuzzLinePriority(f *testing.F) {
	for _, s := range []string{"<0>x", "<191>", "<3", "Kernel panic - not syncing", "x error y", "<<3>>", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		level, msg := linePriority(s)
		if level < slog.LevelDebug || level > hostlog.LevelCrit {
			t.Errorf("linePriority(%q): level %v", s, level)
		}
		if cut := len(s) - len(msg); !strings.HasSuffix(s, msg) || cut > len("<191>") || (cut > 0 && s[0] != '<') {
			t.Errorf("linePriority(%q): message %q", s, msg)
		}
	})
}

// Pump logs each line at the level it asks for, without its prefix; the
// VM's log file has every line as the guest wrote it, a debug line
// included, which the host's log does not take.
func TestPumpPriorities(t *testing.T) {
	in := "<6>[    0.0] Linux version\n<0>forged emerg\n<7>debug noise\n[    3.1] Kernel panic - not syncing: VFS\nplain\n"
	var out strings.Builder
	lf := &File{Path: filepath.Join(t.TempDir(), "g.log")}
	h := slog.NewTextHandler(&out, &slog.HandlerOptions{ReplaceAttr: func(g []string, a slog.Attr) slog.Attr {
		if a.Key == slog.TimeKey && len(g) == 0 {
			return slog.Attr{}
		}
		return a
	}})
	Pump(strings.NewReader(in), "g", slog.New(h), lf)
	lf.Close()
	want := `level=INFO msg="[    0.0] Linux version" vm=g source=serial
level=ERROR+4 msg="forged emerg" vm=g source=serial
level=ERROR+4 msg="[    3.1] Kernel panic - not syncing: VFS" vm=g source=serial
level=INFO msg=plain vm=g source=serial
`
	if out.String() != want {
		t.Errorf("host log:\n%s\nwant:\n%s", out.String(), want)
	}
	b, err := os.ReadFile(lf.Path)
	if err != nil {
		t.Fatal(err)
	}
	if string(b) != in {
		t.Errorf("log file:\n%s\nwant:\n%s", b, in)
	}
}
