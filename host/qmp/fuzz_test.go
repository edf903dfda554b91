package qmp

import (
	"bytes"
	"errors"
	"io"
	"log/slog"
	"testing"
)

// FuzzParse feeds a stream, as QEMU would send it, through the line reader,
// the greeting's parser and the message parser and router (corpus in
// testdata/fuzz/FuzzParse): nothing panics, no line exceeds the bound, and
// only a well-formed reply with the waiting command's id is delivered.
func FuzzParse(f *testing.F) {
	f.Add([]byte(greeting + "\r\n" + `{"return": {}, "id": 42}` + "\r\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		const max = 512
		lr := newLineReader(bytes.NewReader(data), max)
		c := &Client{log: slog.New(slog.DiscardHandler), subs: map[*subscription]struct{}{}}
		sub, _ := c.subscribe(1, func(Event) bool { return true })
		for first := true; ; first = false {
			line, err := lr.next()
			if err != nil {
				if !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, ErrLineTooLong) {
					t.Fatalf("next: %v", err)
				}
				return
			}
			if len(line) == 0 || len(line) > max || bytes.IndexByte(line, '\n') >= 0 {
				t.Fatalf("line %q: empty, longer than %d or not one line", line, max)
			}
			if first {
				g, err := parseGreeting(line)
				if err == nil && (g.Major < 0 || g.Minor < 0 || g.Micro < 0 || g.Capabilities == nil) {
					t.Fatalf("greeting %q accepted as %+v", line, g)
				}
				if err != nil && !errors.Is(err, ErrProtocol) {
					t.Fatalf("greeting %q: %v, want ErrProtocol", line, err)
				}
				continue
			}
			m, err := parseMessage(line)
			if err != nil {
				if !errors.Is(err, ErrProtocol) {
					t.Fatalf("message %q: %v, want ErrProtocol", line, err)
				}
				continue
			}
			switch m.kind {
			case kindReply:
				var ce *CommandError
				switch {
				case m.err == nil && m.ret == nil:
					t.Fatalf("reply %q: neither return nor error", line)
				case m.err != nil && m.ret != nil:
					t.Fatalf("reply %q: both return and error", line)
				case errors.As(m.err, &ce) && (ce.Class == "" || ce.Desc == ""):
					t.Fatalf("reply %q: error %+v says nothing", line, ce)
				case m.err != nil && ce == nil && !errors.Is(m.err, ErrProtocol):
					t.Fatalf("reply %q: error %v is neither QEMU's nor ErrProtocol", line, m.err)
				}
			case kindEvent:
				if m.evErr == nil && !eventName(m.event.Event) {
					t.Fatalf("event %q accepted with name %q", line, m.event.Event)
				}
			}
			p := &pending{id: 42, ch: make(chan message, 1)}
			c.pending = p
			c.route(m)
			select {
			case got := <-p.ch:
				if m.kind != kindReply || !got.hasID || got.id != 42 {
					t.Fatalf("%q delivered as the answer to command 42", line)
				}
			default:
			}
			select {
			case ev := <-sub.ch:
				if m.kind != kindEvent || m.evErr != nil {
					t.Fatalf("%q delivered as event %+v", line, ev)
				}
			default:
			}
		}
	})
}
