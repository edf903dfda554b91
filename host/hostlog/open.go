package hostlog

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"

	"github.com/coreos/go-systemd/v22/journal"
)

// Where spectrumd logs: the -log flag of `spectrumd serve`.
const (
	// Auto logs to the journal when stderr is the journal's stream
	// (JOURNAL_STREAM names it: spectrumd runs as a systemd service) and
	// the journal's native socket answers; to stderr otherwise, so that
	// spectrumd run in a terminal, a pipe or a test logs where it did.
	Auto = "auto"
	// Journal logs to the journal's native socket, and fails at once when
	// it does not answer.
	Journal = "journal"
	// Stderr logs to stderr.
	Stderr = "stderr"
)

// Modes are the values of -log.
var Modes = []string{Auto, Journal, Stderr}

// New returns the handler of spectrumd's log for mode (one of Modes) and
// what it chose, in words: a journal handler, or a text handler (JSON if
// jsonLines) writing to stderr. stderr is also where the records the
// journal refuses go.
func New(mode string, stderr io.Writer, jsonLines bool) (h slog.Handler, chose string, err error) {
	opts := &slog.HandlerOptions{ReplaceAttr: levelNames}
	var text slog.Handler = slog.NewTextHandler(stderr, opts)
	if jsonLines {
		text = slog.NewJSONHandler(stderr, opts)
	}
	switch mode {
	case Stderr:
		return text, "stderr (-log stderr)", nil
	case Auto:
		f, _ := stderr.(*os.File)
		if f == nil || f.Fd() != 2 {
			return text, "stderr (not the process's stderr)", nil
		}
		ok, err := journal.StderrIsJournalStream()
		if err != nil {
			return text, fmt.Sprintf("stderr (%v)", err), nil
		}
		if !ok {
			return text, "stderr (stderr is not the journal's stream: JOURNAL_STREAM)", nil
		}
		if !journal.Enabled() {
			return text, "stderr (the journal's native socket does not answer)", nil
		}
		return NewJournalHandler(nil, text), "journal (stderr is the journal's stream)", nil
	case Journal:
		if !journal.Enabled() {
			return nil, "", errors.New("-log journal: the journal's native socket /run/systemd/journal/socket does not answer")
		}
		return NewJournalHandler(nil, text), "journal (-log journal)", nil
	}
	return nil, "", fmt.Errorf("-log %q: want one of %v", mode, Modes)
}
