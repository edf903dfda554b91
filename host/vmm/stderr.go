package vmm

import (
	"bytes"
	"log/slog"
	"sync"
	"time"

	"spectrum-os.org/netcfg/host/vmlog"
)

// QEMU's stderr reaches spectrumd's log at most stderrBurst lines at once,
// refilled at stderrRate lines a second; the rest are counted and the count
// logged (at most every stderrReport). QEMU says a few lines in a normal
// life; a QEMU that a guest has taken over must not flood the journal.
const (
	stderrBurst  = 100
	stderrRate   = 5
	stderrReport = 10 * time.Second
	// stderrLine is the longest line logged; the rest of it is dropped.
	stderrLine = 4096
)

// stderrLogger logs what QEMU writes to its stderr, a sanitised line at a
// time, with a rate limit.
type stderrLogger struct {
	log *slog.Logger
	now func() time.Time

	mu       sync.Mutex
	buf      []byte
	cut      bool // the current line was too long: drop until its newline
	tokens   float64
	last     time.Time
	held     int
	reported time.Time
}

func newStderrLogger(log *slog.Logger) *stderrLogger {
	return &stderrLogger{log: log, now: time.Now, tokens: stderrBurst}
}

func (l *stderrLogger) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := len(b)
	for len(b) > 0 {
		i := bytes.IndexByte(b, '\n')
		if i < 0 {
			if !l.cut {
				l.buf = append(l.buf, b[:min(len(b), stderrLine-len(l.buf))]...)
				if len(l.buf) >= stderrLine {
					l.line(string(l.buf) + "…[cut]")
					l.buf, l.cut = l.buf[:0], true
				}
			}
			break
		}
		if !l.cut {
			room := stderrLine - len(l.buf)
			if i > room {
				l.line(string(append(l.buf, b[:room]...)) + "…[cut]")
			} else {
				l.line(string(append(l.buf, b[:i]...)))
			}
		}
		l.buf, l.cut = l.buf[:0], false
		b = b[i+1:]
	}
	return n, nil
}

// line logs one line if the bucket has a token, and reports the lines held
// back before it.
func (l *stderrLogger) line(s string) {
	now := l.now()
	if !l.last.IsZero() {
		l.tokens = min(stderrBurst, l.tokens+now.Sub(l.last).Seconds()*stderrRate)
	}
	l.last = now
	if l.tokens < 1 {
		l.held++
		if now.Sub(l.reported) >= stderrReport {
			l.flush(now)
		}
		return
	}
	l.tokens--
	if l.held > 0 && now.Sub(l.reported) >= stderrReport {
		l.flush(now)
	}
	l.log.Warn("qemu: "+vmlog.Sanitize(s), "source", "qemu-stderr")
}

func (l *stderrLogger) flush(now time.Time) {
	l.log.Warn("QEMU's stderr over its rate in spectrumd's log; lines dropped", "dropped", l.held)
	l.held, l.reported = 0, now
}

// Close logs a line left without its newline and the count of lines held
// back that was not reported yet.
func (l *stderrLogger) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.buf) > 0 {
		l.line(string(l.buf) + "…")
		l.buf = l.buf[:0]
	}
	if l.held > 0 {
		l.flush(l.now())
	}
	return nil
}
