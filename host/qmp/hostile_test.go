package qmp

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// The tests in this file play a QEMU that a guest has broken into: a peer
// that lies, floods and hangs. Each names what it would do to a client that
// trusted it.

// A 64 MiB greeting: the client reads no more than MaxLine of it, and the
// heap does not grow with it.
func TestGreetingTooLong(t *testing.T) {
	ours, theirs := socketpair(t)
	huge := []byte(`{"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7}, "package": "` +
		strings.Repeat("A", 64<<20) + `"}, "capabilities": []}}` + "\r\n")
	go theirs.Write(huge) // fails with EPIPE once the client gives up
	var err error
	grew := peakHeap(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_, err = Dialer{}.Handshake(ctx, ours)
	})
	if !errors.Is(err, ErrLineTooLong) {
		t.Errorf("Handshake with a 64 MiB greeting = %v, want ErrLineTooLong", err)
	}
	t.Logf("heap grew by %d KiB at most", grew>>10)
	if grew > 16<<20 {
		t.Errorf("heap grew by %d MiB reading a 64 MiB greeting, want well under 16 MiB (MaxLine is %d KiB)", grew>>20, DefaultMaxLine>>10)
	}
}

func TestGreetingChecked(t *testing.T) {
	for _, tt := range []struct{ name, greeting string }{
		{"not JSON", `QMP ready`},
		{"not an object", `["QMP"]`},
		{"no QMP member", `{"qmp": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7}, "package": ""}, "capabilities": []}}`},
		{"no version", `{"QMP": {"capabilities": []}}`},
		{"no package", `{"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7}}, "capabilities": []}}`},
		{"version not numbers", `{"QMP": {"version": {"qemu": {"micro": "0", "minor": 2, "major": 7}, "package": ""}, "capabilities": []}}`},
		{"negative version", `{"QMP": {"version": {"qemu": {"micro": 0, "minor": -2, "major": 7}, "package": ""}, "capabilities": []}}`},
		{"no capabilities", `{"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7}, "package": ""}}}`},
		{"a reply instead", `{"return": {}}`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ours, theirs := socketpair(t)
			startPeer(t, theirs, tt.greeting, answering(func(string, map[string]any) (any, string, []string) { return nil, "", nil }))
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			c, err := Dialer{}.Handshake(ctx, ours)
			if !errors.Is(err, ErrProtocol) {
				t.Errorf("Handshake = %v, want ErrProtocol", err)
			}
			if c != nil {
				c.Close()
			}
		})
	}
}

// A line over 64 KiB, then a valid reply: the session ends at once with
// ErrLineTooLong, rather than its reader stopping for good (Done never
// closed, no event ever again) and a command waiting out its deadline.
func TestLineTooLong(t *testing.T) {
	long := `{"event": "X", "data": {"pad": "` + strings.Repeat("x", 100<<10) + `"}, "timestamp": {"seconds": 1, "microseconds": 0}}`
	running := map[string]any{"running": true, "status": "running"}
	for _, tt := range []struct {
		name  string
		idle  bool // the line comes while no command waits
		check func(t *testing.T, c *Client, err error)
	}{
		{name: "in reply"},
		{name: "while idle", idle: true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, c := newPeer(t, func(p *peer, cmd command) {
				if cmd.Execute == "qmp_capabilities" {
					p.reply(cmd, map[string]any{})
					if tt.idle {
						p.line(long)
						p.reply(command{ID: json.RawMessage("1")}, running)
					}
					return
				}
				if !tt.idle {
					p.line(long)
				}
				p.reply(cmd, running)
			})
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if tt.idle {
				select {
				case <-c.Done():
				case <-ctx.Done():
					t.Fatal("Done not closed after a 100 KiB line: the reader is wedged")
				}
			}
			_, err := c.Status(ctx)
			if !errors.Is(err, ErrLineTooLong) || !errors.Is(err, ErrClosed) || errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("Status after a 100 KiB line = %v, want ErrClosed and ErrLineTooLong (not a deadline)", err)
			}
			<-c.Done()
			if !errors.Is(c.Err(), ErrLineTooLong) || !errors.Is(c.Err(), ErrClosed) {
				t.Errorf("Err = %v, want ErrClosed and ErrLineTooLong", c.Err())
			}
		})
	}
}

// Unsolicited replies (no id, another id, an id of another type, the id
// again) before the real one, and one while no command waits: every
// command gets its own answer.
func TestUnsolicitedReplies(t *testing.T) {
	var n atomic.Int64
	p, c := newPeer(t, func(p *peer, cmd command) {
		if cmd.Execute == "qmp_capabilities" {
			p.reply(cmd, map[string]any{})
			return
		}
		i := n.Add(1)
		paused := `{"status": "paused", "running": false, "singlestep": false}`
		for _, stray := range []string{
			`{"return": ` + paused + `}`,
			`{"return": ` + paused + `, "id": 999}`,
			`{"return": ` + paused + `, "id": "` + string(cmd.ID) + `"}`,
			`{"return": ` + paused + `, "id": -1}`,
			`{"error": {"class": "GenericError", "desc": "stray"}}`,
			`{"RETURN": ` + paused + `, "ID": ` + string(cmd.ID) + `}`,
		} {
			p.line(stray)
		}
		p.reply(cmd, map[string]any{"status": "running", "running": true, "n": i})
		p.line(`{"return": ` + paused + `, "id": ` + string(cmd.ID) + `}`) // the same id, again
		next, _ := strconv.ParseUint(string(cmd.ID), 10, 64)
		p.line(`{"return": ` + paused + `, "id": ` + fmt.Sprint(next+1) + `}`) // a guess at the next command's id
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for i := 1; i <= 3; i++ {
		var got struct {
			Status string `json:"status"`
			N      int64  `json:"n"`
		}
		if err := c.Run(ctx, "query-status", nil, &got); err != nil {
			t.Fatal(err)
		}
		if got.Status != "running" || got.N != int64(i) {
			t.Errorf("answer %d = %+v, want its own (running, n=%d)", i, got, i)
		}
	}
	// 6 before each reply, 2 after; the last command's 2 after may still
	// be on their way.
	if s := c.Stats(); s.Stray < 3*6+2*2 {
		t.Errorf("Stats = %+v, want at least %d stray", s, 3*6+2*2)
	}
	ids := map[uint64]bool{}
	for _, cmd := range p.received() {
		ids[mustID(t, cmd.ID)] = true
	}
	if len(ids) != 4 {
		t.Errorf("4 commands had %d distinct ids, want 4", len(ids))
	}
}

func mustID(t *testing.T, raw json.RawMessage) uint64 {
	var id uint64
	if err := json.Unmarshal(raw, &id); err != nil {
		t.Fatalf("command id %s: %v", raw, err)
	}
	return id
}

// Error replies that say nothing, and replies that are neither a return
// nor an error, are errors; the session goes on.
func TestErrorRepliesChecked(t *testing.T) {
	for _, tt := range []struct {
		name, reply string // %s: the command's id
		want        error
	}{
		{"empty desc", `{"error": {"class": "GenericError", "desc": ""}, "id": %s}`, ErrProtocol},
		{"no desc", `{"error": {"class": "GenericError"}, "id": %s}`, ErrProtocol},
		{"empty class", `{"error": {"class": "", "desc": "no"}, "id": %s}`, ErrProtocol},
		{"no class", `{"error": {"desc": "no"}, "id": %s}`, ErrProtocol},
		{"empty error", `{"error": {}, "id": %s}`, ErrProtocol},
		{"null error", `{"error": null, "id": %s}`, ErrProtocol},
		{"error not an object", `{"error": "no", "id": %s}`, ErrProtocol},
		{"desc not a string", `{"error": {"class": "GenericError", "desc": 1}, "id": %s}`, ErrProtocol},
		{"return and error", `{"return": {}, "error": {"class": "GenericError", "desc": "no"}, "id": %s}`, ErrProtocol},
		{"return of the wrong type", `{"return": [1, 2], "id": %s}`, ErrProtocol},
		{"refusal", `{"error": {"class": "DeviceNotFound", "desc": "Device 'n1' not found"}, "id": %s}`, &CommandError{Class: "DeviceNotFound", Desc: "Device 'n1' not found"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, c := newPeer(t, func(p *peer, cmd command) {
				switch cmd.Execute {
				case "qmp_capabilities", "query-status":
					p.reply(cmd, map[string]any{"status": "running", "running": true})
				default:
					id := string(cmd.ID)
					if id == "" {
						id = "null" // a client that sends no id
					}
					p.line(fmt.Sprintf(tt.reply, id))
				}
			})
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			// No result, as UnplugNIC runs device_del: the error alone
			// must say it failed.
			var result any
			if tt.name == "return of the wrong type" {
				result = &map[string]any{}
			}
			err := c.Run(ctx, "device_del", map[string]string{"id": "n1"}, result)
			if ce, ok := tt.want.(*CommandError); ok {
				var got *CommandError
				if !errors.As(err, &got) || *got != *ce {
					t.Errorf("Run = %v, want %v", err, ce)
				}
			} else if !errors.Is(err, tt.want) {
				t.Errorf("Run = %v, want %v", err, tt.want)
			}
			if _, err := c.Status(ctx); err != nil {
				t.Errorf("Status after the bad reply = %v, want the session to go on", err)
			}
		})
	}
}

// Lines that are not JSON objects end the session: nothing after them can
// be trusted to be framed as QEMU framed it.
func TestNotJSONEndsSession(t *testing.T) {
	for _, line := range []string{`not json`, `[1]`, `{"return": {}`, `"x"`} {
		t.Run(line, func(t *testing.T) {
			_, c := newPeer(t, func(p *peer, cmd command) {
				if cmd.Execute == "qmp_capabilities" {
					p.reply(cmd, map[string]any{})
					return
				}
				p.line(line)
				p.reply(cmd, map[string]any{})
			})
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			err := c.Run(ctx, "stop", nil, nil)
			if !errors.Is(err, ErrProtocol) || !errors.Is(err, ErrClosed) {
				t.Errorf("Run after %q = %v, want ErrProtocol and ErrClosed", line, err)
			}
		})
	}
}

// A flood of events, from before the handshake's reply and all through the
// session: commands complete with their own answers, an unplug finds its
// DEVICE_DELETED among the flood, and the heap stays bounded.
func TestEventFlood(t *testing.T) {
	const flood = 5000
	ev := func(name, device string) string {
		return fmt.Sprintf(`{"event": %q, "data": {"device": %q, "path": "/machine/peripheral/%s", "pad": %q}, "timestamp": {"seconds": 1, "microseconds": 0}}`,
			name, device, device, strings.Repeat("p", 256))
	}
	burst := func(p *peer, n int) {
		for i := 0; i < n; i++ {
			if p.line(ev("DEVICE_DELETED", fmt.Sprintf("other%d", i))) != nil {
				return
			}
		}
	}
	ours, theirs := socketpair(t)
	startPeer(t, theirs, greeting, func(p *peer, cmd command) {
		switch cmd.Execute {
		case "qmp_capabilities":
			burst(p, 100)
			p.reply(cmd, map[string]any{})
			// And on, until the client closes.
			go func() {
				for p.line(ev("VSERPORT_CHANGE", "console")) == nil {
				}
			}()
		case "query-status":
			burst(p, flood)
			p.reply(cmd, map[string]any{"status": "running", "running": true})
		case "device_del":
			p.reply(cmd, map[string]any{})
			burst(p, flood)
			p.line(ev("DEVICE_DELETED", cmd.Arguments["id"].(string)))
		default:
			p.reply(cmd, map[string]any{})
		}
	})
	var c *Client
	grew := peakHeap(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		var err error
		c, err = Dialer{}.Handshake(ctx, ours)
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 2; i++ {
			st, err := c.Status(ctx)
			if err != nil || !st.Running {
				t.Fatalf("Status during a flood = %+v, %v; want running", st, err)
			}
		}
		if err := c.UnplugNIC(ctx, "n1"); err != nil {
			t.Errorf("UnplugNIC during a flood = %v", err)
		}
	})
	defer c.Close()
	s := c.Stats()
	t.Logf("heap grew by %d KiB at most; %+v", grew>>10, s)
	if s.Events < 3*flood {
		t.Errorf("Stats = %+v, want at least %d events", s, 3*flood)
	}
	if grew > 32<<20 {
		t.Errorf("heap grew by %d MiB during an event flood, want under 32 MiB", grew>>20)
	}
}

// Malformed events are dropped and counted; an unplug is not fooled by a
// DEVICE_DELETED without a timestamp.
func TestEventsChecked(t *testing.T) {
	bad := []string{
		`{"event": "", "timestamp": {"seconds": 1, "microseconds": 0}}`,
		`{"event": "device_deleted", "data": {"device": "n1"}, "timestamp": {"seconds": 1, "microseconds": 0}}`,
		`{"event": 1, "timestamp": {"seconds": 1, "microseconds": 0}}`,
		`{"event": "DEVICE_DELETED", "data": {"device": "n1"}}`,
		`{"event": "DEVICE_DELETED", "data": {"device": "n1"}, "timestamp": {"seconds": 1, "microseconds": 1000000}}`,
		`{"event": "DEVICE_DELETED", "data": ["n1"], "timestamp": {"seconds": 1, "microseconds": 0}}`,
	}
	_, c := newPeer(t, answering(func(cmd string, _ map[string]any) (any, string, []string) {
		if cmd == "device_del" {
			return nil, "", bad
		}
		return nil, "", nil
	}))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := c.UnplugNIC(ctx, "n1"); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("UnplugNIC with only malformed DEVICE_DELETED = %v, want DeadlineExceeded", err)
	}
	if s := c.Stats(); s.EventsDropped != uint64(len(bad)) || s.Events != uint64(len(bad)) {
		t.Errorf("Stats = %+v, want %d events, all dropped", s, len(bad))
	}
}
