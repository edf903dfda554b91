package vmlog

import (
	"bytes"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"spectrum-os.org/netcfg/internal/printable"
)

func TestSanitize(t *testing.T) {
	a := func(n int) string { return strings.Repeat("a", n) }
	for _, tt := range []struct{ name, in, want string }{
		{"plain", "spectrum-netcfg: eth0 up", "spectrum-netcfg: eth0 up"},
		{"escape sequence", "\x1b[2Jcleared", `\x1b[2Jcleared`},
		{"carriage return forging a line", "ok\rlevel=INFO msg=fake", `ok\rlevel=INFO msg=fake`},
		{"tab", "a\tb", `a\tb`},
		{"invalid utf8", "a\xffb", `a\xffb`},
		{"C1 control, not an invalid byte", "a\u009bb\x9b", `a\u009bb\x9b`},
		{"line separator", "a\u2028b", `a\u2028b`},
		{"unicode kept", "héllo ✓ 日本", "héllo ✓ 日本"},
		// Format characters: invisible, yet they change what a line reads as.
		{"zero-width space before a marker", "\u200b=== spectrumd: VM launched", `\u200b=== spectrumd: VM launched`},
		{"zero-width joiner and non-joiner", "a\u200db\u200cc", `a\u200db\u200cc`},
		{"right-to-left override", "user\u202etxt.exe", `user\u202etxt.exe`},
		{"bidi isolates", "\u2066a\u2069\u2067b\u2069\u2068c", `\u2066a\u2069\u2067b\u2069\u2068c`},
		{"marks", "\u200e\u200f\u061c", `\u200e\u200f\u061c`},
		{"BOM and word joiner", "\ufeffa\u2060b", `\ufeffa\u2060b`},
		{"soft hyphen", "pass\u00adword", `pass\u00adword`},
		{"tag characters", "x\U000e0041\U000e007f", `x\U000e0041\U000e007f`},
		// Cut at maxLine bytes: never inside a character or an escape.
		{"fits exactly", a(maxLine), a(maxLine)},
		{"escape fits exactly", a(maxLine-4) + "\x1b", a(maxLine-4) + `\x1b`},
		{"one byte over", a(maxLine + 1), a(maxLine) + cutMark},
		{"rune across the cut", a(maxLine-1) + "✓", a(maxLine-1) + cutMark},
		{"rune just fits", a(maxLine-3) + "✓", a(maxLine-3) + "✓"},
		{"escape across the cut", a(maxLine-2) + "\x1b", a(maxLine-2) + cutMark},
		{"long escape across the cut", a(maxLine-5) + "\U000e0041", a(maxLine-5) + cutMark},
		{"invalid byte across the cut", a(maxLine-3) + "\xff", a(maxLine-3) + cutMark},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := Sanitize(tt.in); got != tt.want {
				t.Errorf("Sanitize(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
	if got := Sanitize(strings.Repeat("a", 10000)); len(got) > maxLine+len("…[cut]") {
		t.Errorf("long line kept %d bytes", len(got))
	}
}

// FuzzSanitize: whatever a guest writes, the result is valid UTF-8 with no
// character that Sanitize escapes, within maxLine bytes and the cut mark,
// and a line that comes out unchanged is a fixed point.
func FuzzSanitize(f *testing.F) {
	for _, s := range []string{"plain", "\x1b[31m", "\u200b=== spectrumd:", "a\xffb\u202e", strings.Repeat("✓", 1400), strings.Repeat("\x00", 1100)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		out := Sanitize(in)
		if !utf8.ValidString(out) {
			t.Fatalf("Sanitize(%q) = %q: invalid UTF-8", in, out)
		}
		for _, r := range out {
			if printable.Unsafe(r) {
				t.Fatalf("Sanitize(%q) = %q keeps %U", in, out, r)
			}
		}
		body, cut := strings.CutSuffix(out, cutMark)
		if len(body) > maxLine || (cut && len(in) <= maxLine/6 && !strings.HasSuffix(in, cutMark)) {
			t.Fatalf("Sanitize(%q): %d bytes before the mark, cut %v", in, len(body), cut)
		}
		if out == in && Sanitize(out) != out {
			t.Fatalf("Sanitize(%q) is not a fixed point", in)
		}
	})
}

// TestPumpCutLine: a line cut at the buffer's size in the middle of a
// character keeps the whole characters before it, and nothing of that one.
func TestPumpCutLine(t *testing.T) {
	lf := &File{Path: filepath.Join(t.TempDir(), "vm.log")}
	in := strings.Repeat("a", maxLine-1) + "✓ and the rest\nnext\n"
	Pump(strings.NewReader(in), "vm1", slog.New(slog.DiscardHandler), lf)
	lf.Close()
	b, err := os.ReadFile(lf.Path)
	if err != nil {
		t.Fatal(err)
	}
	want := strings.Repeat("a", maxLine-1) + cutMark + "\nnext\n"
	if string(b) != want {
		t.Errorf("log file ends %q, want %q", b[max(0, len(b)-40):], want[len(want)-40:])
	}
}

// TestBootMarkerZeroWidth: a zero-width character (or a bidi control)
// before a boot marker's text does not make a line that reads as one.
func TestBootMarkerZeroWidth(t *testing.T) {
	lf := &File{Path: filepath.Join(t.TempDir(), "vm.log")}
	marker := BootMarker(43, time.Unix(0, 0))
	var in strings.Builder
	for _, pre := range []string{"\u200b", "\ufeff", "\u2060", "\u202d", "\u2066"} {
		in.WriteString(pre + marker + "\n")
	}
	Pump(strings.NewReader(in.String()), "vm1", slog.New(slog.DiscardHandler), lf)
	lf.Close()
	b, err := os.ReadFile(lf.Path)
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(strings.TrimSuffix(string(b), "\n"), "\n") {
		if !strings.HasPrefix(l, `\u`) || !strings.HasSuffix(l, marker) {
			t.Errorf("guest line %q: want its invisible first character escaped", l)
		}
		for _, r := range l {
			if r >= 0x80 {
				t.Errorf("guest line %q keeps %U", l, r)
			}
		}
	}
}

func TestPump(t *testing.T) {
	var hostLog bytes.Buffer
	lf := &File{Path: filepath.Join(t.TempDir(), "vm.log")}
	in := "first\r\n\x1b[31mred\n" + strings.Repeat("x", 3*maxLine) + "\nlast without newline"
	Pump(strings.NewReader(in), "vm1", slog.New(slog.NewTextHandler(&hostLog, nil)), lf)
	lf.Close()
	b, err := os.ReadFile(lf.Path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
	if lines[0] != "first" || lines[1] != `\x1b[31mred` || lines[len(lines)-1] != "last without newline…" {
		t.Errorf("log file lines: %q", lines)
	}
	for _, l := range lines {
		if len(l) > maxLine+len("…[cut]") {
			t.Errorf("line of %d bytes kept", len(l))
		}
	}
	if !strings.Contains(hostLog.String(), "vm=vm1") || strings.Contains(hostLog.String(), "\x1b") {
		t.Errorf("host log: %s", hostLog.String())
	}
}

func TestFileCap(t *testing.T) {
	dir := t.TempDir()
	lf := &File{Path: filepath.Join(dir, "vm.log"), Max: 1000}
	for range 1000 {
		if err := lf.WriteLine(strings.Repeat("y", 99)); err != nil {
			t.Fatal(err)
		}
	}
	lf.Close()
	var total int64
	for _, p := range []string{lf.Path, lf.Path + ".1"} {
		st, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if st.Size() > 1000 {
			t.Errorf("%s is %d bytes, cap 1000", p, st.Size())
		}
		total += st.Size()
	}
	if total < 1000 {
		t.Errorf("only %d bytes kept", total)
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 2 {
		t.Errorf("%d files in log dir, want 2", len(ents))
	}
}

// TestHostLogLimiter: a burst of hostLogBurst lines passes, then lines are
// held back; a second later hostLogRate more pass, the first of them
// reporting how many were held before it; those held after it are reported
// at most a second later.
func TestHostLogLimiter(t *testing.T) {
	t0 := time.Unix(1000, 0)
	l := limiter{tokens: hostLogBurst, last: t0}
	for i := range hostLogBurst {
		if got := l.take(t0); got != 0 {
			t.Fatalf("line %d of the burst: take = %d, want 0", i, got)
		}
	}
	for range 500 {
		if got := l.take(t0); got != -1 {
			t.Fatalf("over the burst: take = %d, want -1 (held back)", got)
		}
	}
	t1 := t0.Add(time.Second)
	var passed, reported []int
	for i := range 1000 {
		switch got := l.take(t1); {
		case got > 0:
			reported = append(reported, got)
			passed = append(passed, i)
		case got == 0:
			passed = append(passed, i)
		}
	}
	if len(passed) != hostLogRate || len(reported) != 1 || reported[0] != 500 || passed[0] != 0 {
		t.Errorf("a second later: %d lines passed, reports %v; want %d passed, the first reporting 500", len(passed), reported, hostLogRate)
	}
	if got := l.take(t1.Add(time.Second)); got != 1000-hostLogRate {
		t.Errorf("another second later: take = %d, want %d held reported", got, 1000-hostLogRate)
	}
}

// TestBootMarkerUnforgeable: a guest line shaped like spectrumd's boot
// marker is escaped, so the only markers in a VM's log are spectrumd's.
func TestBootMarkerUnforgeable(t *testing.T) {
	lf := &File{Path: filepath.Join(t.TempDir(), "vm.log")}
	lf.WriteLine(BootMarker(42, time.Unix(0, 0)))
	Pump(strings.NewReader(BootMarker(43, time.Unix(0, 0))+"\n"), "vm1", slog.New(slog.DiscardHandler), lf)
	lf.Close()
	b, err := os.ReadFile(lf.Path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[0], BootMarkerPrefix) || strings.HasPrefix(lines[1], BootMarkerPrefix) || !strings.HasPrefix(lines[1], `\x3d== spectrumd: `) {
		t.Errorf("log lines %q: want one real marker, then the guest's escaped", lines)
	}
}

// TestPumpLastLinesReachHostLog: a guest floods its console past the host
// log's burst and then crashes with a trace. Every line is in its log file,
// and every line of the trace is in the host's log once, in order: the
// lines the rate held back are logged when the console ends, after a line
// saying they follow (a slow pump's refill may have let the first ones
// through before).
func TestPumpLastLinesReachHostLog(t *testing.T) {
	var in strings.Builder
	for i := range hostLogBurst + 500 {
		fmt.Fprintf(&in, "noise %d\n", i)
	}
	for i := range 40 {
		fmt.Fprintf(&in, "panic trace %d\n", i)
	}
	var hostLog bytes.Buffer
	lf := &File{Path: filepath.Join(t.TempDir(), "vm.log")}
	start := time.Now()
	Pump(strings.NewReader(in.String()), "vm1", slog.New(slog.NewTextHandler(&hostLog, nil)), lf)
	refill := int(time.Since(start).Seconds()*hostLogRate) + 1
	lf.Close()
	b, err := os.ReadFile(lf.Path)
	if err != nil {
		t.Fatal(err)
	}
	if string(b) != in.String() {
		t.Errorf("log file holds %d bytes, want every line (%d bytes)", len(b), in.Len())
	}
	host := hostLog.String()
	ended := strings.Index(host, "its last lines held back follow")
	if ended < 0 {
		t.Fatalf("no line saying the last lines follow:\n%s", lastLines(host, 5))
	}
	at := 0
	for i := range 40 {
		l := fmt.Sprintf("msg=\"panic trace %d\"", i)
		j := strings.Index(host[at:], l)
		if j < 0 || strings.Count(host, l) != 1 {
			t.Fatalf("%s missing from the host log, there twice, or out of order:\n%s", l, lastLines(host, 50))
		}
		at += j
	}
	if last := strings.Index(host, "msg=\"panic trace 39\""); last < ended {
		t.Errorf("the trace's last line came before the line saying the held-back lines follow:\n%s", lastLines(host, 50))
	}
	if n, most := strings.Count(host, "source=serial"), hostLogBurst+refill+exitTail; n > most {
		t.Errorf("%d serial records in the host log, want at most the burst, its refill and the tail (%d)", n, most)
	}
}

func lastLines(s string, n int) string {
	l := strings.Split(strings.TrimSuffix(s, "\n"), "\n")
	return strings.Join(l[max(len(l)-n, 0):], "\n")
}
