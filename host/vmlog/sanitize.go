package vmlog

import "unicode/utf8"

// maxLine is the longest line kept; longer lines are cut and marked, so a
// guest that never writes a newline cannot make the host buffer without end.
const maxLine = 4096

// cutMark ends a line that was cut.
const cutMark = "…[cut]"

// Sanitize makes a line the guest wrote safe to put in the host's logs:
// control characters (including ESC, CR and the C1 range) and invalid UTF-8
// are written as Go escapes, so a guest cannot forge a line that looks like
// spectrumd's own, move the terminal's cursor, or split one line into two.
// Lines longer than maxLine bytes are cut and marked.
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
	const hex = "0123456789abcdef"
	b := make([]byte, 0, len(s)+16)
	for i := 0; i < len(s) && len(b) < maxLine; {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size <= 1:
			b = append(b, '\\', 'x', hex[s[i]>>4], hex[s[i]&0xf])
		case r == '\t':
			b = append(b, '\\', 't')
		case r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) || r == 0x2028 || r == 0x2029:
			if r > 0xff {
				b = append(b, '\\', 'u', hex[r>>12&0xf], hex[r>>8&0xf], hex[r>>4&0xf], hex[r&0xf])
			} else {
				b = append(b, '\\', 'x', hex[r>>4], hex[r&0xf])
			}
		default:
			b = append(b, s[i:i+size]...)
		}
		i += size
	}
	if len(b) >= maxLine {
		b = append(b[:maxLine], cutMark...)
	}
	return string(b)
}
