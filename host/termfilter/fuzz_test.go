package termfilter

import (
	"bytes"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"
)

// The checks below know nothing of the filter's state machine: a grammar of
// what may reach the terminal, and a model of the terminal states a
// session can leave behind, written from the terminals' documentation
// (xterm's ctlseqs, tmux's input.c behaviour), not from filter.go.

// allowedSeq is every escape sequence the terminal may see, whole.
var allowedSeq = regexp.MustCompile(`^\x1b(?:` +
	`[78DEM=>]` + // DECSC DECRC IND NEL RI DECKPAM DECKPNM
	`|[()][B0A]` + // G0/G1 designation
	`|\[[0-9;:]*m` + // SGR
	`|\[\?[0-9]+(?:;[0-9]+)*[hl]` + // DECSET/DECRST (modes checked below)
	`|\[4[hl]` + // IRM
	`|\[(?:[0-9]+(?:;[0-9]+)?)?[Hfr]` + // CUP HVP DECSTBM
	`|\[[0-9]*[@A-GILMPSTXZ` + "`" + `abde]` + // one count or position
	`|\[[012]?[JK]` + // ED EL, never 3
	`|\[[su]` + // SCOSC SCORC
	`|\[[0-6]? q` + // DECSCUSR
	`)`)

var allowedDEC = map[string]bool{"1": true, "6": true, "7": true, "25": true, "1000": true, "1002": true,
	"1003": true, "1004": true, "1006": true, "1049": true, "2004": true}

// tokens splits what the filter wrote into text, C0 controls and escape
// sequences, failing on anything the terminal must never see.
func tokens(out []byte) ([]string, error) {
	var toks []string
	for len(out) > 0 {
		switch c := out[0]; {
		case c == 0x1b:
			m := allowedSeq.Find(out)
			if m == nil {
				return nil, fmt.Errorf("sequence not allowed: %q", out[:min(len(out), 24)])
			}
			if bytes.HasPrefix(m, []byte("\x1b[?")) {
				for _, x := range strings.Split(string(m[3:len(m)-1]), ";") {
					if !allowedDEC[x] {
						return nil, fmt.Errorf("DEC mode %s in %q", x, m)
					}
				}
			}
			toks = append(toks, string(m))
			out = out[len(m):]
		case c < 0x20:
			if !strings.ContainsRune("\a\b\t\n\v\f\r\x0e\x0f", rune(c)) {
				return nil, fmt.Errorf("C0 control %#x", c)
			}
			toks = append(toks, string(c))
			out = out[1:]
		default:
			r, n := utf8.DecodeRune(out)
			switch {
			case r == utf8.RuneError && n < 2:
				return nil, fmt.Errorf("malformed UTF-8 %q", out[:min(len(out), 4)])
			case r == 0x7f || (r >= 0x80 && r <= 0x9f):
				return nil, fmt.Errorf("control %U", r)
			case r == Marker:
				return nil, fmt.Errorf("the marker %U", r)
			}
			out = out[n:]
		}
	}
	return toks, nil
}

// cursorState is what a save-cursor records.
type cursorState struct {
	origin, rendition, shiftedOut bool
	g0, g1                        byte
}

// terminal models the states a session can leave changed. shared: one
// saved cursor per screen, shared by DECSC and DECSET 1049 (xterm); else
// DECSC and the alternate screen have slots of their own (tmux).
type terminal struct {
	shared      bool
	alt         bool
	cur         cursorState
	slot        [2]*cursorState // DECSC's (per screen when shared)
	altSlot     *cursorState    // DECSET 1049's, when not shared
	region      bool
	modes       map[string]bool // DEC modes set ("7" and "25" are set by default)
	keypad      bool
	insert      bool
	cursorShape bool
}

func newTerminal(shared bool) *terminal {
	return &terminal{shared: shared, cur: cursorState{g0: 'B', g1: 'B'}, modes: map[string]bool{"7": true, "25": true}}
}

func (t *terminal) screen() int {
	if t.alt {
		return 1
	}
	return 0
}

func (t *terminal) restoreFrom(s *cursorState) {
	if s == nil {
		t.cur = cursorState{g0: t.cur.g0, g1: t.cur.g1} // xterm: attributes and origin to their defaults
		return
	}
	t.cur = *s
}

func (t *terminal) apply(tok string) {
	save := func() *cursorState { s := t.cur; return &s }
	switch {
	case tok == "\x0e":
		t.cur.shiftedOut = true
	case tok == "\x0f":
		t.cur.shiftedOut = false
	case len(tok) < 2 || tok[0] != 0x1b:
	case tok == "\x1b7" || tok == "\x1b[s":
		t.slot[t.screen()] = save()
	case tok == "\x1b8" || tok == "\x1b[u":
		t.restoreFrom(t.slot[t.screen()])
	case tok == "\x1b=":
		t.keypad = true
	case tok == "\x1b>":
		t.keypad = false
	case tok[1] == '(':
		t.cur.g0 = tok[2]
	case tok[1] == ')':
		t.cur.g1 = tok[2]
	case strings.HasSuffix(tok, "m"):
		t.cur.rendition = sgrLeavesAttributes(tok[2 : len(tok)-1])
	case strings.HasSuffix(tok, "r"):
		t.region = !(tok == "\x1b[r")
		// Margins of 0 or 0;0 are the whole screen too.
		if p := tok[2 : len(tok)-1]; p == "0" || p == "0;0" {
			t.region = false
		}
	case tok == "\x1b[4h" || tok == "\x1b[4l":
		t.insert = tok[3] == 'h'
	case strings.HasSuffix(tok, " q"):
		t.cursorShape = !(tok == "\x1b[ q" || tok == "\x1b[0 q")
	case strings.HasPrefix(tok, "\x1b[?"):
		set := tok[len(tok)-1] == 'h'
		for _, m := range strings.Split(tok[3:len(tok)-1], ";") {
			if m != "1049" {
				t.modes[m] = set
				continue
			}
			switch {
			case set && !t.alt:
				if t.shared {
					t.slot[0] = save()
				} else {
					t.altSlot = save()
				}
				t.alt = true
			case !set && t.alt:
				t.alt = false
				if t.shared {
					t.restoreFrom(t.slot[0])
				} else {
					t.restoreFrom(t.altSlot)
				}
			}
		}
	}
}

// sgrLeavesAttributes tells whether an SGR's parameters leave any attribute
// or colour set: only resets (0 or empty) leave none. A colour's own
// numbers (38;5;0) are not resets.
func sgrLeavesAttributes(p string) bool {
	on := false
	fields := strings.Split(p, ";")
	for i := 0; i < len(fields); i++ {
		f := fields[i]
		if strings.Contains(f, ":") {
			on = true
			continue
		}
		n, _ := strconv.Atoi(f)
		switch {
		case n == 0:
			on = false
		case (n == 38 || n == 48 || n == 58) && i+1 < len(fields) && fields[i+1] == "5":
			on, i = true, i+2
		case (n == 38 || n == 48 || n == 58) && i+1 < len(fields) && fields[i+1] == "2":
			on, i = true, i+4
		default:
			on = true
		}
	}
	return on
}

// changed lists what is not at its default.
func (t *terminal) changed() []string {
	var c []string
	add := func(cond bool, what string) {
		if cond {
			c = append(c, what)
		}
	}
	add(t.alt, "alternate screen")
	add(t.cur.origin || t.modes["6"], "origin mode")
	add(t.cur.rendition, "SGR")
	add(t.cur.shiftedOut, "shifted out")
	add(t.cur.g0 != 'B', "G0")
	add(t.cur.g1 != 'B', "G1")
	add(t.region, "scroll region")
	add(t.keypad, "keypad")
	add(t.insert, "insert mode")
	add(t.cursorShape, "cursor shape")
	for m, on := range t.modes {
		add(m != "6" && on != (m == "7" || m == "25"), "DEC mode "+m)
	}
	return c
}

// check runs every property on one input, fed whole and cut at cuts.
func check(t *testing.T, in []byte, cuts []int) {
	var f Filter
	out := f.Append(nil, in)
	restore := f.Restore()

	// The same, however the input is cut.
	var g Filter
	var chunked []byte
	prev := 0
	for _, c := range cuts {
		if c > prev && c < len(in) {
			chunked = g.Append(chunked, in[prev:c])
			prev = c
		}
	}
	chunked = g.Append(chunked, in[prev:])
	if !bytes.Equal(out, chunked) || !bytes.Equal(restore, g.Restore()) {
		t.Fatalf("input %q: whole %q (restore %q), cut at %v %q", in, out, restore, cuts, chunked)
	}

	toks, err := tokens(out)
	if err != nil {
		t.Fatalf("input %q: output %q: %v", in, out, err)
	}
	// The output is the filter's own form: it passes again unchanged,
	// leaving the same modes to restore.
	var h Filter
	if again := h.Append(nil, out); !bytes.Equal(again, out) {
		t.Fatalf("input %q: output %q filtered again gives %q", in, out, again)
	}
	if r := h.Restore(); !bytes.Equal(r, restore) {
		t.Fatalf("input %q: output %q leaves %q to restore, the input %q", in, out, r, restore)
	}
	rtoks, err := tokens(restore)
	if err != nil {
		t.Fatalf("input %q: Restore %q: %v", in, restore, err)
	}
	for _, shared := range []bool{true, false} {
		term := newTerminal(shared)
		for _, tok := range toks {
			term.apply(tok)
		}
		for _, tok := range rtoks {
			term.apply(tok)
		}
		if c := term.changed(); len(c) > 0 {
			t.Fatalf("input %q: output %q, restore %q: the terminal (shared saves %v) is left with %v", in, out, restore, shared, c)
		}
	}
}

func FuzzFilter(f *testing.F) {
	for _, s := range []string{
		"root@guest:~# ls\r\n",
		"\x1b[?1049h\x1b[1;24r\x1b[H\x1b[2J\x1b[7mlynx\x1b[m\x1b(0lqk\x1b(B\x1b[?1000;1006h",
		"\x1b]52;c;eA==\x07\x1b]0;title\x1b\\\x1bP$qm\x1b\\\x1b[6n\x1b[c",
		"\x1b(0\x1b7\x1b(B\x1b8\x1b[1m\x1b[?1049h\x1b[m\x1b[?1049l",
		"\x1b[1m\x1b)0\x1b[?1049h\x1b[m\x1b)B\x1b[?6h\x1b7\x1b[?6l",
		"\u009b?1049h\u009d2;x\u0007\x9b",
		"\x1b[38;5;0m\x1b[0;38;2;1;2;3m\x1b[4:3m",
		"\x1b)0\x0e\x1b[?25;7l\x1b=\x1b[4h\x1b[3 q\x1b[?6h",
		"\xe2\x8f\x8f \xed\xa0\x80\xf4\x90\x80\x80",
	} {
		f.Add([]byte(s), uint64(0x0503))
	}
	for _, tc := range cases {
		f.Add([]byte(tc.in), uint64(len(tc.in)/2))
	}
	f.Fuzz(func(t *testing.T, in []byte, cutSeed uint64) {
		var cuts []int
		if len(in) > 0 {
			for s := cutSeed; s != 0; s >>= 8 {
				cuts = append(cuts, int(s&0xff)%len(in))
			}
		}
		// Cuts in increasing order (Append takes the stream in order).
		for i := 1; i < len(cuts); i++ {
			for j := i; j > 0 && cuts[j] < cuts[j-1]; j-- {
				cuts[j], cuts[j-1] = cuts[j-1], cuts[j]
			}
		}
		check(t, in, cuts)
	})
}

// TestModelCatchesLeftovers: the model above does fail when a mode is left
// on, so the fuzz target can fail.
func TestModelCatchesLeftovers(t *testing.T) {
	for _, seq := range []string{"\x1b[?1049h", "\x1b(0", "\x1b[1m", "\x1b[?1000h", "\x1b[2;3r", "\x1b=", "\x1b[38;5;0m"} {
		toks, err := tokens([]byte(seq))
		if err != nil {
			t.Fatalf("%q: %v", seq, err)
		}
		term := newTerminal(true)
		for _, tok := range toks {
			term.apply(tok)
		}
		if len(term.changed()) == 0 {
			t.Errorf("%q leaves nothing changed in the model", seq)
		}
	}
	for _, bad := range []string{"\x1b]52;c;x\x07", "\x1b[6n", "\x1b[?1036h", "\x9b", "\u009b", "\x00", "\u23cf", "\x1b[3J"} {
		if _, err := tokens([]byte(bad)); err == nil {
			t.Errorf("grammar allows %q", bad)
		}
	}
}
