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
// separators) as \uXXXX or \UXXXXXXXX (vmlog.Sanitize escapes a guest's serial lines with
// Append, the same way). Everything else, backslashes
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
	b := make([]byte, 0, len(s)+16)
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		if keepNewlines && r == '\n' {
			b = append(b, '\n')
		} else {
			b = Append(b, s[i:i+size])
		}
		i += size
	}
	return string(b)
}

// Append appends one character of untrusted text to b, escaped as String
// escapes it: c is one rune's UTF-8 encoding, or a single byte of
// malformed UTF-8 (as utf8.DecodeRuneInString steps through a string).
// It is the one place the escapes are written, for String and for
// callers that must bound the result as they go (vmlog.Sanitize).
func Append(b []byte, c string) []byte {
	const hex = "0123456789abcdef"
	r, size := utf8.DecodeRuneInString(c)
	switch {
	case r == utf8.RuneError && size <= 1:
		return append(b, '\\', 'x', hex[c[0]>>4], hex[c[0]&0xf])
	case r == '\t':
		return append(b, '\\', 't')
	case r == '\n':
		return append(b, '\\', 'n')
	case r == '\r':
		return append(b, '\\', 'r')
	case !Unsafe(r):
		return append(b, c...)
	case r < 0x80: // \x only for ASCII: \x80 and up are bytes of malformed UTF-8
		return append(b, '\\', 'x', hex[r>>4], hex[r&0xf])
	case r <= 0xffff:
		return append(b, '\\', 'u', hex[r>>12&0xf], hex[r>>8&0xf], hex[r>>4&0xf], hex[r&0xf])
	default:
		return append(b, '\\', 'U', '0', '0', hex[r>>20&0xf], hex[r>>16&0xf], hex[r>>12&0xf], hex[r>>8&0xf], hex[r>>4&0xf], hex[r&0xf])
	}
}
