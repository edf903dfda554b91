package vm

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"
)

// Prefix starts every sentinel line of the test init.
const Prefix = "SPECTRUM-TEST: "

// Line is one line of a serial console, with when the host read it.
type Line struct {
	At   time.Duration // since the VM was launched
	Text string
}

// Serial collects a VM's serial console line by line. It only reads.
type Serial struct {
	start time.Time

	mu      sync.Mutex
	lines   []Line
	done    bool
	changed chan struct{} // closed and replaced on every new line and at EOF
	eof     chan struct{} // closed when the console has been read to its end
}

// NewSerial reads r until EOF in the background.
func NewSerial(r io.Reader, start time.Time) *Serial {
	s := &Serial{start: start, changed: make(chan struct{}), eof: make(chan struct{})}
	go s.read(r)
	return s
}

func (s *Serial) read(r io.Reader) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		s.mu.Lock()
		s.lines = append(s.lines, Line{At: time.Since(s.start), Text: strings.TrimRight(sc.Text(), "\r")})
		close(s.changed)
		s.changed = make(chan struct{})
		s.mu.Unlock()
	}
	s.mu.Lock()
	s.done = true
	close(s.changed)
	s.mu.Unlock()
	close(s.eof)
}

// Lines returns a copy of every line read so far.
func (s *Serial) Lines() []Line {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Line(nil), s.lines...)
}

// String is the whole log, one line per line, each with the host time.
func (s *Serial) String() string {
	var b strings.Builder
	for _, l := range s.Lines() {
		fmt.Fprintf(&b, "%8.3fs | %s\n", l.At.Seconds(), l.Text)
	}
	return b.String()
}

// Events returns the sentinel lines (without the prefix) that start with
// event, e.g. Events("addr ") or Events("route ").
func (s *Serial) Events(event string) []string {
	var out []string
	for _, l := range s.Lines() {
		if e, ok := Event(l.Text); ok && strings.HasPrefix(e, event) {
			out = append(out, e)
		}
	}
	return out
}

// Event returns the sentinel in a console line, without the prefix. The
// prefix may follow other output on the same line.
func Event(line string) (string, bool) {
	i := strings.Index(line, Prefix)
	if i < 0 {
		return "", false
	}
	return line[i+len(Prefix):], true
}

// Wait returns the first sentinel line (already read or still to come) that
// starts with one of events. It fails when ctx ends or when the console
// closes (QEMU exited) first.
func (s *Serial) Wait(ctx context.Context, events ...string) (Line, error) {
	event := strings.Join(events, `" or "`+Prefix)
	for i := 0; ; {
		s.mu.Lock()
		for ; i < len(s.lines); i++ {
			e, ok := Event(s.lines[i].Text)
			if !ok {
				continue
			}
			for _, want := range events {
				if strings.HasPrefix(e, want) {
					l := s.lines[i]
					s.mu.Unlock()
					return l, nil
				}
			}
		}
		done, changed := s.done, s.changed
		s.mu.Unlock()
		if done {
			return Line{}, fmt.Errorf("serial console closed (QEMU exited) before %q", Prefix+event)
		}
		select {
		case <-ctx.Done():
			return Line{}, fmt.Errorf("waiting for %q: %w", Prefix+event, ctx.Err())
		case <-changed:
		}
	}
}

// Field returns the value of key=value in a sentinel, e.g. Field(e, "t").
func Field(event, key string) string {
	for _, f := range strings.Fields(event) {
		if v, ok := strings.CutPrefix(f, key+"="); ok {
			return v
		}
	}
	return ""
}
