package qemu

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"spectrum-os.org/netcfg/host/link"
	"spectrum-os.org/netcfg/host/qmp"
	"spectrum-os.org/netcfg/internal/mac"
	"spectrum-os.org/netcfg/internal/nstest"
)

// TestRedialAfterFreeze: a QEMU frozen by SIGSTOP (a hung VMM) while a NIC
// is hot-plugged. The hot-plug ends at its deadline and host/qmp closes the
// session; while QEMU stays frozen no new session can be had either, within
// the caller's deadline. After SIGCONT the next hot-plug dials a new
// session on the same socket and works, and the same after an unplug cut
// short, whose netdev the new session deletes. (Before, the Process kept the
// closed session, and every later hot-plug, unplug and power-down failed at
// once with qmp.ErrClosed until the VM restarted.)
func TestRedialAfterFreeze(t *testing.T) {
	requireQEMU(t)
	ns := nstest.New(t)
	n, err := link.OpenPath(ns.Path(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	for _, id := range []mac.LinkID{1, 2} {
		if err := n.Create(id); err != nil {
			t.Fatal(err)
		}
	}
	// plug hot-plugs the provider side of link as NIC id, with a tap of
	// its own that it closes afterwards: only what QEMU holds gives a tap
	// carrier.
	plug := func(ctx context.Context, p *Process, id string, l mac.LinkID) error {
		tap, err := n.OpenTap(l, mac.Provider)
		if err != nil {
			t.Fatal(err)
		}
		defer tap.Close()
		return p.HotplugNIC(ctx, NIC{ID: id, MAC: l.MAC(mac.Provider), Tap: tap})
	}

	ctx := testContext(t, 90*time.Second)
	p, _ := start(t, ctx, testConfig(t))
	old := monitor(t, ctx, p)
	if err := syscall.Kill(p.Pid(), syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	frozen := true
	defer func() {
		if frozen {
			syscall.Kill(p.Pid(), syscall.SIGCONT)
		}
	}()

	hctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	if err := plug(hctx, p, "lost", 1); !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, qmp.ErrClosed) {
		t.Fatalf("HotplugNIC into a frozen QEMU = %v, want DeadlineExceeded and ErrClosed", err)
	}
	if err := old.Err(); !errors.Is(err, qmp.ErrClosed) {
		t.Fatalf("session after a call ran out of time: %v, want closed", err)
	}
	// Still frozen: a new session cannot be had, and each caller waits
	// only until its own deadline (they share one dial: TestRedialShared).
	errs := make(chan error, 2)
	for _, d := range []time.Duration{300 * time.Millisecond, time.Second} {
		go func() {
			qctx, cancel := context.WithTimeout(ctx, d)
			defer cancel()
			_, err := p.QMP(qctx)
			errs <- err
		}()
	}
	for range 2 {
		if err := <-errs; !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, qmp.ErrClosed) {
			t.Errorf("QMP of a frozen QEMU = %v, want DeadlineExceeded, and the last session's ErrClosed", err)
		}
	}

	if err := syscall.Kill(p.Pid(), syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	frozen = false
	if err := plug(ctx, p, "second", 2); err != nil {
		t.Fatalf("HotplugNIC after SIGCONT: %v", err)
	}
	q := monitor(t, ctx, p)
	if q == old {
		t.Error("QMP after SIGCONT returned the closed session")
	}
	if st, err := q.Status(ctx); err != nil || !st.Running {
		t.Errorf("query-status on the new session = %+v, %v; want running", st, err)
	}
	// Whatever QEMU made of the lost hot-plug once it ran again, the new
	// session undid it before the next hot-plug: QEMU holds no tap and no
	// netdev of it.
	if got := carrier(t, ns); !slices.Equal(got, []string{"spp-0002"}) {
		t.Errorf("taps with carrier after the hot-plug on the new session = %v, want only spp-0002", got)
	}
	if info := network(t, ctx, q); !strings.Contains(info, "second: index=0,type=tap") || !strings.Contains(info, "macaddr="+mac.LinkID(2).MAC(mac.Provider).String()) || strings.Contains(info, "lost") {
		t.Errorf("info network: want the NIC hot-plugged after SIGCONT and nothing of the lost one:\n%s", info)
	}

	// The same for an unplug: frozen, it ends at its deadline; once QEMU
	// runs again, the next hot-plug's new session deletes the netdev the
	// lost unplug left (the stub guest never releases the device), so
	// QEMU lets go of that tap too.
	if err := syscall.Kill(p.Pid(), syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	frozen = true
	uctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	if err := p.UnplugNIC(uctx, "second"); !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, qmp.ErrClosed) {
		t.Fatalf("UnplugNIC from a frozen QEMU = %v, want DeadlineExceeded and ErrClosed", err)
	}
	if err := syscall.Kill(p.Pid(), syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	frozen = false
	if err := plug(ctx, p, "third", 1); err != nil {
		t.Fatalf("HotplugNIC after the second SIGCONT: %v", err)
	}
	if got := carrier(t, ns); !slices.Equal(got, []string{"spp-0001"}) {
		t.Errorf("taps with carrier after the lost unplug = %v, want only spp-0001 (the third NIC)", got)
	}
	if info := network(t, ctx, monitor(t, ctx, p)); !strings.Contains(info, "third: index=0,type=tap") {
		t.Errorf("info network lacks the third NIC:\n%s", info)
	}
}

// network is QEMU's "info network".
func network(t *testing.T, ctx context.Context, q *qmp.Client) string {
	t.Helper()
	info, err := q.HumanMonitorCommand(ctx, "info network")
	if err != nil {
		t.Fatal(err)
	}
	return info
}

// newTestSession is a session on m whose first session (m's connection 0)
// has ended, as after a call that ran out of time.
func newTestSession(t *testing.T, m *fakeMonitor) *session {
	t.Helper()
	ctx := testContext(t, 10*time.Second)
	c, err := qmp.Dial(ctx, m.path)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	return &session{path: m.path, cur: c}
}

// waitFor polls cond until it holds, failing the test after 10 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no %s in 10 s", what)
		}
	}
}

// waiting tells whether n callers wait for s's redial.
func (s *session) waiting(n int) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.redial != nil && s.redial.waiters == n
}

// TestRedialShared: callers that find the session closed share one dial
// (one connection to QEMU), and each gets the new session once QEMU
// greets; later callers get it without dialling.
func TestRedialShared(t *testing.T) {
	m := newFakeMonitor(t)
	greet := m.gate(1)
	s := newTestSession(t, m)
	ctx := testContext(t, 20*time.Second)
	const n = 3
	type result struct {
		c   *qmp.Client
		err error
	}
	results := make(chan result, n)
	for range n {
		go func() {
			c, err := s.get(ctx)
			results <- result{c, err}
		}()
	}
	waitFor(t, fmt.Sprintf("%d callers waiting for one dial", n), func() bool { return s.waiting(n) })
	close(greet)
	var first *qmp.Client
	for range n {
		r := <-results
		if r.err != nil {
			t.Fatalf("get: %v", r.err)
		}
		if first == nil {
			first = r.c
		} else if r.c != first {
			t.Error("concurrent callers got different sessions")
		}
	}
	if err := first.Run(ctx, "query-status", nil, nil); err != nil {
		t.Errorf("a command on the new session: %v", err)
	}
	if c, err := s.get(ctx); err != nil || c != first {
		t.Errorf("get after the redial = %p, %v; want the new session %p", c, err, first)
	}
	if got := m.accepted(); got != 2 {
		t.Errorf("QEMU accepted %d connections, want 2: the first session and one redial for %d callers", got, n)
	}
}

// TestRedialBounded: each caller waits only until its own context ends;
// the dial goes on while any caller waits, and is given up (its connection
// closed) when the last one stops waiting. The next caller dials afresh.
func TestRedialBounded(t *testing.T) {
	m := newFakeMonitor(t)
	m.gate(1) // this QEMU never greets
	s := newTestSession(t, m)
	ctx := testContext(t, 20*time.Second)
	long, cancelLong := context.WithCancel(ctx)
	defer cancelLong()
	longErr := make(chan error, 1)
	go func() {
		_, err := s.get(long)
		longErr <- err
	}()
	waitFor(t, "a caller waiting for the dial", func() bool { return s.waiting(1) })

	short, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	if _, err := s.get(short); !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, qmp.ErrClosed) {
		t.Errorf("get with a short deadline = %v, want DeadlineExceeded and the last session's ErrClosed", err)
	}
	if !s.waiting(1) || m.early.Load() != 0 {
		t.Fatal("the dial was given up while a caller still waited for it")
	}
	cancelLong()
	if err := <-longErr; !errors.Is(err, context.Canceled) {
		t.Errorf("get whose context was cancelled = %v, want Canceled", err)
	}
	waitFor(t, "the dial given up (its connection closed)", func() bool { return m.early.Load() == 1 })

	if _, err := s.get(ctx); err != nil {
		t.Fatalf("get once QEMU greets: %v", err)
	}
	if got := m.accepted(); got != 3 {
		t.Errorf("QEMU accepted %d connections, want 3: the first, the given-up dial, a new one", got)
	}
}

// TestRedialExit: once QEMU has exited, a caller waiting for a dial gets
// the exit's error, the dial is given up, and no later call dials.
func TestRedialExit(t *testing.T) {
	m := newFakeMonitor(t)
	m.gate(1)
	s := newTestSession(t, m)
	ctx := testContext(t, 20*time.Second)
	errs := make(chan error, 1)
	go func() {
		_, err := s.get(ctx)
		errs <- err
	}()
	waitFor(t, "a caller waiting for the dial", func() bool { return s.waiting(1) })
	exited := fmt.Errorf("QEMU has exited: %w", qmp.ErrClosed)
	s.close(exited)
	if err := <-errs; err != exited {
		t.Errorf("get while QEMU exits = %v, want %v", err, exited)
	}
	waitFor(t, "the dial given up", func() bool { return m.early.Load() == 1 })
	if _, err := s.get(ctx); err != exited {
		t.Errorf("get after QEMU exited = %v, want %v", err, exited)
	}
	if got := m.accepted(); got != 2 {
		t.Errorf("QEMU accepted %d connections, want 2: no dial after the exit", got)
	}
}
