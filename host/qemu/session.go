package qemu

import (
	"context"
	"fmt"
	"sync"

	"spectrum-os.org/netcfg/host/qmp"
)

// session is a Process's QMP session. host/qmp closes a session whose call
// ran out of time after its command was sent (QEMU answers in order, so
// nothing later would be answered); session then dials a new one on the
// same socket, whose monitor accepts it once QEMU has noticed the old
// connection close: a QEMU that was only slow (frozen by SIGSTOP, starved
// of CPU) gets its monitor back, where it used to stay unreachable until
// the VM restarted.
//
// mu guards the fields and is never held across a dial or a command:
// nothing that only reads the Process (its pid) waits on a frozen QEMU.
type session struct {
	path   string
	dialer qmp.Dialer

	mu      sync.Mutex
	cur     *qmp.Client
	redial  *redial // the dial under way, if any
	exited  bool    // QEMU has exited: cur is closed and never replaced
	exitErr error
}

// redial is one dial shared by every caller that found the session closed
// while it ran.
type redial struct {
	done    chan struct{} // closed when the dial has ended; err is set by then
	err     error
	waiters int                // callers waiting for it (guarded by session.mu)
	cancel  context.CancelFunc // gives the dial up
}

// get returns the session, dialling a new one if it has closed and QEMU
// runs. It waits at most until ctx ends; the dial goes on while any caller
// waits for it and is given up when the last one stops waiting (or QEMU
// exits), so a QEMU that never answers costs no more than its callers'
// deadlines. The session it returns may close at any time: a call on it
// then fails with qmp.ErrClosed, and the next get dials again.
func (s *session) get(ctx context.Context) (*qmp.Client, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.exited {
		return nil, s.exitErr
	}
	old := s.cur
	if old.Err() == nil {
		return old, nil
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("qmp: new session on %s: %w (the last one: %w)", s.path, err, old.Err())
	}
	r := s.redial
	if r == nil {
		r = s.dial()
	}
	r.waiters++
	s.mu.Unlock()
	select {
	case <-r.done:
	case <-ctx.Done():
	}
	s.mu.Lock()
	r.waiters--
	select {
	case <-r.done:
	default:
		if r.waiters == 0 {
			r.cancel()
			if s.redial == r {
				s.redial = nil // the next caller dials afresh
			}
		}
		return nil, fmt.Errorf("qmp: new session on %s: %w (the last one: %w)", s.path, ctx.Err(), old.Err())
	}
	switch {
	case s.exited:
		return nil, s.exitErr
	case r.err != nil:
		return nil, r.err
	}
	return s.cur, nil
}

// dial starts a redial; the caller holds mu.
func (s *session) dial() *redial {
	ctx, cancel := context.WithCancel(context.Background())
	r := &redial{done: make(chan struct{}), cancel: cancel}
	s.redial = r
	old := s.cur
	go func() {
		c, err := s.dialer.Dial(ctx, s.path)
		cancel()
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.redial == r {
			s.redial = nil
		}
		switch {
		case err != nil:
			err = fmt.Errorf("%w; after the last one ended: %w", err, old.Err())
		case s.exited || s.cur != old:
			// QEMU exited meanwhile, or a later dial (after this one was
			// given up) got there first.
			c.Close()
		default:
			s.cur = c
		}
		r.err = err
		close(r.done)
	}()
	return r
}

// close ends the session for good once QEMU has exited; err says why.
func (s *session) close(err error) {
	s.mu.Lock()
	s.exited, s.exitErr = true, err
	if s.redial != nil {
		s.redial.cancel()
	}
	c := s.cur
	s.mu.Unlock()
	c.Close()
}
