package cli

import (
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"spectrum-os.org/netcfg/host/control"
	"spectrum-os.org/netcfg/host/control/controltest"
)

// TestClientDaemonHangs: a daemon that takes the request and never answers
// (hung, or a stop still waiting on a frozen VM) costs the CLI its
// -timeout; the message names the daemon's socket, what it waited for and
// how long, and what to do.
func TestClientDaemonHangs(t *testing.T) {
	run := t.TempDir()
	controltest.Silent(t, ControlSocket(run))
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
			var err error
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

// TestStatusShowsFailure: a VM whose start failed shows as failed, with
// the daemon's reason (escaped, as every string the daemon passes on).
func TestStatusShowsFailure(t *testing.T) {
	run := t.TempDir()
	ln, err := control.Listen(ControlSocket(run))
	if err != nil {
		t.Fatal(err)
	}
	srv := &control.Server{Handler: statusHandler{vms: []control.VMStatus{
		{Name: "app", State: "failed", Error: "start app: link 01:01 (net -> app): create bridge: no buffer space\x1b[2J"},
	}}, Log: slog.New(slog.DiscardHandler), AllowUID: os.Getuid()}
	go srv.Serve(ln)
	t.Cleanup(func() { ln.Close() })
	var out bytes.Buffer
	if err := Status([]string{"-run", run, "app"}, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	for _, line := range []string{"state:    failed\n", `error:    start app: link 01:01 (net -> app): create bridge: no buffer space\x1b[2J` + "\n"} {
		if !strings.Contains(out.String(), line) {
			t.Errorf("status lacks %q:\n%s", line, out.String())
		}
	}
}

// TestStatusShowsLinkAddrs: status prints each link's addresses in both
// families and a client's gateways on the link's line; list -json carries
// them (escaped, as every string the daemon passes on).
func TestStatusShowsLinkAddrs(t *testing.T) {
	run := t.TempDir()
	ln, err := control.Listen(ControlSocket(run))
	if err != nil {
		t.Fatal(err)
	}
	vms := []control.VMStatus{
		{Name: "app", State: "running", Links: []control.LinkStatus{{Peer: "net", Role: "client", ID: "a5:46", MAC: "0a:b3:ec:00:a5:46",
			Addrs: []string{"100.64.165.70/16", "fd9f:2b8:5010:a546::2/64"}, Gateways: []string{"169.254.165.70", "fe80::1\x1b[2J"}}}},
		{Name: "net", State: "running", Links: []control.LinkStatus{{Peer: "app", Role: "provider", ID: "a5:46", MAC: "0a:b3:ec:80:a5:46",
			Addrs: []string{"169.254.165.70/32", "fd9f:2b8:5010:a546::1/64", "fe80::1/64"}}}},
	}
	srv := &control.Server{Handler: statusHandler{vms: vms}, Log: slog.New(slog.DiscardHandler), AllowUID: os.Getuid()}
	go srv.Serve(ln)
	t.Cleanup(func() { ln.Close() })
	for _, tc := range []struct{ name, want string }{
		{"app", "link a5:46: client of net, NIC 0a:b3:ec:00:a5:46, addrs 100.64.165.70/16 fd9f:2b8:5010:a546::2/64 via 169.254.165.70 fe80::1\\x1b[2J\n"},
		{"net", "link a5:46: provider of app, NIC 0a:b3:ec:80:a5:46, addrs 169.254.165.70/32 fd9f:2b8:5010:a546::1/64 fe80::1/64\n"},
	} {
		var out bytes.Buffer
		if err := Status([]string{"-run", run, tc.name}, &out, io.Discard); err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(out.String(), tc.want) {
			t.Errorf("status %s lacks %q:\n%s", tc.name, tc.want, out.String())
		}
	}
	var out bytes.Buffer
	if err := List([]string{"-run", run, "-json"}, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	var got []control.VMStatus
	if err := json.Unmarshal(out.Bytes(), &got); err != nil {
		t.Fatal(err)
	}
	vms[0].Links[0].Gateways[1] = `fe80::1\x1b[2J`
	if diff := cmp.Diff(vms, got); diff != "" {
		t.Errorf("list -json (-want +got):\n%s", diff)
	}
}
