package vmlog

import (
	"log/slog"
	"strings"

	"github.com/coreos/go-systemd/v22/journal"

	"spectrum-os.org/netcfg/host/hostlog"
)

// critMarkers are the kernel's own words for its worst: a panic, an oops
// (x86 and arm64), a BUG, a bad memory access. A kernel prints them without
// a priority on its console unless it boots with console_msg_format=syslog.
var critMarkers = []string{
	"Kernel panic - not syncing",
	"Oops: ",
	"BUG: ",
	"Unable to handle kernel",
	"general protection fault",
}

// linePriority is the level a guest's serial line (sanitised) is logged at
// in the host's log, and the line as logged there:
//
//  1. A leading syslog priority "<N>" (N from 0 to 191: facility×8 +
//     severity, as a kernel booted with console_msg_format=syslog prints
//     its console lines, or a program writing syslog lines to the
//     console) gives the severity N mod 8, and is taken off the line.
//  2. Otherwise the kernel's words for a panic, an oops, a BUG or a bad
//     memory access (critMarkers) anywhere in the line make it crit, the
//     word "error" (any case) err, the word "warning" warning.
//  3. Otherwise info.
//
// A guest never gets above crit (hostlog.LevelOf): "<0>" is crit, not
// emerg, which journald would write on every logged-in user's terminal.
// A guest's debug ("<7>") is below spectrumd's level: such a line is in
// the VM's log file only.
func linePriority(s string) (slog.Level, string) {
	if n, rest, ok := syslogPrefix(s); ok {
		return hostlog.LevelOf(journal.Priority(n % 8)), rest
	}
	for _, m := range critMarkers {
		if strings.Contains(s, m) {
			return hostlog.LevelCrit, s
		}
	}
	switch {
	case hasWord(s, "error"):
		return slog.LevelError, s
	case hasWord(s, "warning"):
		return slog.LevelWarn, s
	}
	return slog.LevelInfo, s
}

// syslogPrefix parses a leading "<N>", N a decimal of 1 to 3 digits no
// more than 191 (the largest facility×8 + severity).
func syslogPrefix(s string) (n int, rest string, ok bool) {
	if len(s) < 3 || s[0] != '<' {
		return 0, s, false
	}
	i := 1
	for ; i < len(s) && i <= 3 && s[i] >= '0' && s[i] <= '9'; i++ {
		n = n*10 + int(s[i]-'0')
	}
	if i == 1 || i >= len(s) || s[i] != '>' || n > 191 {
		return 0, s, false
	}
	return n, s[i+1:], true
}

// hasWord tells whether s holds w (lower-case ASCII) in any case as a word
// of its own: not inside a longer run of letters, digits and underscores
// ("errors" and "no_error" do not count).
func hasWord(s, w string) bool {
	for i := 0; i+len(w) <= len(s); i++ {
		if s[i]|0x20 != w[0] || (i > 0 && isWordByte(s[i-1])) || !strings.EqualFold(s[i:i+len(w)], w) {
			continue
		}
		if j := i + len(w); j == len(s) || !isWordByte(s[j]) {
			return true
		}
	}
	return false
}

func isWordByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_'
}
