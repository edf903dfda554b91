package vmlog

import (
	"unicode"
	"unicode/utf8"
)

// maxLine is the longest line kept; longer lines are cut and marked, so a
// guest that never writes a newline cannot make the host buffer without end.
const maxLine = 4096

// cutMark ends a line that was cut.
const cutMark = "…[cut]"

// Sanitize makes a line the guest wrote safe to put in the host's logs:
// control characters (including ESC, CR and the C1 range), Unicode format
// characters (bidi controls, zero-width characters, the BOM, tags), line
// and paragraph separators and invalid UTF-8 are written as Go escapes
// (\x1b, \u0085, \u200b, \U000e0041; an invalid byte as \xff), so a guest cannot forge a line that looks
// like spectrumd's own, hide or reorder text, move the terminal's cursor,
// or split one line into two. A line whose result would pass maxLine
// bytes is cut at the last whole character or escape that fits, and
// marked.
func Sanitize(s string) string {
	clean := true
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == 0x7f || c >= 0x80 {
			clean = false
			break
		}
	}
	if clean && len(s) <= maxLine {
		return s
	}
	b := make([]byte, 0, min(len(s)+16, maxLine+len(cutMark)))
	var esc [10]byte
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		piece := s[i : i+size]
		switch {
		case r == utf8.RuneError && size <= 1:
			piece = escape(esc[:0], 'x', rune(s[i]), 2)
		case r == '\t':
			piece = `\t`
		case unsafeRune(r):
			// \x only for ASCII: \x80 and up are invalid bytes.
			switch {
			case r < 0x80:
				piece = escape(esc[:0], 'x', r, 2)
			case r <= 0xffff:
				piece = escape(esc[:0], 'u', r, 4)
			default:
				piece = escape(esc[:0], 'U', r, 8)
			}
		}
		if len(b)+len(piece) > maxLine {
			return string(append(b, cutMark...))
		}
		b = append(b, piece...)
		i += size
	}
	return string(b)
}

// unsafeRune tells whether a guest's r must be escaped: control
// characters (Cc), format characters (Cf: invisible, yet they change how
// text around them reads, or look like nothing before a marker), and the
// line and paragraph separators.
func unsafeRune(r rune) bool {
	if r < 0x80 {
		return r < 0x20 || r == 0x7f
	}
	return unicode.In(r, unicode.Cc, unicode.Cf, unicode.Zl, unicode.Zp)
}

// escape writes r as a backslash, kind and digits hex digits.
func escape(b []byte, kind byte, r rune, digits int) string {
	const hex = "0123456789abcdef"
	b = append(b, '\\', kind)
	for shift := 4 * (digits - 1); shift >= 0; shift -= 4 {
		b = append(b, hex[r>>shift&0xf])
	}
	return string(b)
}
