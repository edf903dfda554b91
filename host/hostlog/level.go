// Package hostlog is where spectrumd's log goes on the host: the systemd
// journal, through its native protocol, when spectrumd runs under systemd
// (or is told to), each record an entry with fields per VM and per source;
// stderr, as text or JSON lines, otherwise.
//
// It owns the mapping from slog levels to syslog priorities. It never
// raises a record above "crit": a guest's line (vmlog) can ask for a
// priority, but "alert" and "emerg" are the host's own (journald sends
// "emerg" to every logged-in user's terminal).
package hostlog

import (
	"log/slog"

	"github.com/coreos/go-systemd/v22/journal"
)

// Levels between slog's, for the syslog priorities slog has no name for.
// Nothing logs above LevelCrit.
const (
	LevelNotice = slog.LevelInfo + 2
	LevelCrit   = slog.LevelError + 4
)

// Priority is the syslog priority of a record at level l: each slog level
// maps to the priority of its name, a level in between to that of the
// level below it, anything below Info to debug and anything from LevelCrit
// up to crit.
func Priority(l slog.Level) journal.Priority {
	switch {
	case l >= LevelCrit:
		return journal.PriCrit
	case l >= slog.LevelError:
		return journal.PriErr
	case l >= slog.LevelWarn:
		return journal.PriWarning
	case l >= LevelNotice:
		return journal.PriNotice
	case l >= slog.LevelInfo:
		return journal.PriInfo
	default:
		return journal.PriDebug
	}
}

// LevelOf is the level Priority maps to p; alert and emerg give LevelCrit.
func LevelOf(p journal.Priority) slog.Level {
	switch {
	case p <= journal.PriCrit:
		return LevelCrit
	case p == journal.PriErr:
		return slog.LevelError
	case p == journal.PriWarning:
		return slog.LevelWarn
	case p == journal.PriNotice:
		return LevelNotice
	case p == journal.PriInfo:
		return slog.LevelInfo
	default:
		return slog.LevelDebug
	}
}

// levelNames names the levels slog would print as "INFO+2" and "ERROR+4".
func levelNames(groups []string, a slog.Attr) slog.Attr {
	if len(groups) > 0 || a.Key != slog.LevelKey {
		return a
	}
	switch l, _ := a.Value.Any().(slog.Level); l {
	case LevelNotice:
		a.Value = slog.StringValue("NOTICE")
	case LevelCrit:
		a.Value = slog.StringValue("CRIT")
	}
	return a
}
