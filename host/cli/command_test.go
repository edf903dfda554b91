package cli

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"

	"spectrum-os.org/netcfg/host/control"
	"spectrum-os.org/netcfg/host/control/controltest"
	"spectrum-os.org/netcfg/host/vmlog"
)

// recorder is a daemon that knows the VM "app" and records each request
// as "op name".
type recorder struct {
	mu  sync.Mutex
	got []string
}

func (r *recorder) add(op, name string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.got = append(r.got, strings.TrimSpace(op+" "+name))
}

func (r *recorder) requests() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.got...)
}

func (r *recorder) List() []control.VMStatus {
	r.add("list", "")
	return []control.VMStatus{{Name: "app", State: "running"}}
}

func (r *recorder) Status(name string) (control.VMStatus, error) {
	r.add("status", name)
	if name != "app" {
		return control.VMStatus{}, fmt.Errorf("no VM named %q", name)
	}
	return control.VMStatus{Name: "app", State: "running"}, nil
}

func (r *recorder) Start(name string) error { r.add("start", name); return nil }
func (r *recorder) Stop(name string) error  { r.add("stop", name); return nil }
func (r *recorder) Logs(name string) (*vmlog.File, error) {
	r.add("logs", name)
	return nil, errors.New("no logs here")
}
func (r *recorder) Console(name string) (io.ReadWriteCloser, error) {
	r.add("console", name)
	return nil, errors.New("no console here")
}

// spectrumd runs the CLI as main does and returns the exit status and
// what it wrote.
func spectrumd(args ...string) (status int, stdout, stderr string) {
	var o, e bytes.Buffer
	status = Main(args, Stdio{Out: &o, Err: &e})
	return status, o.String(), e.String()
}

// TestFlagOrder: flags come before or after the VM name, in any order,
// with one dash or two, with their value as the next word or after "=";
// "--" ends the flags, so what follows is the name even if it looks like a
// flag. Each line reaches the daemon given by -run wherever it is.
func TestFlagOrder(t *testing.T) {
	rec := &recorder{}
	run := filepath.Dir(controltest.Serve(t, &control.Server{Handler: rec}))
	for _, tt := range []struct {
		name    string
		args    []string
		request string // what the daemon got
		status  int
		stdout  string // in stdout
	}{
		{"status json first", []string{"status", "-json", "-run", run, "app"}, "status app", 0, `"name":"app"`},
		{"status json after the name", []string{"status", "app", "-json", "-run", run}, "status app", 0, `"name":"app"`},
		{"status run after the name", []string{"status", "-json", "app", "-run", run}, "status app", 0, `"name":"app"`},
		{"status text", []string{"status", "app", "-run", run}, "status app", 0, "state:    running"},
		{"two dashes and =", []string{"status", "--run=" + run, "app", "--json"}, "status app", 0, `"name":"app"`},
		{"bool =false", []string{"status", "app", "-json=false", "-run", run}, "status app", 0, "name:     app"},
		{"-- ends the flags", []string{"status", "-run", run, "--", "-json"}, "status -json", 1, ""},
		{"start after the name", []string{"start", "app", "-run", run, "-timeout", "5s"}, "start app", 0, ""},
		{"stop after the name", []string{"stop", "app", "-timeout=5s", "-run", run}, "stop app", 0, ""},
		{"logs -f after the name", []string{"logs", "app", "-f", "-run", run}, "logs app", 1, ""},
		{"console run after the name", []string{"console", "app", "-run", run}, "console app", 1, ""},
		{"list json after run", []string{"list", "-run", run, "-json"}, "list", 0, `"name":"app"`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			before := len(rec.requests())
			status, stdout, stderr := spectrumd(tt.args...)
			if status != tt.status {
				t.Errorf("exit status %d, want %d\nstdout: %s\nstderr: %s", status, tt.status, stdout, stderr)
			}
			if got := rec.requests()[before:]; !cmp.Equal(got, []string{tt.request}) {
				t.Errorf("daemon got %q, want %q\nstderr: %s", got, tt.request, stderr)
			}
			if !strings.Contains(stdout, tt.stdout) {
				t.Errorf("stdout lacks %q:\n%s", tt.stdout, stdout)
			}
		})
	}
}

// TestUsageErrors: a line the command cannot take is refused with exit 2
// before anything is asked of the daemon or the system, on stderr, in two
// lines: what is wrong, naming the word at fault, and the command's
// synopsis.
func TestUsageErrors(t *testing.T) {
	for _, tt := range []struct {
		args []string
		want string // the first line
	}{
		{[]string{"status", "app1", "-jsn"}, "spectrumd status: unknown flag -jsn"},
		{[]string{"status", "-jsn", "app1"}, "spectrumd status: unknown flag -jsn"},
		{[]string{"status", "app1", "--jsn=1"}, "spectrumd status: unknown flag --jsn"},
		{[]string{"status", "app1", "x"}, `spectrumd status: unexpected argument "x"`},
		{[]string{"status", "-json"}, "spectrumd status: missing NAME"},
		{[]string{"status", "app1", "-timeout"}, "spectrumd status: flag needs an argument: -timeout"},
		{[]string{"stop", "-timeout", "soon", "app1"}, `spectrumd stop: invalid value "soon" for flag -timeout: parse error`},
		{[]string{"start", "a", "b"}, `spectrumd start: unexpected argument "b"`},
		{[]string{"logs", "app1", "--follow"}, "spectrumd logs: unknown flag --follow"},
		{[]string{"console"}, "spectrumd console: missing NAME"},
		{[]string{"list", "app1"}, `spectrumd list: unexpected argument "app1"`},
		{[]string{"list", "-f"}, "spectrumd list: unknown flag -f"},
		{[]string{"check", "-jsn"}, "spectrumd check: unknown flag -jsn"},
		{[]string{"check", "-json", "extra"}, `spectrumd check: unexpected argument "extra"`},
		{[]string{"serve", "-data"}, "spectrumd serve: flag needs an argument: -data"},
		{[]string{"serve", "now"}, `spectrumd serve: unexpected argument "now"`},
		{[]string{"serve", "-memory", "lots"}, `spectrumd serve: invalid value "lots" for flag -memory: parse error`},
		// The operator's own words, escaped all the same.
		{[]string{"status", "-\x1b[2J", "app"}, `spectrumd status: unknown flag -\x1b[2J`},
	} {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			status, stdout, stderr := spectrumd(tt.args...)
			if status != 2 {
				t.Errorf("exit status %d, want 2", status)
			}
			if stdout != "" {
				t.Errorf("stdout: %q", stdout)
			}
			want := tt.want + "\nusage: " + lookup(tt.args[0]).Synopsis() + "\n"
			if diff := cmp.Diff(want, stderr); diff != "" {
				t.Errorf("stderr (-want +got):\n%s", diff)
			}
		})
	}
}

// TestHelp: `spectrumd help CMD`, `spectrumd CMD -h` and `--help`, wherever
// on the line (before anything wrong), print the same help to stdout and
// exit 0; spectrumd's own help likewise. A wrong command is a usage error.
func TestHelp(t *testing.T) {
	for _, c := range Commands() {
		t.Run(c.Name, func(t *testing.T) {
			status, want, stderr := spectrumd("help", c.Name)
			if status != 0 || stderr != "" {
				t.Fatalf("help %s: exit status %d, stderr %q", c.Name, status, stderr)
			}
			if !strings.HasPrefix(want, "usage: "+c.Synopsis()+"\n\n"+c.About[:10]) || !strings.Contains(want, "\nflags:\n  -") {
				t.Errorf("help %s:\n%s", c.Name, want)
			}
			for _, args := range [][]string{{"-h"}, {"--help"}, {"-help"}, {"app", "-h"}, {"--help", "-nope"}} {
				status, got, stderr := spectrumd(append([]string{c.Name}, args...)...)
				if status != 0 || stderr != "" || got != want {
					t.Errorf("%s %s: exit status %d, stderr %q, stdout differs from help's:\n%s", c.Name, args, status, stderr, got)
				}
			}
		})
	}
	_, want, _ := spectrumd("help")
	for _, c := range Commands() {
		if !strings.Contains(want, "\n  "+c.Name+" ") {
			t.Errorf("help does not list %s:\n%s", c.Name, want)
		}
	}
	if strings.Contains(want, completeCmd) {
		t.Errorf("help lists the hidden %s:\n%s", completeCmd, want)
	}
	for _, args := range [][]string{{"-h"}, {"--help"}, {"-help"}} {
		if status, got, stderr := spectrumd(args...); status != 0 || got != want || stderr != "" {
			t.Errorf("spectrumd %s: exit status %d, stderr %q, stdout:\n%s", args, status, stderr, got)
		}
	}
	for _, tt := range []struct {
		args []string
		want string
	}{
		{nil, "usage: spectrumd COMMAND"},
		{[]string{"help", "nope"}, `spectrumd help: unknown command "nope"`},
		{[]string{"help", "status", "x"}, `spectrumd help: unexpected argument "x"`},
		{[]string{"stauts", "app"}, `spectrumd: unknown command "stauts"`},
	} {
		if status, stdout, stderr := spectrumd(tt.args...); status != 2 || stdout != "" || !strings.HasPrefix(stderr, tt.want) {
			t.Errorf("spectrumd %q: exit status %d, want 2; stdout %q; stderr does not start with %q:\n%s", tt.args, status, stdout, tt.want, stderr)
		}
	}
}
