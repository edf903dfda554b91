package qmp

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"

	"spectrum-os.org/netcfg/internal/mac"
)

// fakeQEMU is a QMP server that records the commands it gets (and whether an
// fd came with each) and answers through reply.
type fakeQEMU struct {
	t     *testing.T
	path  string
	reply func(cmd string, args map[string]any) (ret any, errDesc string, events []string)

	mu   sync.Mutex
	got  []string // "cmd" or "cmd+fd"
	args []map[string]any
}

func newFake(t *testing.T, reply func(string, map[string]any) (any, string, []string)) *fakeQEMU {
	f := &fakeQEMU{t: t, path: filepath.Join(t.TempDir(), "qmp.sock"), reply: reply}
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: f.path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go f.serve(l)
	return f
}

func (f *fakeQEMU) serve(l *net.UnixListener) {
	c, err := l.AcceptUnix()
	if err != nil {
		return
	}
	defer c.Close()
	c.Write([]byte(`{"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7}, "package": ""}, "capabilities": ["oob"]}}` + "\r\n"))
	buf := make([]byte, 4096)
	oob := make([]byte, unix.CmsgSpace(4))
	for {
		n, oobn, _, _, err := c.ReadMsgUnix(buf, oob)
		if err != nil {
			return
		}
		withFD := false
		if oobn > 0 {
			msgs, _ := unix.ParseSocketControlMessage(oob[:oobn])
			for _, m := range msgs {
				fds, _ := unix.ParseUnixRights(&m)
				for _, fd := range fds {
					withFD = true
					unix.Close(fd)
				}
			}
		}
		dec := json.NewDecoder(bytes.NewReader(buf[:n]))
		for dec.More() {
			var cmd struct {
				Execute   string         `json:"execute"`
				Arguments map[string]any `json:"arguments"`
			}
			if err := dec.Decode(&cmd); err != nil {
				f.t.Errorf("fake qemu: bad command %q: %v", buf[:n], err)
				return
			}
			if cmd.Execute == "qmp_capabilities" {
				c.Write([]byte(`{"return": {}}` + "\r\n"))
				continue
			}
			name := cmd.Execute
			if withFD {
				name += "+fd"
			}
			f.mu.Lock()
			f.got = append(f.got, name)
			f.args = append(f.args, cmd.Arguments)
			f.mu.Unlock()
			ret, desc, events := f.reply(cmd.Execute, cmd.Arguments)
			var resp []byte
			if desc != "" {
				resp, _ = json.Marshal(map[string]any{"error": map[string]string{"class": "GenericError", "desc": desc}})
			} else {
				if ret == nil {
					ret = map[string]any{}
				}
				resp, _ = json.Marshal(map[string]any{"return": ret})
			}
			c.Write(append(resp, '\r', '\n'))
			for _, ev := range events {
				c.Write([]byte(ev + "\r\n"))
			}
		}
	}
}

func (f *fakeQEMU) commands() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.got...)
}

func dial(t *testing.T, f *fakeQEMU) *Client {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := Dial(ctx, f.path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func tapStandIn(t *testing.T) *os.File {
	f, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

func TestHotplugNIC(t *testing.T) {
	f := newFake(t, func(string, map[string]any) (any, string, []string) { return nil, "", nil })
	c := dial(t, f)
	hw := mac.LinkID(0xa546).MAC(mac.Provider)
	if err := c.HotplugNIC(context.Background(), tapStandIn(t), "link-a546", hw); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"getfd+fd", "netdev_add", "device_add"}, f.commands()); diff != "" {
		t.Errorf("commands (-want +got):\n%s", diff)
	}
	want := []map[string]any{
		{"fdname": "tap-link-a546"},
		{"type": "tap", "id": "link-a546", "fd": "tap-link-a546"},
		{"driver": "virtio-net-pci", "id": "link-a546", "netdev": "link-a546", "mac": "0a:b3:ec:80:a5:46", "romfile": ""},
	}
	if diff := cmp.Diff(want, f.args); diff != "" {
		t.Errorf("arguments (-want +got):\n%s", diff)
	}
}

func TestHotplugNICUndo(t *testing.T) {
	for _, tt := range []struct {
		name   string
		failOn string
		want   []string
	}{
		{"netdev_add fails", "netdev_add", []string{"getfd+fd", "netdev_add", "closefd"}},
		{"device_add fails", "device_add", []string{"getfd+fd", "netdev_add", "device_add", "netdev_del"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			f := newFake(t, func(cmd string, _ map[string]any) (any, string, []string) {
				if cmd == tt.failOn {
					return nil, "Duplicate ID", nil
				}
				return nil, "", nil
			})
			c := dial(t, f)
			err := c.HotplugNIC(context.Background(), tapStandIn(t), "n1", mac.LinkID(1).MAC(mac.Provider))
			if err == nil || !strings.Contains(err.Error(), "Duplicate ID") {
				t.Errorf("HotplugNIC = %v, want the Duplicate ID error", err)
			}
			if diff := cmp.Diff(tt.want, f.commands()); diff != "" {
				t.Errorf("commands (-want +got):\n%s", diff)
			}
		})
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
			f := newFake(t, func(cmd string, _ map[string]any) (any, string, []string) {
				if cmd == "device_del" {
					return nil, "", tt.events
				}
				return nil, "", nil
			})
			c := dial(t, f)
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
	f := newFake(t, func(cmd string, _ map[string]any) (any, string, []string) {
		switch cmd {
		case "query-status":
			return map[string]any{"running": true, "status": "running", "singlestep": false}, "", nil
		case "system_powerdown":
			return nil, "", []string{`{"event": "POWERDOWN", "data": {}, "timestamp": {"seconds": 1, "microseconds": 0}}`}
		}
		return nil, "The command " + cmd + " has not been found", nil
	})
	c := dial(t, f)
	ctx := context.Background()
	st, err := c.Status(ctx)
	if err != nil || st != (Status{Running: true, Status: "running"}) {
		t.Errorf("Status = %+v, %v", st, err)
	}
	if err := c.SystemPowerdown(ctx); err != nil {
		t.Error(err)
	}
	err = c.Run(ctx, "nonsense", nil, nil)
	var qe *Error
	if !errors.As(err, &qe) || qe.Command != "nonsense" {
		t.Errorf("Run(nonsense) = %v, want an *Error naming the command", err)
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
