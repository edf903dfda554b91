package control

import (
	"bufio"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"spectrum-os.org/netcfg/host/vmlog"
	"spectrum-os.org/netcfg/internal/leakcheck"
)

// serveControlWith is serveControl with the server's knobs exposed.
func serveControlWith(t testing.TB, srv *Server) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "control.sock")
	ln, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	if srv.Log == nil {
		srv.Log = slog.New(slog.DiscardHandler)
	}
	done := make(chan error)
	go func() { done <- srv.Serve(ln) }()
	t.Cleanup(func() {
		ln.Close()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return path
}

// ask sends req on a new connection and returns the first reply line.
func ask(path, req string, timeout time.Duration) (Response, error) {
	c, err := net.Dial("unix", path)
	if err != nil {
		return Response{}, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(timeout))
	if _, err := io.WriteString(c, req); err != nil {
		return Response{}, err
	}
	line, err := bufio.NewReader(c).ReadBytes('\n')
	if err != nil {
		return Response{}, err
	}
	var r Response
	err = json.Unmarshal(line, &r)
	return r, err
}

// TestControlClientNeverReadsLogs: a client asks for a log of megabytes and
// never reads it. The write deadline drops it; meanwhile the others are
// answered, and its goroutine ends.
func TestControlClientNeverReadsLogs(t *testing.T) {
	lf := &vmlog.File{Path: filepath.Join(t.TempDir(), "net.log")}
	d := &fakeHandler{logs: lf}
	line := strings.Repeat("z", 1000)
	for range 6000 { // 6 MB over both generations
		if err := lf.WriteLine(line); err != nil {
			t.Fatal(err)
		}
	}
	base := runtime.NumGoroutine()
	path := serveControlWith(t, &Server{Handler: d, AllowUID: os.Getuid(), ReplyTimeout: 3 * time.Second})
	base++ // Serve itself
	var stuck []net.Conn
	for range 3 {
		c, err := net.Dial("unix", path)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		io.WriteString(c, `{"op":"logs","name":"net"}`+"\n")
		stuck = append(stuck, c)
	}
	start := time.Now()
	for range 5 {
		r, err := ask(path, `{"op":"list"}`+"\n", 5*time.Second)
		if err != nil || !r.OK {
			t.Fatalf("list while clients hang on logs: %+v, %v", r, err)
		}
	}
	// Had the stuck clients held the daemon up, the answers would have
	// come only once their write deadline had dropped them: so every one of
	// them must still be connected now (an order, not a clock).
	for i, c := range stuck {
		if hungUp(t, c, 0) {
			t.Errorf("stuck client %d was dropped before the 5 list requests were answered (%v): they waited for its write deadline", i, time.Since(start))
		}
	}
	// The stuck clients are dropped by the write deadline (their
	// goroutines end); their sockets then reach EOF once the buffered part
	// is read.
	if n := leakcheck.SettleGoroutines(base, 5*time.Second); n > base {
		t.Errorf("%d goroutines %v after the write deadline, baseline %d", n, time.Since(start), base)
	}
	for i, c := range stuck {
		if !hungUp(t, c, 10*time.Second) {
			t.Errorf("stuck client %d still connected %v after the write deadline", i, time.Since(start))
		}
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		n, err := io.Copy(io.Discard, c)
		if err != nil {
			t.Errorf("stuck client %d: %v after %d bytes (want EOF: the daemon hung up)", i, err, n)
		}
		if n >= 6000*1001 {
			t.Errorf("stuck client %d got the whole log (%d bytes): no deadline hit", i, n)
		}
	}
	if n := leakcheck.SettleGoroutines(base, 5*time.Second); n > base {
		t.Errorf("%d goroutines after the stuck clients were dropped, baseline %d", n, base)
	}
}

// TestControlConsoleClientNeverReads: a console client that stops reading
// while its guest writes is dropped by the write deadline, and the console
// is closed (so released for the next user).
func TestControlConsoleClientNeverReads(t *testing.T) {
	con := &spewConsole{closed: make(chan struct{})}
	path := serveControlWith(t, &Server{Handler: &fakeHandler{console: con}, AllowUID: os.Getuid(), ReplyTimeout: 300 * time.Millisecond})
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, `{"op":"console","name":"net"}`+"\n")
	select {
	case <-con.closed:
	case <-time.After(20 * time.Second):
		t.Fatal("the console of a client that never reads was not closed")
	}
}

// TestControlIdleClientTimesOut: a client that connects and sends nothing
// gets a reply naming the timeout and is hung up on.
func TestControlIdleClientTimesOut(t *testing.T) {
	d := &fakeHandler{}
	path := serveControlWith(t, &Server{Handler: d, AllowUID: os.Getuid(), RequestTimeout: 200 * time.Millisecond})
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	b, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("idle client: %v", err)
	}
	var r Response
	if json.Unmarshal(b, &r) != nil || r.OK || !strings.Contains(r.Error, "timeout") {
		t.Errorf("idle client got %q, want one error reply naming the timeout", b)
	}
	t.Logf("idle client dropped after %v (RequestTimeout 200ms)", time.Since(start))
}

// TestControlTooManyClients: with MaxClients connections held open, the next
// one is told "too many clients"; once they go, clients are served again and
// the daemon's goroutines return to their baseline.
func TestControlTooManyClients(t *testing.T) {
	d := &fakeHandler{}
	base := runtime.NumGoroutine()
	path := serveControlWith(t, &Server{Handler: d, AllowUID: os.Getuid(), RequestTimeout: 20 * time.Second})
	base++
	var idle []net.Conn
	for range MaxClients {
		c, err := net.Dial("unix", path)
		if err != nil {
			t.Fatal(err)
		}
		idle = append(idle, c)
	}
	// Accepting is asynchronous: once the server holds them all, a probe
	// is refused.
	waitFor(t, "idle clients accepted", func() bool {
		r, err := ask(path, `{"op":"list"}`+"\n", 5*time.Second)
		return err == nil && strings.Contains(r.Error, "too many clients")
	})
	const excess = 16
	var wg sync.WaitGroup
	var mu sync.Mutex
	refused := 0
	for range excess {
		wg.Go(func() {
			r, err := ask(path, `{"op":"list"}`+"\n", 5*time.Second)
			mu.Lock()
			defer mu.Unlock()
			if err == nil && !r.OK && strings.Contains(r.Error, "too many clients") {
				refused++
			} else {
				t.Errorf("client over the limit got %+v, %v", r, err)
			}
		})
	}
	wg.Wait()
	if refused != excess {
		t.Errorf("%d of %d clients over the limit refused", refused, excess)
	}
	for _, c := range idle {
		c.Close()
	}
	waitFor(t, "served again", func() bool {
		r, err := ask(path, `{"op":"list"}`+"\n", 5*time.Second)
		return err == nil && r.OK
	})
	if n := leakcheck.SettleGoroutines(base, 5*time.Second); n > base {
		t.Errorf("%d goroutines after every client left, baseline %d", n, base)
	}
}

// FuzzControlRequest sends arbitrary bytes as a request over a real unix
// socket. The server must answer with exactly one JSON line (or hang up),
// never panic, and answer the next valid request.
func FuzzControlRequest(f *testing.F) {
	for _, s := range []string{
		`{"op":"list"}` + "\n",
		`{"op":"status","name":"net"}` + "\n",
		`{"op":"start","name":"ghost"}`,
		`{"op":"logs","name":"net","follow":true}` + "\n",
		`{"op":"console","name":"net"}` + "\nhello",
		`{"op":"list"}{"op":"stop"}` + "\n",
		"\n",
		"\x00\xff{",
		`{"op":1}` + "\n",
		strings.Repeat("[", 5000) + "\n",
	} {
		f.Add([]byte(s))
	}
	path := serveControlWith(f, &Server{Handler: &fakeHandler{}, AllowUID: os.Getuid(), RequestTimeout: 2 * time.Second})
	f.Fuzz(func(t *testing.T, req []byte) {
		c, err := net.Dial("unix", path)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		go func() { c.Write(req); c.(*net.UnixConn).CloseWrite() }()
		out, err := io.ReadAll(c)
		if err != nil {
			t.Fatalf("reading reply: %v", err)
		}
		if len(out) > 0 {
			line, rest, ok := strings.Cut(string(out), "\n")
			var r Response
			if !ok || rest != "" || json.Unmarshal([]byte(line), &r) != nil {
				t.Fatalf("reply %q is not one JSON line", out)
			}
			if !r.OK && r.Error == "" {
				t.Fatalf("reply %q: failure without an error", out)
			}
		}
		r, err := ask(path, `{"op":"list"}`+"\n", 10*time.Second)
		if err != nil || !r.OK {
			t.Fatalf("valid request after %q: %+v, %v", req, r, err)
		}
	})
}

// hungUp tells whether the daemon has closed c, waiting up to wait for it:
// poll's POLLRDHUP says so even while c still holds unread bytes, which a
// read would consume.
func hungUp(t *testing.T, c net.Conn, wait time.Duration) bool {
	t.Helper()
	raw, err := c.(*net.UnixConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var revents int16
	deadline := time.Now().Add(wait)
	for {
		if err := raw.Control(func(fd uintptr) {
			fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLRDHUP}}
			if _, err := unix.Poll(fds, 0); err == nil {
				revents = fds[0].Revents
			}
		}); err != nil {
			t.Fatal(err)
		}
		if revents&(unix.POLLRDHUP|unix.POLLHUP) != 0 || !time.Now().Before(deadline) {
			return revents&(unix.POLLRDHUP|unix.POLLHUP) != 0
		}
		time.Sleep(20 * time.Millisecond)
	}
}
