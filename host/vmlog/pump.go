package vmlog

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// The host's log gets at most hostLogBurst serial lines of one VM at once,
// refilled at hostLogRate lines a second; the rest go to the VM's own
// (capped) log file only, and a line in the host's log says how many were
// held back. A guest printing megabytes a second cannot flood the journal.
//
// The last exitTail lines held back before the console ends are logged
// when it ends: a guest that has been loud and then crashes still gets its
// last words (a panic's trace) into the host's log, after a line saying
// they follow.
const (
	hostLogRate  = 100
	hostLogBurst = 1000
	exitTail     = 64
)

// Pump reads a VM's serial console until EOF and hands every line to
// the host's log (tagged with the VM's name, at the priority the line asks
// for: linePriority) and to the VM's log file (as the guest wrote it). It
// only ever reads: the serial console is write-only from the guest's side,
// and nothing is written back. Lines are sanitised, and a line longer than
// maxLine bytes keeps its first maxLine bytes, marked "…[cut]", and the rest
// of it is dropped as it arrives, so a guest that spams its console costs
// bounded memory, however long its lines.
func Pump(r io.Reader, vm string, log *slog.Logger, lf *File) {
	br := bufio.NewReaderSize(r, maxLine)
	ctx := context.Background()
	lim := limiter{tokens: hostLogBurst, last: time.Now()}
	// tail holds the lines held back since the last one that passed,
	// the latest exitTail of them.
	var tail tailRing
	var cut bool // the current line was cut: drop until its newline
	for {
		chunk, err := br.ReadSlice('\n')
		if len(chunk) > 0 {
			full := bytes.HasSuffix(chunk, []byte{'\n'})
			if !cut {
				line := bytes.TrimRight(chunk, "\r\n")
				if err == bufio.ErrBufferFull {
					line = trimPartialRune(line) // the rest of it is dropped
				}
				s := Sanitize(string(line))
				if strings.HasPrefix(s, BootMarkerPrefix) {
					s = `\x3d` + s[1:] // only spectrumd writes boot markers
				}
				switch {
				case err == bufio.ErrBufferFull:
					if !strings.HasSuffix(s, cutMark) { // Sanitize may have cut it already
						s += cutMark
					}
				case !full:
					s += "…" // the console ended mid-line
				}
				// A line below the host log's level (a guest's debug)
				// goes to the file only, and costs no token.
				if level, msg := linePriority(s); log.Enabled(ctx, level) {
					if held := lim.take(time.Now()); held >= 0 {
						if held > 0 {
							log.Warn("VM serial output over the host log's rate; lines held back are in the VM's log file", "vm", vm, "held_back", held)
						}
						log.Log(ctx, level, msg, "vm", vm, "source", "serial")
						tail.reset()
					} else {
						tail.add(serialLine{level, msg})
					}
				}
				if lf != nil {
					if werr := lf.WriteLine(s); werr != nil && lim.errOK(time.Now()) {
						log.Warn("writing VM log file", "vm", vm, "err", werr)
					}
				}
			}
			cut = !full
		}
		if err == bufio.ErrBufferFull {
			continue
		}
		if err != nil {
			if held := lim.held; held > 0 {
				log.Warn("VM serial output over the host log's rate; lines held back are in the VM's log file", "vm", vm, "held_back", held)
			}
			if lines := tail.lines(); len(lines) > 0 {
				log.Warn("VM serial console ended; its last lines held back follow", "vm", vm, "lines", len(lines))
				for _, l := range lines {
					log.Log(ctx, l.level, l.msg, "vm", vm, "source", "serial")
				}
			}
			return
		}
	}
}

// trimPartialRune drops a UTF-8 sequence cut short at the end of b, so a
// line cut at the buffer's size ends with a whole character, not an escape
// of half of one.
func trimPartialRune(b []byte) []byte {
	for i := 1; i <= min(utf8.UTFMax-1, len(b)); i++ {
		c := b[len(b)-i]
		if !utf8.RuneStart(c) {
			continue
		}
		if !utf8.FullRune(b[len(b)-i:]) {
			return b[:len(b)-i]
		}
		break
	}
	return b
}

// serialLine is a guest's line as the host's log takes it (linePriority).
type serialLine struct {
	level slog.Level
	msg   string
}

// tailRing keeps the latest exitTail lines added to it.
type tailRing struct {
	buf  [exitTail]serialLine
	next int // where the next line goes
	n    int // lines kept
}

func (t *tailRing) add(s serialLine) {
	t.buf[t.next] = s
	t.next = (t.next + 1) % exitTail
	t.n = min(t.n+1, exitTail)
}

func (t *tailRing) reset() {
	if t.n > 0 {
		*t = tailRing{}
	}
}

// lines returns the lines kept, oldest first.
func (t *tailRing) lines() []serialLine {
	out := make([]serialLine, 0, t.n)
	for i := range t.n {
		out = append(out, t.buf[(t.next-t.n+i+exitTail)%exitTail])
	}
	return out
}

// limiter is a token bucket for one VM's serial lines in the host's log.
type limiter struct {
	tokens   float64
	last     time.Time
	held     int       // lines held back and not reported yet
	lastHeld time.Time // when held-back lines were last reported
	lastErr  time.Time // when a log file error was last reported
}

// take returns -1 if the line is held back, else how many lines were held
// back before it (to be reported).
func (l *limiter) take(now time.Time) int {
	l.tokens = min(hostLogBurst, l.tokens+now.Sub(l.last).Seconds()*hostLogRate)
	l.last = now
	if l.tokens < 1 {
		l.held++
		return -1
	}
	l.tokens--
	// Say how many lines were held back at most once a second, so the
	// report itself does not double the host log's share.
	if l.held == 0 || now.Sub(l.lastHeld) < time.Second {
		return 0
	}
	held := l.held
	l.held, l.lastHeld = 0, now
	return held
}

// errOK allows one log file error report every 10 s (a full disk fails
// every line).
func (l *limiter) errOK(now time.Time) bool {
	if now.Sub(l.lastErr) < 10*time.Second {
		return false
	}
	l.lastErr = now
	return true
}

// BootMarkerPrefix starts the line spectrumd writes into a VM's log file
// each time it launches the VM, so one boot's lines can be told from the
// next. A guest line that starts the same way has its first byte escaped,
// so a guest cannot forge one.
const BootMarkerPrefix = "=== spectrumd: "

// BootMarker is the line written to a VM's log file at each launch.
func BootMarker(pid int, at time.Time) string {
	return BootMarkerPrefix + "VM launched, pid " + strconv.Itoa(pid) + ", " + at.UTC().Format(time.RFC3339Nano) + " ==="
}
