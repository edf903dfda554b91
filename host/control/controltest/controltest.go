// Package controltest serves spectrumd's control socket in tests of the
// packages that use it (the daemon behind it, the CLI in front of it):
// a real control.Server on a socket of the test's own, or a daemon that
// takes requests and never answers.
package controltest

import (
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"testing"

	"spectrum-os.org/netcfg/host/control"
)

// Serve serves s on a socket in a directory of t's own and returns its
// path; it stops when t ends, failing t if Serve failed. A nil s.Log
// discards the log; a zero AllowUID admits this process's user.
func Serve(t testing.TB, s *control.Server) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "control.sock")
	ln, err := control.Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	if s.Log == nil {
		s.Log = slog.New(slog.DiscardHandler)
	}
	if s.AllowUID == 0 {
		s.AllowUID = os.Getuid()
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(ln) }()
	t.Cleanup(func() {
		ln.Close()
		if err := <-done; err != nil {
			t.Errorf("control.Server.Serve: %v", err)
		}
	})
	return path
}

// Silent listens on path as a daemon that is hung: it accepts every
// connection and reads the request, and never answers. It stops when t
// ends.
func Silent(t testing.TB, path string) {
	t.Helper()
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { c.Close() })
			go c.Read(make([]byte, 4096))
		}
	}()
}
