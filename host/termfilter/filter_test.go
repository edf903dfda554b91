package termfilter

import (
	"bytes"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// q makes the tables readable: "^[" is ESC, "^G" BEL, "^\" is written
// ESC \ (ST) as "^[\".
func q(s string) string {
	return strings.NewReplacer("^[", "\x1b", "^G", "\x07", "^N", "\x0e", "^O", "\x0f", "^X", "\x18").Replace(s)
}

// cases are the table of TestFilter and seeds of FuzzFilter.
var cases = []struct {
	name, in, want string
	restore        string // what Restore writes after in
}{
	// Text.
	{name: "plain text", in: "root@guest:~# ls\r\n", want: "root@guest:~# ls\r\n"},
	{name: "UTF-8 text", in: "héllo wörld ✓ 日本\n", want: "héllo wörld ✓ 日本\n"},
	{name: "allowed C0", in: "a\x07b\bc\td\ne\vf\fg\rh", want: "a\x07b\bc\td\ne\vf\fg\rh"},
	{name: "other C0 dropped", in: "a\x00b\x05c\x01d\x1ce\x7f", want: "abcde"},
	{name: "malformed UTF-8", in: "a\xffb\xc3(c\xe2\x82d\xed\xa0\x80e\xc0\x80", want: "a\uFFFDb\uFFFD(c\uFFFDd\uFFFDe\uFFFD\uFFFD"},
	{name: "marker replaced", in: "⏏ spectrumd: detached from vm", want: "\uFFFD spectrumd: detached from vm"},

	// Kept: cursor, erase, colours, scrolling.
	{name: "cursor movement", in: q("^[[A^[[2B^[[10C^[[D^[[5;10H^[[H^[[3G^[[7d^[[;4f"), want: q("^[[A^[[2B^[[10C^[[D^[[5;10H^[[H^[[3G^[[7d^[[0;4f")},
	{name: "erase", in: q("^[[J^[[0J^[[1J^[[2J^[[K^[[2K^[[5X"), want: q("^[[J^[[0J^[[1J^[[2J^[[K^[[2K^[[5X")},
	{name: "erase scrollback dropped", in: q("a^[[3Jb"), want: "ab"},
	{name: "insert delete scroll", in: q("^[[2@^[[3P^[[L^[[2M^[[S^[[T^[D^[E^[M"), want: q("^[[2@^[[3P^[[L^[[2M^[[S^[[T^[D^[E^[M")},
	{name: "SGR colours", in: q("^[[1;31mred^[[0m ^[[38;5;208mx^[[38:2::1:2:3my^[[m"), want: q("^[[1;31mred^[[0m ^[[38;5;208mx^[[38:2::1:2:3my^[[m")},
	{name: "SGR left on", in: q("^[[1;4m"), want: q("^[[1;4m"), restore: q("^[[m")},
	{name: "SGR reset at the end", in: q("^[[1m^[[0;0m"), want: q("^[[1m^[[0;0m")},
	{name: "scroll region", in: q("^[[2;20r"), want: q("^[[2;20r"), restore: q("^[7^[[r^[8")},
	{name: "scroll region reset", in: q("^[[2;20r^[[r"), want: q("^[[2;20r^[[r")},
	{name: "save restore cursor", in: q("^[7^[8^[[s^[[u"), want: q("^[7^[8^[[s^[[u")},
	{name: "huge count clamped", in: q("^[[99999999A"), want: q("^[[65535A")},

	// Kept and undone: the modes of full-screen programs.
	{name: "alternate screen", in: q("^[[?1049h"), want: q("^[[?1049h"), restore: q("^[[?1049l")},
	{name: "alternate screen 47 and 1047", in: q("^[[?47h^[[?1047l^[[?1047h"), want: q("^[[?1049h^[[?1049l^[[?1049h"), restore: q("^[[?1049l")},
	{name: "alternate screen left", in: q("^[[?1049h^[[?1049l"), want: q("^[[?1049h^[[?1049l")},
	{name: "mouse", in: q("^[[?1000h^[[?1002h^[[?1003h^[[?1006h"), want: q("^[[?1000h^[[?1002h^[[?1003h^[[?1006h"), restore: q("^[[?1000;1002;1003;1006l")},
	{name: "mouse off again", in: q("^[[?1000;1006h^[[?1000;1006l"), want: q("^[[?1000;1006h^[[?1000;1006l")},
	{name: "bracketed paste, focus", in: q("^[[?2004h^[[?1004h"), want: q("^[[?2004h^[[?1004h"), restore: q("^[[?1004;2004l")},
	{name: "cursor keys and keypad", in: q("^[[?1h^[="), want: q("^[[?1h^[="), restore: q("^[[?1l^[>")},
	{name: "cursor hidden, no wrap", in: q("^[[?25l^[[?7l"), want: q("^[[?25l^[[?7l"), restore: q("^[[?25;7h")},
	{name: "cursor shown again", in: q("^[[?25l^[[?25h"), want: q("^[[?25l^[[?25h")},
	{name: "origin mode", in: q("^[[?6h"), want: q("^[[?6h"), restore: q("^[[?6l")},
	{name: "insert mode", in: q("^[[4h"), want: q("^[[4h"), restore: q("^[[4l")},
	{name: "cursor style", in: q("^[[5 q"), want: q("^[[5 q"), restore: q("^[[0 q")},
	{name: "line drawing", in: q("^[(0lqk^[(B^[)0^Nx^O"), want: q("^[(0lqk^[(B^[)0^Nx^O"), restore: q("^[)B")},
	{name: "shifted out left", in: q("^[)0^N"), want: q("^[)0^N"), restore: q("^O^[)B")},
	{name: "vim's list", in: q("^[[?1049;1;12;25;2004;1006;1000h"), want: q("^[[?1049;1;25;2004;1006;1000h"), restore: q("^[[?1049l^[[?1000;1006;2004;1l")},
	{name: "DEC modes dropped, list kept", in: q("^[[?3;5;1049;1036;2026h"), want: q("^[[?1049h"), restore: q("^[[?1049l")},
	{name: "duplicates once", in: q("^[[?47;1049h"), want: q("^[[?1049h"), restore: q("^[[?1049l")},
	{name: "charset restored by DECRC", in: q("^[(0^[7^[(B^[8"), want: q("^[(0^[7^[(B^[8"), restore: q("^[(B")},
	{name: "SGR restored by leaving the alternate screen", in: q("^[[1m^[[?1049h^[[m^[[?1049l"), want: q("^[[1m^[[?1049h^[[m^[[?1049l"), restore: q("^[[m")},
	{name: "SGR saved on entering the alternate screen", in: q("^[[1m^[[?1049h^[[m"), want: q("^[[1m^[[?1049h^[[m"), restore: q("^[[?1049l^[[m")},
	{name: "everything", in: q("^[[?1049h^[[?6h^[[3;9r^[[7m^[)0^N^[[?1003;1006;2004;1;25l^[[?25l^[[?7l^[=^[[4h^[[2 q"),
		want:    q("^[[?1049h^[[?6h^[[3;9r^[[7m^[)0^N^[[?1003;1006;2004;1;25l^[[?25l^[[?7l^[=^[[4h^[[2 q"),
		restore: q("^[[?6l^[[r^[[?1049l^[[m^O^[)B^[[?25;7h^[>^[[4l^[[0 q")},

	// Dropped: what a guest must not do to the operator's terminal.
	{name: "OSC 52 clipboard, BEL", in: q("a^[]52;c;ZWNobyBwd25lZA==^Gb"), want: "ab"},
	{name: "OSC 52 clipboard, ST", in: q("a^[]52;c;ZWNobyBwd25lZA==^[\\b"), want: "ab"},
	{name: "title and icon", in: q("^[]0;fake^G^[]1;icon^G^[]2;title^[\\x"), want: "x"},
	{name: "OSC 8 hyperlink keeps its text", in: q("^[]8;;http://evil.example/^[\\click^[]8;;^[\\"), want: "click"},
	{name: "palette", in: q("^[]4;1;rgb:ff/00/00^G^[]10;?^G^[]104^G"), want: ""},
	{name: "DCS DECRQSS", in: q("^[P$qm^[\\x"), want: "x"},
	{name: "DCS tmux passthrough", in: q("^[Ptmux;^[^[]52;c;eA==^G^[\\x"), want: "x"},
	{name: "XTGETTCAP", in: q("^[P+q544e^[\\x"), want: "x"},
	{name: "SOS PM APC", in: q("^[Xsos^[\\^[^pm^[\\^[_apc^[\\x"), want: "x"},
	{name: "string cancelled", in: q("^[]2;abc^Xvisible"), want: "visible"},
	{name: "DA DSR CPR", in: q("^[[c^[[0c^[[>c^[[=c^[[5n^[[6n^[[?6n^[Zx"), want: "x"},
	{name: "DECRQM", in: q("^[[?2004$p^[[4$px"), want: "x"},
	{name: "window ops", in: q("^[[21t^[[8;100;300t^[[22;0t^[[2tx"), want: "x"},
	{name: "resets", in: q("^[c^[[!p^[[?3h^[[?5hx"), want: "x"},
	{name: "tab stops", in: q("^[H^[[3g^[[gx"), want: "x"},
	{name: "keyboard modes", in: q("^[[>4;2m^[[>1u^[[=1;1u^[[?1036h^[[2h^[[20hx"), want: "x"},
	{name: "8-bit controls and UTF-8 mode", in: q("^[ G^[%G^[#8x"), want: "x"},
	{name: "printing", in: q("^[[5i^[[?5ix"), want: "x"},
	{name: "highlight mouse tracking", in: q("^[[1;2;3;4;5Tx"), want: "x"},
	{name: "answerback", in: "\x05x", want: "x"},
	{name: "C1 CSI as UTF-8", in: "\u009b?1049h\u009b6n", want: q("^[[?1049h"), restore: q("^[[?1049l")},
	{name: "C1 OSC as UTF-8", in: "\u009d52;c;eA==\u0007x", want: "x"},
	{name: "raw 8-bit C1", in: "\x9b6n", want: "\uFFFD6n"},
	{name: "locking shifts G2 G3", in: q("^[n^[o^[N^[Ox"), want: "x"},
	{name: "other charsets", in: q("^[(K^[*0^[(%5x"), want: "x"},
	{name: "private marker late", in: q("^[[1?hx"), want: "x"},
	{name: "too many intermediates", in: q("^[[1 !\"qx^[ ! (0y"), want: "xy"},
	{name: "too long", in: "\x1b[" + strings.Repeat("1;", 40) + "mx", want: "x"},
	{name: "too many fields", in: "\x1b[" + strings.Repeat("1;", 20) + "Hx", want: "x"},
	{name: "subparameter outside SGR", in: q("^[[1:2Hx"), want: "x"},
	{name: "sequence broken by text", in: "\x1b[1é", want: "é"},
	{name: "ESC restarts a sequence", in: q("^[[1^[[2Ax"), want: q("^[[2Ax")},
	{name: "C0 inside a sequence", in: q("^[[2\rA"), want: q("\r^[[2A")},
	{name: "fake prompt after a fake notice", in: "\r\n\u23cf spectrumd: detached from vm\r\nroot@host:~# ", want: "\r\n\uFFFD spectrumd: detached from vm\r\nroot@host:~# "},
}

func TestFilter(t *testing.T) {
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var f Filter
			got := string(f.Append(nil, []byte(tc.in)))
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("Append(%q) (-want +got):\n%s", tc.in, diff)
			}
			if diff := cmp.Diff(tc.restore, string(f.Restore())); diff != "" {
				t.Errorf("Restore after %q (-want +got):\n%s", tc.in, diff)
			}
			// Byte by byte gives the same.
			var g Filter
			var one []byte
			for i := 0; i < len(tc.in); i++ {
				one = g.Append(one, []byte{tc.in[i]})
			}
			if diff := cmp.Diff(tc.want, string(one)); diff != "" {
				t.Errorf("byte by byte (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tc.restore, string(g.Restore())); diff != "" {
				t.Errorf("Restore, byte by byte (-want +got):\n%s", diff)
			}
		})
	}
}

// TestRestoreStartsAfresh: after Restore the filter has forgotten the
// session, half-read sequences included.
func TestRestoreStartsAfresh(t *testing.T) {
	var f Filter
	f.Append(nil, []byte(q("^[[?1049h^[]52;c;")))
	if got := string(f.Restore()); got != q("^[[?1049l") {
		t.Errorf("Restore = %q", got)
	}
	if got := string(f.Append(nil, []byte("after"))); got != "after" {
		t.Errorf("after Restore: %q, want the text (the OSC was abandoned)", got)
	}
	if got := f.Restore(); len(got) != 0 {
		t.Errorf("second Restore = %q, want nothing", got)
	}
}

type failWriter struct{ err error }

func (w failWriter) Write(p []byte) (int, error) { return 0, w.err }

func TestWriter(t *testing.T) {
	var buf bytes.Buffer
	w := NewWriter(&buf)
	for _, s := range []string{"a\x1b[", "?1049", "h\x1b]0;x", "\x07b"} {
		if n, err := w.Write([]byte(s)); n != len(s) || err != nil {
			t.Fatalf("Write(%q) = %d, %v", s, n, err)
		}
	}
	if err := w.Restore(); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(q("a^[[?1049hb^[[?1049l"), buf.String()); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	errBroken := bytes.ErrTooLarge
	w = NewWriter(failWriter{errBroken})
	if n, err := w.Write([]byte("x")); n != 0 || err != errBroken {
		t.Errorf("Write to a failing writer = %d, %v", n, err)
	}
}
