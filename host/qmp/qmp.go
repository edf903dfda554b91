package qmp

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/bits"
	mrand "math/rand/v2"
	"net"
	"os"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// ErrClosed is wrapped by every error of a session that has ended, with
// the reason: Close, a command whose context ended before its reply
// (context.DeadlineExceeded or context.Canceled is wrapped too), QEMU
// closing the connection (io.EOF), a line too long, or a protocol
// violation.
var ErrClosed = errors.New("session closed")

// Dialer sets the bounds of a session. The zero value is ready to use.
type Dialer struct {
	// MaxLine bounds one message from QEMU in bytes; 0 means
	// DefaultMaxLine.
	MaxLine int
	// Log gets a line for dropped replies and malformed events (rate
	// limited: the first, then at each power of two); nil means no log.
	Log *slog.Logger
}

// Dial connects to the QMP socket at path and negotiates capabilities,
// with the zero Dialer.
func Dial(ctx context.Context, path string) (*Client, error) {
	return Dialer{}.Dial(ctx, path)
}

// Dial connects to the QMP socket at path and negotiates capabilities. ctx
// bounds the connection and the handshake: if QEMU has not greeted and
// answered by then, the connection is closed and Dial fails. It does not
// bound the session afterwards.
func (d Dialer) Dial(ctx context.Context, path string) (*Client, error) {
	var nd net.Dialer
	conn, err := nd.DialContext(ctx, "unix", path)
	if err != nil {
		return nil, fmt.Errorf("qmp: dial %s: %w", path, err)
	}
	c, err := d.Handshake(ctx, conn.(*net.UnixConn))
	if err != nil {
		return nil, fmt.Errorf("qmp: %s: %w", path, err)
	}
	return c, nil
}

// Handshake reads QEMU's greeting on conn, an open connection to a QMP
// monitor (e.g. one end of a socketpair whose other end QEMU has), and
// negotiates capabilities. The Client owns conn from then on, also when
// Handshake fails (conn is then closed). ctx bounds the handshake only.
func (d Dialer) Handshake(ctx context.Context, conn *net.UnixConn) (*Client, error) {
	max := d.MaxLine
	if max <= 0 {
		max = DefaultMaxLine
	}
	log := d.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	lr := newLineReader(conn, max)

	// Closing the connection is what unblocks a read; a session that never
	// got past its greeting has nothing else to lose.
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	line, err := lr.next()
	if !stop() {
		return nil, fmt.Errorf("no greeting: %w", ctx.Err())
	}
	var g Greeting
	if err == nil {
		g, err = parseGreeting(line)
	}
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("greeting: %w", err)
	}

	var seed [32]byte
	rand.Read(seed[:])
	c := &Client{conn: conn, log: log, greeting: g, sem: make(chan struct{}, 1), ids: mrand.NewChaCha8(seed),
		subs: map[*subscription]struct{}{}, done: make(chan struct{})}
	go c.read(lr)
	// Only the handshake itself: "oob" (out-of-band execution) is not
	// needed to pass descriptors, which QEMU takes on any unix socket.
	if err := c.Run(ctx, "qmp_capabilities", nil, nil); err != nil {
		c.Close()
		return nil, fmt.Errorf("handshake: %w", err)
	}
	return c, nil
}

// Client is a connected, negotiated QMP session. Its methods are safe for
// concurrent use; commands are sent one at a time, each waiting for its
// own reply (matched by id) before the next is sent.
type Client struct {
	conn     *net.UnixConn
	log      *slog.Logger
	greeting Greeting

	// sem is held by the one command in flight. A channel rather than a
	// mutex, so that a caller waiting for its turn still obeys its context.
	sem chan struct{}
	// ids draws each command's id (guarded by sem). Unpredictable, so that
	// QEMU cannot answer a command before it is sent; below 2^53, so that
	// any JSON parser keeps the number exact.
	ids *mrand.ChaCha8

	mu      sync.Mutex
	err     error    // why the session ended; set once, before done closes
	pending *pending // the command waiting for its reply, if any
	subs    map[*subscription]struct{}
	stats   Stats

	done chan struct{} // closed when the reader has stopped
}

// pending is the command in flight: its id and where its reply goes.
type pending struct {
	id uint64
	ch chan message // buffered: the reader never waits for a caller
}

// Stats counts what the client received and did not use.
type Stats struct {
	Events        uint64 // events received, well formed or not
	EventsDropped uint64 // malformed events, and events a waiting caller had no room for
	Stray         uint64 // replies with a missing or unknown id, and messages of no known kind
}

// Stats returns the counters so far.
func (c *Client) Stats() Stats {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stats
}

// Greeting returns what QEMU announced.
func (c *Client) Greeting() Greeting { return c.greeting }

// Event is an asynchronous QMP event, e.g. SHUTDOWN or DEVICE_DELETED.
type Event struct {
	Event     string         `json:"event"`
	Data      map[string]any `json:"data"`
	Timestamp struct {
		Seconds      int64 `json:"seconds"`
		Microseconds int64 `json:"microseconds"`
	} `json:"timestamp"`
}

type subscription struct {
	match func(Event) bool
	ch    chan Event
}

// subscribe registers interest in events before the command that causes
// them is sent, so an event that arrives before the caller waits is kept.
// Up to n matching events wait in the subscription; later ones are
// dropped (and counted) until the caller takes one.
func (c *Client) subscribe(n int, match func(Event) bool) (*subscription, func()) {
	s := &subscription{match: match, ch: make(chan Event, n)}
	c.mu.Lock()
	c.subs[s] = struct{}{}
	c.mu.Unlock()
	return s, func() {
		c.mu.Lock()
		delete(c.subs, s)
		c.mu.Unlock()
	}
}

// read is the session's one reader: it routes each line to the command
// waiting for it or to the event subscribers, and never waits for either,
// so neither a slow caller nor a flood of events can stop it.
func (c *Client) read(lr *lineReader) {
	var cause error
	defer func() {
		c.closeWith(cause)
		close(c.done)
	}()
	for {
		line, err := lr.next()
		if err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) {
				cause = fmt.Errorf("%w: QEMU closed the connection: %w", ErrClosed, err)
			} else {
				cause = fmt.Errorf("%w: read: %w", ErrClosed, err)
			}
			return
		}
		m, err := parseMessage(line)
		if err != nil {
			cause = fmt.Errorf("%w: %w", ErrClosed, err)
			return
		}
		c.route(m)
	}
}

func (c *Client) route(m message) {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch m.kind {
	case kindReply:
		if p := c.pending; p != nil && m.hasID && m.id == p.id {
			c.pending = nil // a second reply with this id is stray too
			p.ch <- m
			return
		}
		c.stats.Stray++
		c.note(c.stats.Stray, "QMP reply that answers no waiting command dropped", "id", m.id, "has_id", m.hasID)
	case kindEvent:
		c.stats.Events++
		if m.evErr != nil {
			c.stats.EventsDropped++
			c.note(c.stats.EventsDropped, "QMP event dropped", "err", m.evErr)
			return
		}
		for s := range c.subs {
			if !s.match(m.event) {
				continue
			}
			select {
			case s.ch <- m.event:
			default:
				c.stats.EventsDropped++
				c.note(c.stats.EventsDropped, "QMP event dropped: its subscriber is full", "event", m.event.Event)
			}
		}
	default:
		c.stats.Stray++
		c.note(c.stats.Stray, "QMP message of no known kind dropped")
	}
}

// note logs the nth occurrence of something dropped when n is 1 or a power
// of two, so a peer that floods cannot flood the log too.
func (c *Client) note(n uint64, msg string, args ...any) {
	if bits.OnesCount64(n) == 1 {
		c.log.Warn(msg, append(args, "count", n)...)
	}
}

// closeWith ends the session with err as its reason, unless it has ended
// already. Closing the connection unblocks the reader and any write.
func (c *Client) closeWith(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err == nil {
		c.err = err
		c.conn.Close()
	}
}

// Close ends the session and waits for its reader to stop. QEMU keeps
// running. Calls in flight fail with an error wrapping ErrClosed.
func (c *Client) Close() error {
	c.closeWith(fmt.Errorf("%w by Close", ErrClosed))
	<-c.done
	return nil
}

// Done is closed when the session has ended: QEMU closed the connection,
// Close was called, a call's context ended before its reply, or QEMU broke
// the protocol. Err says which.
func (c *Client) Done() <-chan struct{} { return c.done }

// Err is nil while the session is open, and afterwards why it ended: an
// error wrapping ErrClosed and the cause.
func (c *Client) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// Error is a command that failed. Its Command names the QMP command.
type Error struct {
	Command string
	Err     error // a *CommandError (QEMU refused), ErrProtocol, or why the session ended
}

func (e *Error) Error() string { return "qmp " + e.Command + ": " + e.Err.Error() }

// Unwrap returns the underlying error.
func (e *Error) Unwrap() error { return e.Err }

// CommandError is QEMU's refusal of a command, e.g. class "GenericError",
// desc "Duplicate ID 'n1' for device".
type CommandError struct {
	Class, Desc string
}

func (e *CommandError) Error() string { return e.Desc + " (" + e.Class + ")" }

// Run executes command with args (nil for none; anything encoding/json
// marshals to an object) and decodes the "return" member into result (nil
// to ignore it).
//
// If ctx ends while Run waits for its turn (another command in flight),
// the command is not sent and the session is unaffected. If ctx ends after
// the command is sent and before its reply, the session is closed: Run's
// error and Err wrap ErrClosed and ctx's error, and every other call fails
// at once with ErrClosed.
func (c *Client) Run(ctx context.Context, command string, args any, result any) error {
	return c.run(ctx, command, args, nil, result)
}

func (c *Client) run(ctx context.Context, command string, args any, file *os.File, result any) error {
	var arguments json.RawMessage
	if args != nil {
		b, err := json.Marshal(args)
		if err != nil {
			return &Error{Command: command, Err: err}
		}
		if len(b) == 0 || b[0] != '{' {
			return &Error{Command: command, Err: fmt.Errorf("arguments %.40s are not a JSON object", b)}
		}
		arguments = b
	}

	select {
	case c.sem <- struct{}{}:
	case <-ctx.Done():
		return &Error{Command: command, Err: ctx.Err()}
	case <-c.done:
		return &Error{Command: command, Err: c.Err()}
	}
	defer func() { <-c.sem }()
	if err := ctx.Err(); err != nil {
		return &Error{Command: command, Err: err}
	}
	id := max(c.ids.Uint64()>>11, 1)
	req, err := json.Marshal(struct {
		Execute   string          `json:"execute"`
		Arguments json.RawMessage `json:"arguments,omitempty"`
		ID        uint64          `json:"id"`
	}{command, arguments, id})
	if err != nil {
		return &Error{Command: command, Err: err}
	}
	req = append(req, '\n')

	p := &pending{id: id, ch: make(chan message, 1)}
	c.mu.Lock()
	if c.err != nil {
		err := c.err
		c.mu.Unlock()
		return &Error{Command: command, Err: err}
	}
	c.pending = p
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		if c.pending == p {
			c.pending = nil
		}
		c.mu.Unlock()
	}()

	stop := context.AfterFunc(ctx, func() {
		c.closeWith(fmt.Errorf("%w: no reply to %s before its context ended: %w", ErrClosed, command, ctx.Err()))
	})
	defer stop()
	if err := c.send(req, file); err != nil {
		c.closeWith(fmt.Errorf("%w: send %s: %w", ErrClosed, command, err))
		return &Error{Command: command, Err: c.Err()}
	}

	var m message
	select {
	case m = <-p.ch:
	case <-c.done:
		select {
		case m = <-p.ch: // answered just before the end
		default:
			return &Error{Command: command, Err: c.Err()}
		}
	}
	if m.err != nil {
		return &Error{Command: command, Err: m.err}
	}
	if result == nil {
		return nil
	}
	if err := json.Unmarshal(m.ret, result); err != nil {
		return &Error{Command: command, Err: fmt.Errorf("%w: decode reply: %w", ErrProtocol, err)}
	}
	return nil
}

// send writes one command, with file's descriptor as SCM_RIGHTS if file is
// not nil.
func (c *Client) send(req []byte, file *os.File) error {
	if file == nil {
		_, err := c.conn.Write(req)
		return err
	}
	rc, err := file.SyscallConn()
	if err != nil {
		return err
	}
	var n int
	var werr error
	if err := rc.Control(func(fd uintptr) {
		n, _, werr = c.conn.WriteMsgUnix(req, unix.UnixRights(int(fd)), nil)
	}); err != nil {
		return err
	}
	if werr != nil {
		return werr
	}
	// The descriptor went with the first byte; the rest, if the socket took
	// only part, follows as plain data.
	_, err = c.conn.Write(req[n:])
	return err
}
