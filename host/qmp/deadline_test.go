package qmp

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"
)

// A peer that never greets: the handshake ends at its deadline.
func TestNoGreeting(t *testing.T) {
	ours, _ := socketpair(t)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if _, err := (Dialer{}).Handshake(ctx, ours); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Handshake with a silent peer = %v, want DeadlineExceeded", err)
	}
}

// A peer that stops answering after the handshake: the call ends at its
// deadline and leaves the session closed, saying why; a call waiting for
// its turn and every later call fail with ErrClosed, none waits for its
// own deadline.
func TestNoAnswer(t *testing.T) {
	got := make(chan struct{}, 8)
	_, c := newPeer(t, func(p *peer, cmd command) {
		if cmd.Execute == "qmp_capabilities" {
			p.reply(cmd, map[string]any{})
			return
		}
		got <- struct{}{} // and no answer, ever
	})
	long, cancel := context.WithTimeout(context.Background(), time.Hour)
	defer cancel()

	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	first := make(chan error, 1)
	go func() { first <- c.SystemPowerdown(ctx) }()
	<-got
	// A second caller, waiting for its turn behind the first, with a
	// context of its own that would outlast the test.
	second := make(chan error, 1)
	go func() { _, err := c.Status(long); second <- err }()

	if err := <-first; !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, ErrClosed) {
		t.Errorf("SystemPowerdown with no answer = %v, want DeadlineExceeded and ErrClosed", err)
	}
	if err := <-second; !errors.Is(err, ErrClosed) {
		t.Errorf("Status waiting behind it = %v, want ErrClosed", err)
	}
	select {
	case <-c.Done():
	default:
		t.Error("Done not closed after a call timed out")
	}
	if err := c.Err(); !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "system_powerdown") {
		t.Errorf("Err = %v, want DeadlineExceeded naming system_powerdown", err)
	}
	if err := c.Run(long, "query-status", nil, nil); !errors.Is(err, ErrClosed) {
		t.Errorf("Run after the timeout = %v, want ErrClosed", err)
	}
	c.Close()
}

// A caller whose context ends while it waits for its turn sends nothing,
// and the session goes on.
func TestTurnTimeout(t *testing.T) {
	release := make(chan struct{})
	_, c := newPeer(t, func(p *peer, cmd command) {
		if cmd.Execute == "stop" {
			go func() { <-release; p.reply(cmd, map[string]any{}) }()
			return
		}
		p.reply(cmd, map[string]any{"status": "running", "running": true})
	})
	long, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	stopped := make(chan error, 1)
	go func() { stopped <- c.Run(long, "stop", nil, nil) }()
	for {
		c.mu.Lock()
		inFlight := c.pending != nil
		c.mu.Unlock()
		if inFlight {
			break
		}
		time.Sleep(time.Millisecond)
	}
	short, cancel2 := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel2()
	if _, err := c.Status(short); !errors.Is(err, context.DeadlineExceeded) || errors.Is(err, ErrClosed) {
		t.Errorf("Status waiting for its turn = %v, want DeadlineExceeded without closing", err)
	}
	close(release)
	if err := <-stopped; err != nil {
		t.Errorf("stop = %v", err)
	}
	if _, err := c.Status(long); err != nil {
		t.Errorf("Status after = %v, want the session open", err)
	}
}

// A peer that never reads: the write blocks once the socket is full, and
// the deadline ends it.
func TestPeerNeverReads(t *testing.T) {
	ours, theirs := socketpair(t)
	go func() {
		theirs.Write([]byte(greeting + "\r\n"))
		// Answers the handshake, then reads nothing more.
		buf := make([]byte, 4096)
		n, _ := theirs.Read(buf)
		cmd := string(buf[:n])
		id := cmd[strings.Index(cmd, `"id":`)+5 : strings.LastIndex(cmd, "}")]
		theirs.Write([]byte(`{"return": {}, "id": ` + id + "}\r\n"))
	}()
	hctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := Dialer{}.Handshake(hctx, ours)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel2 := context.WithTimeout(context.Background(), time.Second)
	defer cancel2()
	// Far more than a socket buffer.
	_, err = c.HumanMonitorCommand(ctx, "echo "+strings.Repeat("x", 4<<20))
	if !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, ErrClosed) {
		t.Errorf("a 4 MiB command to a peer that reads nothing = %v, want DeadlineExceeded and ErrClosed", err)
	}
}

// An unplug whose guest never releases the device and whose QEMU never
// answers netdev_del still ends by its deadline; netdev_del is sent with
// time left.
func TestUnplugEndsByDeadline(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Second)
	defer cancel()
	var mu sync.Mutex
	var lateDel bool
	_, c := newPeer(t, func(p *peer, cmd command) {
		switch cmd.Execute {
		case "netdev_del":
			mu.Lock()
			lateDel = ctx.Err() != nil
			mu.Unlock()
			// no answer
		default:
			p.reply(cmd, map[string]any{}) // and no DEVICE_DELETED
		}
	})
	err := c.UnplugNIC(ctx, "n1")
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("UnplugNIC = %v, want DeadlineExceeded", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if lateDel {
		t.Error("netdev_del was sent after UnplugNIC's deadline")
	}
}

// The first step of a hot-plug (getfd, with the tap) whose QEMU never
// answers ends at its deadline, with the session closed and the error
// saying which command went unanswered.
func TestGetFDEndsByDeadline(t *testing.T) {
	_, c := newPeer(t, func(p *peer, cmd command) {
		if cmd.Execute == "qmp_capabilities" {
			p.reply(cmd, map[string]any{})
		}
		// getfd and the rest: no answer
	})
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	err := c.GetFD(ctx, "tap-n1", tapStandIn(t))
	if !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, ErrClosed) || !strings.Contains(err.Error(), "getfd") {
		t.Errorf("GetFD with no answer = %v, want DeadlineExceeded and ErrClosed, naming getfd", err)
	}
}
