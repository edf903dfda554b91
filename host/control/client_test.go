package control

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestDialDaemonNeverAnswers: a daemon that accepts the connection (and
// reads the request) but never answers costs the client its wait, and the
// error names the socket, the request and the wait.
func TestDialDaemonNeverAnswers(t *testing.T) {
	path := filepath.Join(t.TempDir(), "control.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close()
			go c.Read(make([]byte, 4096)) // reads the request; answers nothing
		}
	}()
	done := make(chan error, 1)
	go func() {
		_, err := Call(path, Request{Op: "stop", Name: "app"}, 300*time.Millisecond)
		done <- err
	}()
	select {
	case err = <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("Call waited on a daemon that never answers")
	}
	var nr *NoReplyError
	if !errors.As(err, &nr) || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Call = %v, want a NoReplyError", err)
	}
	for _, want := range []string{path, `"stop app"`, "300ms"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %s", err, want)
		}
	}
}

// TestDialNoDaemon: no socket, or a socket nobody listens on, is
// ErrNoDaemon.
func TestDialNoDaemon(t *testing.T) {
	dir := t.TempDir()
	stale := filepath.Join(dir, "stale.sock")
	ln, err := net.Listen("unix", stale)
	if err != nil {
		t.Fatal(err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	ln.Close()
	for _, p := range []string{filepath.Join(dir, "none.sock"), stale} {
		if _, err := Call(p, Request{Op: "list"}, time.Second); !errors.Is(err, ErrNoDaemon) || !strings.Contains(err.Error(), p) {
			t.Errorf("Call(%s) = %v, want ErrNoDaemon naming it", p, err)
		}
	}
}
