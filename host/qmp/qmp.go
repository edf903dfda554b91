// Package qmp is spectrumd's client for QEMU's machine protocol (QMP): the
// commands the daemon needs to supervise a VM and to hot-plug network links.
//
// It builds on github.com/digitalocean/go-qemu/qmp, which speaks the
// protocol (greeting, capabilities negotiation, command/response framing,
// events). That library can already pass a file descriptor with a command
// (SocketMonitor.RunWithFile sends it as SCM_RIGHTS on the unix socket, which
// QEMU accepts on monitors that advertise the "oob" capability, as every
// socket chardev monitor does), so hot-plugging a tap needs no protocol code
// of our own: getfd with the tap, then netdev_add and device_add.
//
// A Client never writes to the guest: QMP talks to QEMU, not to the VM.
package qmp

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"sync"
	"time"

	dq "github.com/digitalocean/go-qemu/qmp"
)

// Client is a connected, negotiated QMP session. Its methods are safe for
// concurrent use; commands are serialised on the one connection.
type Client struct {
	mon *dq.SocketMonitor

	mu     sync.Mutex
	subs   map[*subscription]struct{}
	closed chan struct{} // closed when the event stream ends (QEMU gone or Close)
	once   sync.Once
}

// Event is an asynchronous QMP event, e.g. SHUTDOWN or DEVICE_DELETED.
type Event = dq.Event

type subscription struct {
	match func(Event) bool
	ch    chan Event
}

// Dial connects to the QMP socket at path and negotiates capabilities. ctx
// bounds the handshake only: if QEMU has not sent its greeting by then, the
// connection is closed and Dial fails.
func Dial(ctx context.Context, path string) (*Client, error) {
	timeout := 10 * time.Second
	if d, ok := ctx.Deadline(); ok {
		timeout = time.Until(d)
	}
	mon, err := dq.NewSocketMonitor("unix", path, timeout)
	if err != nil {
		return nil, fmt.Errorf("qmp: dial %s: %w", path, err)
	}
	done := make(chan error, 1)
	go func() { done <- mon.Connect() }()
	select {
	case err = <-done:
	case <-ctx.Done():
		mon.Disconnect()
		<-done
		err = ctx.Err()
	}
	if err != nil {
		mon.Disconnect()
		return nil, fmt.Errorf("qmp: handshake on %s: %w", path, err)
	}
	events, err := mon.Events(context.Background())
	if err != nil {
		mon.Disconnect()
		return nil, fmt.Errorf("qmp: events on %s: %w", path, err)
	}
	c := &Client{mon: mon, subs: map[*subscription]struct{}{}, closed: make(chan struct{})}
	// The library delivers events on an unbuffered channel from the same
	// goroutine that delivers command responses: events must be drained
	// all the time, or a command waiting for its response would hang.
	go c.dispatch(events)
	return c, nil
}

func (c *Client) dispatch(events <-chan Event) {
	for ev := range events {
		c.mu.Lock()
		for s := range c.subs {
			if s.match(ev) {
				select {
				case s.ch <- ev:
				default: // the subscriber already has one; it only needs one
				}
			}
		}
		c.mu.Unlock()
	}
	close(c.closed)
}

// subscribe registers interest in events before the command that causes
// them is sent, so an event that arrives before the caller waits is kept.
func (c *Client) subscribe(match func(Event) bool) (*subscription, func()) {
	s := &subscription{match: match, ch: make(chan Event, 1)}
	c.mu.Lock()
	c.subs[s] = struct{}{}
	c.mu.Unlock()
	return s, func() {
		c.mu.Lock()
		delete(c.subs, s)
		c.mu.Unlock()
	}
}

// Close ends the session. QEMU keeps running.
func (c *Client) Close() error {
	var err error
	c.once.Do(func() { err = c.mon.Disconnect() })
	return err
}

// Done is closed when the connection ends: QEMU exited or Close was called.
func (c *Client) Done() <-chan struct{} { return c.closed }

// Error is a command QEMU refused. Its Command names the QMP command.
type Error struct {
	Command string
	Err     error // QEMU's description, or the transport error
}

func (e *Error) Error() string { return "qmp " + e.Command + ": " + e.Err.Error() }

// Unwrap returns the underlying error.
func (e *Error) Unwrap() error { return e.Err }

// Run executes command with args (nil for none; anything encoding/json
// marshals to an object) and decodes the "return" member into result (nil to
// ignore it). If ctx ends first the connection is closed, because the
// protocol cannot abandon one command and go on with the next; the Client
// is unusable afterwards.
func (c *Client) Run(ctx context.Context, command string, args any, result any) error {
	return c.run(ctx, command, args, nil, result)
}

func (c *Client) run(ctx context.Context, command string, args any, file *os.File, result any) error {
	req, err := json.Marshal(dq.Command{Execute: command, Args: args})
	if err != nil {
		return &Error{Command: command, Err: err}
	}
	type reply struct {
		out []byte
		err error
	}
	done := make(chan reply, 1)
	go func() {
		var r reply
		if file != nil {
			r.out, r.err = c.mon.RunWithFile(req, file)
		} else {
			r.out, r.err = c.mon.Run(req)
		}
		done <- r
	}()
	var r reply
	select {
	case r = <-done:
	case <-ctx.Done():
		c.Close()
		return &Error{Command: command, Err: ctx.Err()}
	}
	if r.err != nil {
		return &Error{Command: command, Err: r.err}
	}
	if result == nil {
		return nil
	}
	var resp struct {
		Return json.RawMessage `json:"return"`
	}
	if err := json.Unmarshal(r.out, &resp); err != nil {
		return &Error{Command: command, Err: fmt.Errorf("decode reply: %w", err)}
	}
	if err := json.Unmarshal(resp.Return, result); err != nil {
		return &Error{Command: command, Err: fmt.Errorf("decode reply: %w", err)}
	}
	return nil
}

// Status is QEMU's answer to query-status.
type Status struct {
	Running bool   `json:"running"`
	Status  string `json:"status"` // "running", "prelaunch", "paused", "shutdown", ...
}

// Status queries the VM's run state.
func (c *Client) Status(ctx context.Context) (Status, error) {
	var s Status
	err := c.Run(ctx, "query-status", nil, &s)
	return s, err
}

// SystemPowerdown presses the virtual power button (ACPI). A guest that
// handles it shuts down and QEMU exits; one that does not ignores it, so
// callers pair it with a timeout and a kill.
func (c *Client) SystemPowerdown(ctx context.Context) error {
	return c.Run(ctx, "system_powerdown", nil, nil)
}

// Quit makes QEMU exit at once, without asking the guest.
func (c *Client) Quit(ctx context.Context) error {
	err := c.Run(ctx, "quit", nil, nil)
	if err != nil {
		// QEMU may exit before its reply is read; the connection ending
		// is then the answer.
		select {
		case <-c.closed:
			return nil
		case <-time.After(time.Second):
		}
	}
	return err
}

// HumanMonitorCommand runs a human monitor (HMP) command, e.g. "info
// network", and returns its output. Meant for tests and diagnostics: HMP
// output is not a stable interface.
func (c *Client) HumanMonitorCommand(ctx context.Context, cmd string) (string, error) {
	var out string
	err := c.Run(ctx, "human-monitor-command", map[string]string{"command-line": cmd}, &out)
	return out, err
}
