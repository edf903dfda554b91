package qmp

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
)

// DefaultMaxLine bounds one message from QEMU (one line, without its line
// end). QEMU's answers to everything spectrumd sends are under 4 KiB (an
// "info network" of a VM with a dozen NICs, a query-block of a dozen
// disks); 64 KiB leaves room and keeps what a hostile QEMU can make the
// client hold small. query-qmp-schema (about 200 KiB) does not fit: a
// Dialer with a larger MaxLine can run it.
const DefaultMaxLine = 64 << 10

// ErrLineTooLong is the cause of a session that ended because QEMU sent a
// line longer than the Dialer's MaxLine. The client stops reading at the
// limit: it never buffers the rest, and never resynchronises on what
// follows.
var ErrLineTooLong = errors.New("line too long")

// ErrProtocol marks a message from QEMU that is not the QMP it must be: not
// a JSON object, a greeting without its members, an error reply without a
// class or description, an event without a name. A broken line ends the
// session; a broken reply to a command fails that command.
var ErrProtocol = errors.New("protocol violation")

// lineReader splits QEMU's stream into lines of at most max bytes, reusing
// one buffer: it never holds more than max bytes plus its read buffer.
type lineReader struct {
	r   *bufio.Reader
	max int
	buf []byte
}

func newLineReader(r io.Reader, max int) *lineReader {
	return &lineReader{r: bufio.NewReaderSize(r, 4096), max: max}
}

// next returns the next line that is not blank, without its line end
// ("\r\n" from QEMU, "\n" accepted). The slice is valid until the next call.
func (l *lineReader) next() ([]byte, error) {
	for {
		l.buf = l.buf[:0]
		for {
			chunk, err := l.r.ReadSlice('\n')
			// +2 for the line end, so that a line of exactly max bytes fits.
			if len(l.buf)+len(chunk) > l.max+2 {
				return nil, fmt.Errorf("%w: more than %d bytes", ErrLineTooLong, l.max)
			}
			l.buf = append(l.buf, chunk...)
			if err == nil {
				break
			}
			if err == bufio.ErrBufferFull {
				continue
			}
			if err == io.EOF && len(l.buf) > 0 {
				err = io.ErrUnexpectedEOF // a line cut by the end of the stream
			}
			return nil, err
		}
		line := bytes.TrimSpace(l.buf)
		if len(line) > l.max {
			return nil, fmt.Errorf("%w: more than %d bytes", ErrLineTooLong, l.max)
		}
		if len(line) > 0 {
			return line, nil
		}
	}
}

// Greeting is what QEMU announces when a client connects.
type Greeting struct {
	Major, Minor, Micro int    // QEMU's version
	Package             string // the distribution's package version, e.g. "Debian 1:7.2+dfsg-7"
	Capabilities        []string
}

// parseGreeting checks and decodes QEMU's first line:
// {"QMP": {"version": {"qemu": {"major": 7, ...}, "package": "..."}, "capabilities": [...]}}.
func parseGreeting(line []byte) (Greeting, error) {
	var g Greeting
	var top, qmp, version, qemu map[string]json.RawMessage
	err := decodeMember(line, "", &top)
	if err == nil {
		err = decodeMember(top["QMP"], "QMP", &qmp)
	}
	if err == nil {
		err = errors.Join(decodeMember(qmp["version"], "QMP.version", &version),
			decodeMember(qmp["capabilities"], "QMP.capabilities", &g.Capabilities))
	}
	if err == nil {
		err = errors.Join(decodeMember(version["qemu"], "QMP.version.qemu", &qemu),
			decodeMember(version["package"], "QMP.version.package", &g.Package))
	}
	if err == nil {
		err = errors.Join(decodeMember(qemu["major"], "major", &g.Major),
			decodeMember(qemu["minor"], "minor", &g.Minor), decodeMember(qemu["micro"], "micro", &g.Micro))
	}
	if err == nil && (g.Major < 0 || g.Minor < 0 || g.Micro < 0) {
		err = fmt.Errorf("%w: version %d.%d.%d", ErrProtocol, g.Major, g.Minor, g.Micro)
	}
	if err != nil {
		return Greeting{}, err
	}
	return g, nil
}

// decodeMember decodes raw, the member called name, into v; a missing
// member (nil raw) or null is an error.
func decodeMember(raw json.RawMessage, name string, v any) error {
	if raw == nil || string(raw) == "null" {
		return fmt.Errorf("%w: no member %s", ErrProtocol, name)
	}
	if _, ok := v.(*map[string]json.RawMessage); ok && raw[0] != '{' {
		return fmt.Errorf("%w: %s is not a JSON object", ErrProtocol, name)
	}
	if err := json.Unmarshal(raw, v); err != nil {
		return fmt.Errorf("%w: %s: %w", ErrProtocol, name, err)
	}
	return nil
}

// decodeObject decodes line, which must be one JSON object, into v.
func decodeObject(line []byte, v any) error {
	if len(line) == 0 || line[0] != '{' {
		return fmt.Errorf("%w: not a JSON object", ErrProtocol)
	}
	if err := json.Unmarshal(line, v); err != nil {
		return fmt.Errorf("%w: %w", ErrProtocol, err)
	}
	return nil
}

// msgKind tells what a line from QEMU is.
type msgKind int

const (
	kindOther msgKind = iota // a JSON object of no kind the client knows: dropped
	kindReply
	kindEvent
)

// message is one line from QEMU after checking.
type message struct {
	kind msgKind

	// kindReply. hasID is false for a reply without an id, or with one the
	// client never sends (not an unsigned integer); such replies answer
	// nothing. err is QEMU's refusal, or ErrProtocol for a reply that is
	// neither a valid return nor a valid error.
	id    uint64
	hasID bool
	ret   json.RawMessage
	err   error

	// kindEvent; evErr is set when the event is malformed (it is dropped).
	event Event
	evErr error
}

// parseMessage classifies and checks one line after the greeting. Its
// error means the line is not a JSON object at all: the stream is not QMP
// and the session must end. A reply or event of the wrong shape is not an
// error here: it is returned with its err or evErr set.
func parseMessage(line []byte) (message, error) {
	// A map, not a struct: encoding/json matches struct fields without
	// regard to case, and QMP's member names are exact.
	var members map[string]json.RawMessage
	if err := decodeObject(line, &members); err != nil {
		return message{}, err
	}
	if raw, ok := members["event"]; ok {
		ev, err := parseEvent(raw, members)
		return message{kind: kindEvent, event: ev, evErr: err}, nil
	}
	ret, isReturn := members["return"]
	eraw, isError := members["error"]
	if !isReturn && !isError {
		return message{kind: kindOther}, nil
	}
	m := message{kind: kindReply}
	if raw, ok := members["id"]; ok {
		if id, err := strconv.ParseUint(string(raw), 10, 64); err == nil {
			m.id, m.hasID = id, true
		}
	}
	switch {
	case isReturn && isError:
		m.err = fmt.Errorf("%w: reply has both return and error", ErrProtocol)
	case isReturn:
		m.ret = ret
	default:
		m.err = parseError(eraw)
	}
	return m, nil
}

// parseError checks QEMU's error member: {"class": "...", "desc": "..."},
// both non-empty strings. An error that says nothing is still an error.
func parseError(raw json.RawMessage) error {
	var e struct {
		Class *string `json:"class"`
		Desc  *string `json:"desc"`
	}
	if err := decodeObject(raw, &e); err != nil {
		return fmt.Errorf("error reply: %w", err)
	}
	ce := &CommandError{}
	if e.Class != nil {
		ce.Class = *e.Class
	}
	if e.Desc != nil {
		ce.Desc = *e.Desc
	}
	if ce.Class == "" || ce.Desc == "" {
		return fmt.Errorf("%w: error reply without a class or description (class %q, desc %q)", ErrProtocol, ce.Class, ce.Desc)
	}
	return ce
}

// parseEvent checks an event: {"event": "NAME", "data": {...},
// "timestamp": {"seconds": S, "microseconds": U}}, data optional.
func parseEvent(name json.RawMessage, members map[string]json.RawMessage) (Event, error) {
	var ev Event
	if err := json.Unmarshal(name, &ev.Event); err != nil || !eventName(ev.Event) {
		return Event{}, fmt.Errorf("%w: event name %.80s is not 1 to 64 of A-Z, 0-9, _", ErrProtocol, name)
	}
	if raw, ok := members["data"]; ok {
		if err := decodeObject(raw, &ev.Data); err != nil {
			return Event{}, fmt.Errorf("event %s: data: %w", ev.Event, err)
		}
	}
	var ts struct {
		Seconds, Microseconds *int64
	}
	raw, ok := members["timestamp"]
	if !ok {
		return Event{}, fmt.Errorf("%w: event %s has no timestamp", ErrProtocol, ev.Event)
	}
	if err := decodeObject(raw, &ts); err != nil {
		return Event{}, fmt.Errorf("event %s: timestamp: %w", ev.Event, err)
	}
	if ts.Seconds == nil || ts.Microseconds == nil || *ts.Microseconds < 0 || *ts.Microseconds >= 1e6 {
		return Event{}, fmt.Errorf("%w: event %s: timestamp is not seconds and microseconds", ErrProtocol, ev.Event)
	}
	ev.Timestamp.Seconds, ev.Timestamp.Microseconds = *ts.Seconds, *ts.Microseconds
	return ev, nil
}

// eventName reports whether s is an event name as QEMU's schema makes
// them: upper-case letters, digits and underscores.
func eventName(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_') {
			return false
		}
	}
	return true
}
