package vmlog

import (
	"unicode/utf8"

	"spectrum-os.org/netcfg/internal/printable"
)

// maxLine is the longest line kept; longer lines are cut and marked, so a
// guest that never writes a newline cannot make the host buffer without end.
const maxLine = 4096

// cutMark ends a line that was cut.
const cutMark = "…[cut]"

// Sanitize makes a line the guest wrote safe to put in the host's logs:
// what internal/printable escapes — control characters (including ESC, CR
// and the C1 range), Unicode format characters (bidi controls, zero-width
// characters, the BOM, tags), line and paragraph separators and other odd
// spaces, invalid UTF-8 — is written as an escape (\x1b, \r, \u0085,
// \u200b, \U000e0041; an invalid byte as \xff), so a guest cannot forge a
// line that looks like spectrumd's own, hide or reorder text, move the
// terminal's cursor, or split one line into two. A line whose result would
// pass maxLine bytes is cut at the last whole character or escape that
// fits, and marked.
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
	for i := 0; i < len(s); {
		_, size := utf8.DecodeRuneInString(s[i:])
		n := len(b)
		b = printable.Append(b, s[i:i+size])
		if len(b) > maxLine {
			return string(append(b[:n], cutMark...))
		}
		i += size
	}
	return string(b)
}
