package cli

import (
	"bytes"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestClientDaemonHangs: a daemon that takes the request and never answers
// (hung, or a stop still waiting on a frozen VM) costs the CLI its
// -timeout; the message names the daemon's socket, what it waited for and
// how long, and what to do.
func TestClientDaemonHangs(t *testing.T) {
	run := t.TempDir()
	ln, err := net.Listen("unix", ControlSocket(run))
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
			go c.Read(make([]byte, 4096))
		}
	}()
	for _, tt := range []struct {
		name string
		cmd  func(args []string, stdout, stderr *bytes.Buffer) error
		args []string
		want []string
	}{
		{"stop", func(a []string, o, e *bytes.Buffer) error { return Stop(a, o, e) }, []string{"app"},
			[]string{`"stop app"`, "spectrumd status app"}},
		{"list", func(a []string, o, e *bytes.Buffer) error { return List(a, o, e) }, nil,
			[]string{`"list"`, "hung"}},
		{"logs", func(a []string, o, e *bytes.Buffer) error { return Logs(a, o, e) }, []string{"app"},
			[]string{`"logs app"`}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			done := make(chan error, 1)
			go func() {
				done <- tt.cmd(append([]string{"-run", run, "-timeout", "300ms"}, tt.args...), &stdout, &stderr)
			}()
			select {
			case err = <-done:
			case <-time.After(20 * time.Second):
				t.Fatalf("spectrumd %s waited on a daemon that never answers", tt.name)
			}
			if err == nil {
				t.Fatal("no error")
			}
			for _, want := range append([]string{filepath.Join(run, "control.sock"), "300ms", "-timeout"}, tt.want...) {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not say %s", err, want)
				}
			}
		})
	}
}
