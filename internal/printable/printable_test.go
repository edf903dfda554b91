package printable

import (
	"testing"
	"unicode/utf8"

	"github.com/google/go-cmp/cmp"
)

func TestString(t *testing.T) {
	for _, tc := range []struct{ name, in, want, lines string }{
		{name: "plain", in: "appvm-lynx", want: "appvm-lynx"},
		{name: "letters and symbols", in: "vm=café_日本✓\\x41", want: "vm=café_日本✓\\x41"},
		{name: "terminal escape", in: "vm\x1b]52;c;eA==\x07\x1b[2J", want: `vm\x1b]52;c;eA==\x07\x1b[2J`},
		{name: "C1 CSI", in: "vm\u009b6n", want: `vm\u009b6n`},
		{name: "newline and CR", in: "vm\nspectrumd: fake\rline\t", want: `vm\nspectrumd: fake\rline\t`, lines: "vm\nspectrumd: fake\\rline\\t"},
		{name: "bidi override", in: "appvm\u202egnp.exe", want: `appvm\u202egnp.exe`},
		{name: "bidi isolates", in: "a\u2066b\u2067c\u2068d\u2069", want: `a\u2066b\u2067c\u2068d\u2069`},
		{name: "zero width", in: "net\u200bvm\u200d\ufeff\u00ad", want: `net\u200bvm\u200d\ufeff\u00ad`},
		{name: "tag characters", in: "vm\U000e0041", want: `vm\U000e0041`},
		{name: "odd spaces", in: "a\u00a0b\u2028c\u3000 d", want: `a\u00a0b\u2028c\u3000 d`},
		{name: "malformed UTF-8", in: "vm\xff\xc3", want: `vm\xff\xc3`},
		{name: "U+FFFD itself", in: "vm\uFFFD", want: "vm\uFFFD"},
		{name: "DEL NUL", in: "\x7f\x00", want: `\x7f\x00`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := String(tc.in)
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("String(%q) (-want +got):\n%s", tc.in, diff)
			}
			if again := String(got); again != got {
				t.Errorf("String twice: %q, once %q", again, got)
			}
			want := tc.lines
			if want == "" {
				want = tc.want
			}
			if got := Lines(tc.in); got != want {
				t.Errorf("Lines(%q) = %q, want %q", tc.in, got, want)
			}
		})
	}
}

func FuzzString(f *testing.F) {
	for _, s := range []string{"vm", "a\x1b[31mb", "\u202e\n\xff", "\u009b\U000e0001"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		for _, got := range []string{String(s), Lines(s)} {
			if !utf8.ValidString(got) {
				t.Fatalf("%q: escaped %q is not UTF-8", s, got)
			}
			for _, r := range got {
				if Unsafe(r) && !(r == '\n' && got == Lines(s)) {
					t.Fatalf("%q: escaped %q holds %U", s, got, r)
				}
			}
			if String(got) != got && got == String(s) {
				t.Fatalf("%q: escaping %q again changes it", s, got)
			}
		}
	})
}
