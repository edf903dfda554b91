package termfilter

import (
	"io"
	"strconv"
	"unicode/utf8"
)

// Marker begins every line spectrumd itself writes on a console's terminal
// (the "connected" and "detached" notices). The filter turns it into
// U+FFFD in a guest's output, so a guest cannot print a line that begins
// with it.
const Marker = '\u23cf' // ⏏ EJECT SYMBOL

const (
	// maxParams bounds the parameter bytes of one CSI: the longest allowed
	// sequence (an SGR with several 24-bit colours) fits many times over,
	// and a longer one is dropped whole.
	maxParams = 64
	// maxFields bounds the numbers of a CSI other than SGR.
	maxFields = 16
	// maxValue clamps a parameter: terminals clamp to the screen anyway.
	maxValue = 65535
	// replacement stands for malformed UTF-8 and for Marker.
	replacement = "\uFFFD"
)

type state uint8

const (
	ground      state = iota
	escape            // after ESC
	escInter          // ESC and intermediate bytes
	csiParam          // CSI: private marker and parameters
	csiInter          // CSI: intermediate bytes
	csiIgnore         // a CSI being dropped, up to its final byte
	oscString         // an OSC, dropped up to BEL or ST
	otherString       // a DCS, SOS, PM or APC, dropped up to ST
)

// modes are the terminal states a guest can change and Restore undoes.
// Each bit is set while the terminal is (or may be) away from its default.
type modes uint32

const (
	altScreen    modes = 1 << iota // DECSET 1049 (47, 1047 are written as 1049)
	origin                         // DECSET 6
	scrollRegion                   // DECSTBM with margins
	rendition                      // SGR other than a reset
	shifted                        // SO: G1 invoked into GL
	g0                             // G0 designated other than ASCII
	g1                             // G1 designated other than ASCII
	mouseNormal                    // DECSET 1000
	mouseButton                    // DECSET 1002
	mouseAny                       // DECSET 1003
	mouseSGR                       // DECSET 1006
	focusEvents                    // DECSET 1004
	bracketPaste                   // DECSET 2004
	cursorKeys                     // DECSET 1 (DECCKM)
	cursorHidden                   // DECRST 25 (DECTCEM)
	noWrap                         // DECRST 7 (DECAWM)
	keypad                         // DECKPAM (ESC =)
	insertMode                     // SM 4 (IRM)
	cursorStyle                    // DECSCUSR other than 0
)

// cursorSaved are the states a save-cursor (DECSC, SCOSC, DECSET 1049)
// records and a restore brings back.
const cursorSaved = origin | rendition | shifted | g0 | g1

// decModes maps the DECSET/DECRST modes a guest may change to the bit that
// tracks them; set tells whether "h" moves the mode away from its default.
var decModes = map[int]struct {
	bit modes
	set bool
}{
	1:    {cursorKeys, true},
	6:    {origin, true},
	7:    {noWrap, false},
	25:   {cursorHidden, false},
	1000: {mouseNormal, true},
	1002: {mouseButton, true},
	1003: {mouseAny, true},
	1004: {focusEvents, true},
	1006: {mouseSGR, true},
	1049: {altScreen, true},
	2004: {bracketPaste, true},
}

// Filter is the state of one console session's output: where the parser
// stands in the guest's bytes and which modes the guest has changed. The
// zero value is ready to use; a Filter is not safe for concurrent use.
type Filter struct {
	st state

	// A UTF-8 sequence being assembled in ground state.
	utf  [4]byte
	nutf int
	want int

	// The escape sequence being parsed.
	priv   byte // CSI private marker '<', '=', '>' or '?'; 0 if none
	inter  [2]byte
	ninter int
	over   bool // more intermediates than inter holds: dropped at dispatch
	params [maxParams]byte
	nparam int

	cur   modes // where the terminal stands
	saved modes // every state a save-cursor recorded (see save)
}

// Append appends to dst what of p may reach the operator's terminal and
// returns it. p may end anywhere, inside a UTF-8 sequence or an escape
// sequence: the rest comes with the next call.
func (f *Filter) Append(dst, p []byte) []byte {
	for i := 0; i < len(p); i++ {
		b := p[i]
		if f.st == ground && f.nutf == 0 {
			// Fast path: a run of printable ASCII.
			j := i
			for j < len(p) && p[j] >= 0x20 && p[j] < 0x7f {
				j++
			}
			if j > i {
				dst = append(dst, p[i:j]...)
				i = j - 1
				continue
			}
		}
		dst = f.byte(dst, b)
	}
	return dst
}

// byte feeds one byte to the state machine.
func (f *Filter) byte(dst []byte, b byte) []byte {
	switch f.st {
	case ground:
		return f.text(dst, b)
	case oscString, otherString:
		switch {
		case b == 0x1b:
			f.enter(escape)
		case b == 0x18 || b == 0x1a:
			f.st = ground
		case b == 0x07 && f.st == oscString:
			f.st = ground
		}
		return dst
	}
	// An escape sequence: C0 controls are carried out in the middle of it,
	// as terminals do, and a byte that cannot belong to one (UTF-8) drops
	// it and is text.
	switch {
	case b < 0x20:
		return f.control(dst, b)
	case b == 0x7f:
		return dst
	case b >= 0x80:
		f.st = ground
		return f.text(dst, b)
	}
	switch f.st {
	case escape:
		switch {
		case b <= 0x2f:
			f.intermediate(b)
			f.st = escInter
		case b == '[':
			f.enter(csiParam)
		case b == ']':
			f.st = oscString
		case b == 'P' || b == 'X' || b == '^' || b == '_':
			f.st = otherString
		default:
			f.st = ground
			dst = f.escDispatch(dst, b)
		}
	case escInter:
		if b <= 0x2f {
			f.intermediate(b)
		} else {
			f.st = ground
			dst = f.escDispatch(dst, b)
		}
	case csiParam:
		switch {
		case b <= 0x2f:
			f.intermediate(b)
			f.st = csiInter
		case b <= 0x3b:
			if f.nparam == len(f.params) {
				f.st = csiIgnore
			} else {
				f.params[f.nparam] = b
				f.nparam++
			}
		case b <= 0x3f:
			if f.nparam == 0 && f.priv == 0 {
				f.priv = b
			} else {
				f.st = csiIgnore
			}
		default:
			f.st = ground
			dst = f.csiDispatch(dst, b)
		}
	case csiInter:
		switch {
		case b <= 0x2f:
			f.intermediate(b)
		case b <= 0x3f:
			f.st = csiIgnore
		default:
			f.st = ground
			dst = f.csiDispatch(dst, b)
		}
	case csiIgnore:
		if b >= 0x40 {
			f.st = ground
		}
	}
	return dst
}

// enter starts a new escape sequence in state s.
func (f *Filter) enter(s state) {
	f.st = s
	f.priv, f.ninter, f.over, f.nparam = 0, 0, false, 0
}

func (f *Filter) intermediate(b byte) {
	if f.ninter == len(f.inter) {
		f.over = true
		return
	}
	f.inter[f.ninter] = b
	f.ninter++
}

// text handles a byte in ground state: printable ASCII, a C0 control, or a
// byte of a UTF-8 sequence.
func (f *Filter) text(dst []byte, b byte) []byte {
	if f.nutf > 0 {
		if b&0xc0 == 0x80 {
			f.utf[f.nutf] = b
			f.nutf++
			if f.nutf < f.want {
				return dst
			}
			return f.char(dst)
		}
		// A sequence cut short: one U+FFFD for it, then b afresh.
		dst = append(dst, replacement...)
		f.nutf = 0
	}
	switch {
	case b >= 0x20 && b < 0x7f:
		return append(dst, b)
	case b < 0x20:
		return f.control(dst, b)
	case b == 0x7f:
		return dst
	case b >= 0xc2 && b <= 0xf4:
		f.utf[0], f.nutf = b, 1
		switch {
		case b < 0xe0:
			f.want = 2
		case b < 0xf0:
			f.want = 3
		default:
			f.want = 4
		}
		return dst
	}
	// 0x80-0xc1 and 0xf5-0xff never begin a UTF-8 sequence. (Read as C1
	// controls by an 8-bit terminal; never written as such.)
	return append(dst, replacement...)
}

// char handles a complete UTF-8 sequence in f.utf.
func (f *Filter) char(dst []byte) []byte {
	n := f.nutf
	f.nutf = 0
	r, size := utf8.DecodeRune(f.utf[:n])
	switch {
	case size != n: // overlong, a surrogate, beyond U+10FFFF
		return append(dst, replacement...)
	case r >= 0x80 && r <= 0x9f:
		// A C1 control, which a terminal may honour in UTF-8 too: parsed
		// as its 7-bit form, ESC and the byte 0x40 below it, so what it
		// introduces is filtered like the rest.
		f.enter(escape)
		return f.byte(dst, byte(r-0x40))
	case r == Marker:
		return append(dst, replacement...)
	}
	return append(dst, f.utf[:n]...)
}

// control handles a C0 control byte (in any state but the strings).
func (f *Filter) control(dst []byte, b byte) []byte {
	switch b {
	case 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d: // BEL BS HT LF VT FF CR
		return append(dst, b)
	case 0x0e: // SO
		f.cur |= shifted
		return append(dst, b)
	case 0x0f: // SI
		f.cur &^= shifted
		return append(dst, b)
	case 0x1b:
		f.enter(escape)
	case 0x18, 0x1a: // CAN, SUB: the sequence is abandoned
		f.st = ground
	}
	// NUL, ENQ (the answerback, typed back), and the rest: dropped.
	return dst
}

// save records what a save-cursor saves; restore brings back what some
// save may have saved. Terminals differ in how many save slots there are
// and which saves share one (DECSC, SCOSC, the alternate screen's), so the
// filter assumes the worst: a restore may bring back any state any save
// ever recorded.
func (f *Filter) save()    { f.saved |= f.cur & cursorSaved }
func (f *Filter) restore() { f.cur |= f.saved }

// escDispatch handles ESC, its intermediates and final byte b.
func (f *Filter) escDispatch(dst []byte, b byte) []byte {
	if f.over {
		return dst
	}
	if f.ninter == 0 {
		switch b {
		case '7': // DECSC
			f.save()
		case '8': // DECRC
			f.restore()
		case 'D', 'E', 'M': // IND, NEL, RI
		case '=': // DECKPAM
			f.cur |= keypad
		case '>': // DECKPNM
			f.cur &^= keypad
		default:
			// RIS (c), HTS (H), DECID (Z), single and locking shifts of G2
			// and G3, ST alone (\), and the rest.
			return dst
		}
		return append(dst, 0x1b, b)
	}
	if f.ninter == 1 && (f.inter[0] == '(' || f.inter[0] == ')') && (b == 'B' || b == '0' || b == 'A') {
		bit := g0
		if f.inter[0] == ')' {
			bit = g1
		}
		if b == 'B' {
			f.cur &^= bit
		} else {
			f.cur |= bit
		}
		return append(dst, 0x1b, f.inter[0], b)
	}
	// Other character sets, DECALN and line sizes (#), UTF-8 mode (%),
	// 7/8-bit controls (SP F, SP G), and the rest.
	return dst
}

// fields parses the parameters of a CSI other than SGR: at most maxFields
// numbers, empty ones 0, clamped to maxValue. ok is false when there is a
// sub-parameter (':') or too many fields.
func (f *Filter) fields() (v [maxFields]int, n int, ok bool) {
	if f.nparam == 0 {
		return v, 0, true
	}
	n = 1
	for _, c := range f.params[:f.nparam] {
		switch {
		case c == ';':
			if n == maxFields {
				return v, 0, false
			}
			n++
		case c == ':':
			return v, 0, false
		default:
			if x := v[n-1]*10 + int(c-'0'); x <= maxValue {
				v[n-1] = x
			} else {
				v[n-1] = maxValue
			}
		}
	}
	return v, n, true
}

// csiDispatch handles a CSI with final byte b.
func (f *Filter) csiDispatch(dst []byte, b byte) []byte {
	if f.over {
		return dst
	}
	switch {
	case f.priv == 0 && f.ninter == 0 && b == 'm':
		return f.sgr(dst)
	case f.priv == '?' && f.ninter == 0 && (b == 'h' || b == 'l'):
		return f.decMode(dst, b == 'h')
	}
	v, n, ok := f.fields()
	if !ok {
		return dst
	}
	switch {
	case f.priv == 0 && f.ninter == 0:
		switch b {
		case '@', 'A', 'B', 'C', 'D', 'E', 'F', 'G', 'I', 'L', 'M', 'P', 'S', 'T', 'X', 'Z', '`', 'a', 'b', 'd', 'e':
			// ICH, cursor movement, IL, DL, DCH, SU, SD, ECH, CBT, HPA,
			// HPR, REP, VPA, VPR: one count or position. (T with five
			// parameters starts mouse highlight tracking.)
			if n > 1 {
				return dst
			}
		case 'H', 'f': // CUP, HVP
			if n > 2 {
				return dst
			}
		case 'J', 'K': // ED, EL: not 3, the scrollback
			if n > 1 || v[0] > 2 {
				return dst
			}
		case 'r': // DECSTBM
			if n > 2 {
				return dst
			}
			if v[0] == 0 && v[1] == 0 {
				f.cur &^= scrollRegion
			} else {
				f.cur |= scrollRegion
			}
		case 's', 'u': // SCOSC, SCORC (with parameters: DECSLRM, kitty keys)
			if n > 0 {
				return dst
			}
			if b == 's' {
				f.save()
			} else {
				f.restore()
			}
		case 'h', 'l': // SM, RM: only IRM (4); KAM (2) would lock the keyboard
			kept := false
			for _, x := range v[:n] {
				if x == 4 {
					kept = true
				}
			}
			if !kept {
				return dst
			}
			if b == 'h' {
				f.cur |= insertMode
			} else {
				f.cur &^= insertMode
			}
			return append(dst, 0x1b, '[', '4', b)
		default:
			// DA (c), DSR and CPR (n), XTWINOPS (t), TBC (g), MC (i),
			// DECLL (q), DECREQTPARM (x), and the rest.
			return dst
		}
	case f.priv == 0 && f.ninter == 1 && f.inter[0] == ' ' && b == 'q': // DECSCUSR
		if n > 1 || v[0] > 6 {
			return dst
		}
		if v[0] == 0 {
			f.cur &^= cursorStyle
		} else {
			f.cur |= cursorStyle
		}
	default:
		// Private markers (DA2, XTMODKEYS, kitty keyboard, ...) and
		// intermediates (DECRQM, DECSTR, rectangle operations, ...).
		return dst
	}
	dst = append(dst, 0x1b, '[')
	for i := 0; i < n; i++ {
		if i > 0 {
			dst = append(dst, ';')
		}
		dst = strconv.AppendInt(dst, int64(v[i]), 10)
	}
	if f.ninter == 1 {
		dst = append(dst, f.inter[0])
	}
	return append(dst, b)
}

// sgr passes an SGR: it only sets how text looks, so any parameters of
// digits, ';' and ':' (sub-parameters of colours and underline styles) go
// through as they are.
func (f *Filter) sgr(dst []byte) []byte {
	f.cur &^= rendition
	for _, c := range f.params[:f.nparam] {
		if c != '0' && c != ';' {
			f.cur |= rendition
			break
		}
	}
	dst = append(dst, 0x1b, '[')
	dst = append(dst, f.params[:f.nparam]...)
	return append(dst, 'm')
}

// decMode handles DECSET (set) and DECRST: the modes of decModes pass, the
// rest are dropped from the list.
func (f *Filter) decMode(dst []byte, set bool) []byte {
	v, n, ok := f.fields()
	if !ok {
		return dst
	}
	var kept [maxFields]int
	k := 0
next:
	for _, x := range v[:n] {
		if x == 47 || x == 1047 {
			x = 1049 // one alternate screen, one way to leave it
		}
		m, allowed := decModes[x]
		if !allowed {
			continue
		}
		for _, y := range kept[:k] {
			if y == x {
				continue next
			}
		}
		kept[k] = x
		k++
		if x == 1049 && set {
			f.save()
		}
		if set == m.set {
			f.cur |= m.bit
		} else {
			f.cur &^= m.bit
		}
		if x == 1049 && !set {
			f.restore()
		}
	}
	if k == 0 {
		return dst
	}
	dst = append(dst, 0x1b, '[', '?')
	for i, x := range kept[:k] {
		if i > 0 {
			dst = append(dst, ';')
		}
		dst = strconv.AppendInt(dst, int64(x), 10)
	}
	if set {
		return append(dst, 'h')
	}
	return append(dst, 'l')
}

// Restore returns the sequences that bring the terminal back from every
// mode the guest changed, in an order that leaves the cursor where the
// guest's normal screen had it, and makes f as new: the end of a session.
// What the guest did not change is not touched.
func (f *Filter) Restore() []byte {
	var b []byte
	m := f.cur
	if m&altScreen != 0 {
		// Origin mode and the scroll region are the terminal's, not the
		// screen's, and resetting them homes the cursor: done on the
		// alternate screen, that moves nothing the operator sees.
		if m&origin != 0 {
			b = append(b, "\x1b[?6l"...)
		}
		if m&scrollRegion != 0 {
			b = append(b, "\x1b[r"...)
		}
		m &^= origin | scrollRegion
		// Leaving it restores the cursor saved on entry, and with it what
		// the save recorded.
		b = append(b, "\x1b[?1049l"...)
		m |= f.saved
	}
	if m&origin != 0 {
		// On the normal screen this homes the cursor (a save and restore
		// around it would restore origin mode too).
		b = append(b, "\x1b[?6l"...)
	}
	if m&scrollRegion != 0 {
		// DECSTBM homes the cursor: saved and restored around it.
		b = append(b, "\x1b7\x1b[r\x1b8"...)
	}
	if m&rendition != 0 {
		b = append(b, "\x1b[m"...)
	}
	if m&shifted != 0 {
		b = append(b, 0x0f)
	}
	if m&g0 != 0 {
		b = append(b, "\x1b(B"...)
	}
	if m&g1 != 0 {
		b = append(b, "\x1b)B"...)
	}
	var off []byte
	for _, x := range []int{1000, 1002, 1003, 1006, 1004, 2004, 1} {
		if m&decModes[x].bit != 0 {
			if len(off) > 0 {
				off = append(off, ';')
			}
			off = strconv.AppendInt(off, int64(x), 10)
		}
	}
	if len(off) > 0 {
		b = append(append(append(b, "\x1b[?"...), off...), 'l')
	}
	if m&(cursorHidden|noWrap) != 0 {
		b = append(b, "\x1b[?"...)
		switch {
		case m&cursorHidden != 0 && m&noWrap != 0:
			b = append(b, "25;7"...)
		case m&cursorHidden != 0:
			b = append(b, "25"...)
		default:
			b = append(b, '7')
		}
		b = append(b, 'h')
	}
	if m&keypad != 0 {
		b = append(b, "\x1b>"...)
	}
	if m&insertMode != 0 {
		b = append(b, "\x1b[4l"...)
	}
	if m&cursorStyle != 0 {
		b = append(b, "\x1b[0 q"...)
	}
	*f = Filter{}
	return b
}

// Writer filters what is written to it into W.
type Writer struct {
	W   io.Writer
	f   Filter
	buf []byte
}

// NewWriter returns a Writer that filters into w.
func NewWriter(w io.Writer) *Writer { return &Writer{W: w} }

// Write filters p into the underlying writer. It reports len(p) when that
// write succeeds, whatever was dropped.
func (w *Writer) Write(p []byte) (int, error) {
	w.buf = w.f.Append(w.buf[:0], p)
	if len(w.buf) > 0 {
		if _, err := w.W.Write(w.buf); err != nil {
			return 0, err
		}
	}
	if cap(w.buf) > 64<<10 {
		w.buf = nil // a burst's buffer is not kept for the whole session
	}
	return len(p), nil
}

// Restore writes the sequences that undo the guest's modes (Filter.Restore).
func (w *Writer) Restore() error {
	if b := w.f.Restore(); len(b) > 0 {
		_, err := w.W.Write(b)
		return err
	}
	return nil
}
