package control

import (
	"bufio"
	"encoding/json"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"spectrum-os.org/netcfg/host/vmlog"
)

func serveControl(t *testing.T, h Handler) string {
	t.Helper()
	return serveControlWith(t, &Server{Handler: h, AllowUID: os.Getuid()})
}

func roundTrip(t *testing.T, path, req string) (Response, *bufio.Reader, net.Conn) {
	t.Helper()
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(c)
	line, err := br.ReadBytes('\n')
	if err != nil {
		t.Fatalf("reading reply to %q: %v", req, err)
	}
	var r Response
	if err := json.Unmarshal(line, &r); err != nil {
		t.Fatalf("reply %q: %v", line, err)
	}
	return r, br, c
}

func TestControlSocket(t *testing.T) {
	path := serveControl(t, &fakeHandler{})
	st, err := os.Stat(path)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("control socket mode = %v, %v; want 0600", st.Mode(), err)
	}
	for _, tt := range []struct {
		name, req string
		ok        bool
		errHas    string
	}{
		{name: "start", req: `{"op":"start","name":"net"}` + "\n", ok: true},
		{name: "unknown VM", req: `{"op":"start","name":"ghost"}` + "\n", errHas: "ghost"},
		{name: "unknown op", req: `{"op":"reboot"}` + "\n", errHas: "unknown op"},
		{name: "not JSON", req: "hello\n", errHas: "bad request"},
		{name: "no newline then EOF", req: `{"op":"list"}`, ok: true},
		{name: "huge", req: strings.Repeat("x", 100000) + "\n", errHas: "at most 4096 bytes"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c, err := net.Dial("unix", path)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			go func() { io.WriteString(c, tt.req); c.(*net.UnixConn).CloseWrite() }()
			c.SetReadDeadline(time.Now().Add(10 * time.Second))
			line, err := bufio.NewReader(c).ReadBytes('\n')
			if err != nil {
				t.Fatal(err)
			}
			var r Response
			if err := json.Unmarshal(line, &r); err != nil {
				t.Fatal(err)
			}
			if r.OK != tt.ok || !strings.Contains(r.Error, tt.errHas) {
				t.Errorf("reply %+v, want ok=%v error containing %q", r, tt.ok, tt.errHas)
			}
		})
	}
	r, _, _ := roundTrip(t, path, `{"op":"list"}`+"\n")
	if len(r.VMs) != 1 || r.VMs[0].Name != "net" || r.VMs[0].State != "running" {
		t.Errorf("list = %+v", r.VMs)
	}
	r, _, _ = roundTrip(t, path, `{"op":"status","name":"net"}`+"\n")
	if len(r.VMs) != 1 || r.VMs[0].Name != "net" {
		t.Errorf("status = %+v", r.VMs)
	}
}

func TestControlSlowAndManyClients(t *testing.T) {
	path := serveControl(t, &fakeHandler{})
	// Clients that connect and never send a request, or never read, must
	// not stop the others from being answered.
	for range 10 {
		c, err := net.Dial("unix", path)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
	}
	var wg sync.WaitGroup
	errs := make(chan string, 40)
	for range 40 {
		wg.Go(func() {
			c, err := net.Dial("unix", path)
			if err != nil {
				errs <- err.Error()
				return
			}
			defer c.Close()
			io.WriteString(c, `{"op":"list"}`+"\n")
			c.SetReadDeadline(time.Now().Add(10 * time.Second))
			line, err := bufio.NewReader(c).ReadBytes('\n')
			var r Response
			if err != nil || json.Unmarshal(line, &r) != nil || (!r.OK && !strings.Contains(r.Error, "too many clients")) {
				errs <- string(line) + " " + errString(err)
			}
		})
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

func TestControlLogsFollow(t *testing.T) {
	lf := &vmlog.File{Path: filepath.Join(t.TempDir(), "net.log")}
	path := serveControl(t, &fakeHandler{logs: lf})
	lf.WriteLine("old line")
	r, br, _ := roundTrip(t, path, `{"op":"logs","name":"net","follow":true}`+"\n")
	if !r.OK {
		t.Fatalf("logs = %+v", r)
	}
	if l, _ := br.ReadString('\n'); l != "old line\n" {
		t.Errorf("first line %q", l)
	}
	lf.WriteLine("new line")
	if l, _ := br.ReadString('\n'); l != "new line\n" {
		t.Errorf("followed line %q", l)
	}
}

// hostileHandler fails every start with a message quoting a name as a VM
// directory could be named.
type hostileHandler struct{ fakeHandler }

func (*hostileHandler) Start(string) error {
	return errors.New("VM evil\x1b]52;c;ZWNobyBwd25lZA==\x07\x1b[2J: bad\nsecond line \u202egnp.exe\u009b6n")
}

// TestControlRepliesEscaped: an error reply quotes what the handler said
// with its control and format characters escaped, newlines kept, so a
// client printing it as it is (nc, a script) shows text, not escapes.
func TestControlRepliesEscaped(t *testing.T) {
	path := serveControl(t, &hostileHandler{})
	r, _, _ := roundTrip(t, path, `{"op":"start","name":"evil"}`+"\n")
	want := `VM evil\x1b]52;c;ZWNobyBwd25lZA==\x07\x1b[2J: bad` + "\n" + `second line \u202egnp.exe\u009b6n`
	if r.OK || r.Error != want {
		t.Errorf("reply %+v, want the error %q", r, want)
	}
}
