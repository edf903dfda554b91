package qmp

import (
	"context"
	"errors"
	"fmt"
	"io"
	"syscall"
)

// Status is QEMU's answer to query-status.
type Status struct {
	Running bool   `json:"running"`
	Status  string `json:"status"` // "running", "prelaunch", "paused", "shutdown", ...
}

// Status queries the VM's run state. The answer is checked: a state name
// (lower-case letters and '-') that agrees with Running.
func (c *Client) Status(ctx context.Context) (Status, error) {
	var s Status
	if err := c.Run(ctx, "query-status", nil, &s); err != nil {
		return Status{}, err
	}
	if !runState(s.Status) || s.Running != (s.Status == "running") {
		return Status{}, &Error{Command: "query-status", Err: fmt.Errorf("%w: status %q with running %v", ErrProtocol, s.Status, s.Running)}
	}
	return s, nil
}

// runState reports whether s can be one of QEMU's RunState names.
func runState(s string) bool {
	if s == "" || len(s) > 32 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !('a' <= c && c <= 'z' || c == '-') {
			return false
		}
	}
	return true
}

// Cont resumes a VM that QEMU started paused (-S) or that was stopped.
// Starting QEMU paused and resuming it once the handshake is done means
// the greeting and the negotiation happen before any guest code runs.
func (c *Client) Cont(ctx context.Context) error {
	return c.Run(ctx, "cont", nil, nil)
}

// SystemPowerdown presses the virtual power button (ACPI). A guest that
// handles it shuts down and QEMU exits; one that does not ignores it, so
// callers pair it with a timeout and a kill.
func (c *Client) SystemPowerdown(ctx context.Context) error {
	return c.Run(ctx, "system_powerdown", nil, nil)
}

// Quit makes QEMU exit at once, without asking the guest. QEMU may exit
// before its reply is read: the connection ending is then the answer.
func (c *Client) Quit(ctx context.Context) error {
	err := c.Run(ctx, "quit", nil, nil)
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET) {
		return nil
	}
	return err
}

// HumanMonitorCommand runs a human monitor (HMP) command, e.g. "info
// network", and returns its output. Meant for tests and diagnostics: HMP
// output is not a stable interface, and it is QEMU's text, unfiltered.
func (c *Client) HumanMonitorCommand(ctx context.Context, cmd string) (string, error) {
	var out string
	err := c.Run(ctx, "human-monitor-command", map[string]string{"command-line": cmd}, &out)
	return out, err
}
