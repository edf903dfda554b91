package vm

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"strconv"
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
	return s.WaitMatch(ctx, `"`+Prefix+event+`"`, func(e string) bool {
		for _, want := range events {
			if strings.HasPrefix(e, want) {
				return true
			}
		}
		return false
	})
}

// WaitMatch returns the first sentinel line (already read or still to
// come) whose event (without the prefix) match accepts; what describes it
// in the error.
func (s *Serial) WaitMatch(ctx context.Context, what string, match func(event string) bool) (Line, error) {
	for i := 0; ; {
		s.mu.Lock()
		for ; i < len(s.lines); i++ {
			if e, ok := Event(s.lines[i].Text); ok && match(e) {
				l := s.lines[i]
				s.mu.Unlock()
				return l, nil
			}
		}
		done, changed := s.done, s.changed
		s.mu.Unlock()
		if done {
			return Line{}, fmt.Errorf("serial console closed (QEMU exited) before %s", what)
		}
		select {
		case <-ctx.Done():
			return Line{}, fmt.Errorf("waiting for %s: %w", what, ctx.Err())
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

// State returns the init's network state dump number n (1 is the one right
// after the agent's run as an init hook; 0 means the latest): its link,
// addr and route sentinels without the t= field, in the order reported. ok
// is false if that dump is not complete yet.
func (s *Serial) State(n int) (state []string, ok bool) {
	var cur []string
	for _, l := range s.Lines() {
		e, isEvent := Event(l.Text)
		if !isEvent {
			continue
		}
		switch {
		case hasPrefix(e, "link "), hasPrefix(e, "addr "), hasPrefix(e, "route "):
			cur = append(cur, withoutTime(e))
		case hasPrefix(e, "state done"):
			if Field(e, "n") == strconv.Itoa(n) {
				return cur, true
			}
			if n <= 0 {
				state, ok = cur, true
			}
			cur = nil
		}
	}
	return state, ok
}

// WaitState waits until a state dump satisfies done and returns it. It
// looks at every dump in order, those already read first.
func (s *Serial) WaitState(ctx context.Context, done func(state []string) bool) ([]string, error) {
	for n := 1; ; n++ {
		if _, err := s.Wait(ctx, "state done n="+strconv.Itoa(n)+" "); err != nil {
			last, _ := s.State(0)
			return last, fmt.Errorf("%w; last state: %q", err, last)
		}
		if st, _ := s.State(n); done(st) {
			return st, nil
		}
	}
}

// withoutTime drops a sentinel's trailing t= field.
func withoutTime(e string) string {
	if i := strings.LastIndex(e, " t="); i >= 0 && !strings.Contains(e[i+1:], " ") {
		return e[:i]
	}
	return e
}
