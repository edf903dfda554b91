// Package printable escapes untrusted text (VM names, file names, symlink
// targets, error messages that quote them) for printing on the operator's
// terminal: what could drive the terminal, or hide, reorder or fake the
// text around it, is written as a visible escape instead.
//
// Escaped: malformed UTF-8 (\xNN, per byte), C0 controls and DEL (\t, \n,
// \r or \xNN), C1 controls (\u0080 to \u009f), Unicode format characters (category Cf: the bidi
// embeddings, overrides and isolates, zero-width spaces and joiners, the
// byte-order mark, soft hyphen, tag characters) and every white space but
// the plain space (no-break and other-width spaces, line and paragraph
// separators) as \uXXXX or \UXXXXXXXX: the forms of vmlog.Sanitize. Everything else, backslashes
// included, is left as it is: the escapes are for a person to read, so an
// escaped string is not meant to be parsed back. Escaping twice changes
// nothing more.
package printable

import (
	"strings"
	"unicode"
	"unicode/utf8"
)

// Unsafe tells whether String escapes r.
func Unsafe(r rune) bool {
	switch {
	case r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0):
		return true
	case r < 0x80:
		return false
	}
	return unicode.Is(unicode.Cf, r) || unicode.IsSpace(r)
}

// String returns s with every unsafe character escaped; s itself when
// there is none.
func String(s string) string { return escape(s, false) }

// Lines is String for a message of several lines (errors.Join's): it keeps
// its newlines and escapes the rest.
func Lines(s string) string { return escape(s, true) }

func escape(s string, keepNewlines bool) string {
	clean := true
	for i, r := range s {
		if (r == utf8.RuneError && !strings.HasPrefix(s[i:], "\uFFFD")) || (Unsafe(r) && !(keepNewlines && r == '\n')) {
			clean = false
			break
		}
	}
	if clean {
		return s
	}
	const hex = "0123456789abcdef"
	b := make([]byte, 0, len(s)+16)
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size <= 1:
			b = append(b, '\\', 'x', hex[s[i]>>4], hex[s[i]&0xf])
		case keepNewlines && r == '\n':
			b = append(b, '\n')
		case r == '\t':
			b = append(b, '\\', 't')
		case r == '\n':
			b = append(b, '\\', 'n')
		case r == '\r':
			b = append(b, '\\', 'r')
		case !Unsafe(r):
			b = append(b, s[i:i+size]...)
		case r < 0x80: // \x only for ASCII: \x80 and up are bytes of malformed UTF-8
			b = append(b, '\\', 'x', hex[r>>4], hex[r&0xf])
		case r <= 0xffff:
			b = append(b, '\\', 'u', hex[r>>12&0xf], hex[r>>8&0xf], hex[r>>4&0xf], hex[r&0xf])
		default:
			b = append(b, '\\', 'U', '0', '0', hex[r>>20&0xf], hex[r>>16&0xf], hex[r>>12&0xf], hex[r>>8&0xf], hex[r>>4&0xf], hex[r&0xf])
		}
		i += size
	}
	return string(b)
}
