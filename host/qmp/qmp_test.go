package qmp

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func tapStandIn(t *testing.T) *os.File {
	f, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// GetFD sends the descriptor with getfd, as SCM_RIGHTS.
func TestGetFD(t *testing.T) {
	f, c := newPeer(t, answering(func(string, map[string]any) (any, string, []string) { return nil, "", nil }))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := c.GetFD(ctx, "tap-link-a546", tapStandIn(t)); err != nil {
		t.Fatal(err)
	}
	if err := c.Run(ctx, "closefd", map[string]string{"fdname": "tap-link-a546"}, nil); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"getfd+fd", "closefd"}, f.commands()); diff != "" {
		t.Errorf("commands (-want +got):\n%s", diff)
	}
	var args []map[string]any
	for _, cmd := range f.received()[1:] {
		args = append(args, cmd.Arguments)
	}
	if diff := cmp.Diff([]map[string]any{{"fdname": "tap-link-a546"}, {"fdname": "tap-link-a546"}}, args); diff != "" {
		t.Errorf("arguments (-want +got):\n%s", diff)
	}
}

func TestUnplugNIC(t *testing.T) {
	deleted := `{"event": "DEVICE_DELETED", "data": {"device": "n1", "path": "/machine/peripheral/n1"}, "timestamp": {"seconds": 1, "microseconds": 0}}`
	other := `{"event": "DEVICE_DELETED", "data": {"device": "n2", "path": "/machine/peripheral/n2"}, "timestamp": {"seconds": 1, "microseconds": 0}}`
	for _, tt := range []struct {
		name    string
		events  []string
		wantErr error
	}{
		{"guest releases", []string{other, deleted}, nil},
		{"guest ignores", []string{other}, context.DeadlineExceeded},
	} {
		t.Run(tt.name, func(t *testing.T) {
			f, c := newPeer(t, answering(func(cmd string, _ map[string]any) (any, string, []string) {
				if cmd == "device_del" {
					return nil, "", tt.events
				}
				return nil, "", nil
			}))
			ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
			defer cancel()
			err := c.UnplugNIC(ctx, "n1")
			if !errors.Is(err, tt.wantErr) || (tt.wantErr == nil) != (err == nil) {
				t.Errorf("UnplugNIC = %v, want %v", err, tt.wantErr)
			}
			// The netdev goes either way.
			if diff := cmp.Diff([]string{"device_del", "netdev_del"}, f.commands()); diff != "" {
				t.Errorf("commands (-want +got):\n%s", diff)
			}
		})
	}
}

func TestStatusAndErrors(t *testing.T) {
	path, _ := listenPeer(t, answering(func(cmd string, _ map[string]any) (any, string, []string) {
		switch cmd {
		case "query-status":
			return map[string]any{"running": true, "status": "running", "singlestep": false}, "", nil
		case "system_powerdown":
			return nil, "", []string{`{"event": "POWERDOWN", "data": {}, "timestamp": {"seconds": 1, "microseconds": 0}}`}
		}
		return nil, "The command " + cmd + " has not been found", nil
	}))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := Dial(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if g := c.Greeting(); g.Major != 7 || g.Minor != 2 || g.Micro != 22 || len(g.Capabilities) != 1 {
		t.Errorf("Greeting = %+v, want QEMU 7.2.22 with one capability", g)
	}
	st, err := c.Status(ctx)
	if err != nil || st != (Status{Running: true, Status: "running"}) {
		t.Errorf("Status = %+v, %v", st, err)
	}
	if err := c.SystemPowerdown(ctx); err != nil {
		t.Error(err)
	}
	err = c.Run(ctx, "nonsense", nil, nil)
	var qe *Error
	var ce *CommandError
	if !errors.As(err, &qe) || qe.Command != "nonsense" || !errors.As(err, &ce) || ce.Class != "GenericError" {
		t.Errorf("Run(nonsense) = %v, want an *Error naming the command, with QEMU's class", err)
	}
	for _, id := range []string{"", "1a", "a,b", "a b", strings.Repeat("a", 65)} {
		if CheckID(id) == nil {
			t.Errorf("CheckID(%q) accepted", id)
		}
	}
	for _, id := range []string{"a", "link-a546", "n_1.x"} {
		if err := CheckID(id); err != nil {
			t.Errorf("CheckID(%q) = %v", id, err)
		}
	}
}

// BenchmarkRoundTrip is one query-status to a fake QEMU on a socketpair
// and back: the client's own cost per command (framing, id, checking).
func BenchmarkRoundTrip(b *testing.B) {
	ours, theirs := socketpair(b)
	go func() {
		theirs.Write([]byte(greeting + "\r\n"))
		lr := newLineReader(theirs, DefaultMaxLine)
		for {
			line, err := lr.next()
			if err != nil {
				return
			}
			var cmd struct {
				ID json.RawMessage `json:"id"`
			}
			json.Unmarshal(line, &cmd)
			theirs.Write([]byte(`{"return": {"status": "running", "singlestep": false, "running": true}, "id": ` + string(cmd.ID) + "}\r\n"))
		}
	}()
	ctx := context.Background()
	c, err := Dialer{}.Handshake(ctx, ours)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.Status(ctx); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRoundTripQEMU is one query-status to a real QEMU (no machine).
func BenchmarkRoundTripQEMU(b *testing.B) {
	sock, _, _ := startQEMU(b)
	ctx := context.Background()
	c, err := Dial(ctx, sock)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.Status(ctx); err != nil {
			b.Fatal(err)
		}
	}
}
