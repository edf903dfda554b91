package vm

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"spectrum-os.org/netcfg/host/control"
	"spectrum-os.org/netcfg/host/vmlog"
	"spectrum-os.org/netcfg/internal/mac"
	"spectrum-os.org/netcfg/internal/nstest"
	"spectrum-os.org/netcfg/internal/syncbuf"
	"spectrum-os.org/netcfg/vmtest/kernel"
)

// BuildSpectrumd builds cmd/spectrumd into dir the way the Makefile does
// and returns the binary's path. The tests drive the real daemon through
// its command line, as a user would.
func BuildSpectrumd(dir string) (string, error) {
	root, err := kernel.RepoRoot()
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "spectrumd")
	var stderr bytes.Buffer
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/spectrumd")
	cmd.Dir = root
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("go build ./cmd/spectrumd: %w\n%s", err, stderr.Bytes())
	}
	return bin, nil
}

// StopTimeout is the -stop-timeout the tests give spectrumd: the test init
// powers off on the ACPI power button within a second or two under TCG, so
// a guest that takes longer is stuck.
const StopTimeout = 15 * time.Second

// Spectrumd is one `spectrumd serve` running in a test's network
// namespace, with the test's data, state and run directories. It logs JSON
// lines (-log-json) so the tests can read its records; on failure the
// whole output, which has every QEMU command line ("QEMU started" cmd=...),
// and every VM's log file are printed.
type Spectrumd struct {
	Bin, Data, State, Run string
	NS                    *nstest.NS

	cmd    *exec.Cmd
	out    *syncbuf.Buffer
	exited chan struct{}
	err    error // of the process, once exited is closed
	done   chan struct{}

	mu    sync.Mutex
	procs map[string]*Proc // each VM's latest boot
}

// Serve starts `spectrumd serve` in ns and waits until its control socket
// answers. state keeps the link ids between two Serve calls of a test; the
// run directory is new each time.
func Serve(t testing.TB, ns *nstest.NS, bin, data, state string, extra ...string) *Spectrumd {
	t.Helper()
	d := &Spectrumd{Bin: bin, Data: data, State: state, Run: t.TempDir(), NS: ns,
		out: &syncbuf.Buffer{}, exited: make(chan struct{}), done: make(chan struct{}), procs: map[string]*Proc{}}
	args := append([]string{"serve", "-data", data, "-state", state, "-run", d.Run,
		"-accel", "tcg", "-log-json", "-stop-timeout", StopTimeout.String()}, extra...)
	d.cmd = ns.Command(context.Background(), bin, args...)
	d.cmd.Stdout, d.cmd.Stderr = d.out, d.out
	t.Logf("ip netns exec %s %s %s", ns.Name, bin, shellQuote(args))
	if err := d.cmd.Start(); err != nil {
		t.Fatalf("start spectrumd: %v", err)
	}
	go func() { d.err = d.cmd.Wait(); close(d.exited) }()
	t.Cleanup(func() {
		if err := d.Terminate(); err != nil {
			t.Errorf("spectrumd serve: %v", err)
		}
		close(d.done)
		if t.Failed() {
			d.report(t)
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := d.CLI("list"); err == nil {
			return d
		}
		select {
		case <-d.exited:
			t.Fatalf("spectrumd serve exited at start: %v\n%s", d.err, d.out)
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("spectrumd serve: no control socket after 30s\n%s", d.out)
		}
	}
}

// Terminate sends SIGTERM (spectrumd stops every VM and removes every link)
// and waits for it to exit; it kills it after a minute. It returns the
// exit error, if any. Calling it again does nothing.
func (d *Spectrumd) Terminate() error {
	select {
	case <-d.exited:
		return d.err
	default:
	}
	d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.exited:
		return d.err
	case <-time.After(time.Minute):
		d.cmd.Process.Kill()
		<-d.exited
		return fmt.Errorf("did not stop within a minute of SIGTERM; killed")
	}
}

// LinksIP runs `ip args...` in spectrumd's links' namespace (a namespace of
// its own that only spectrumd and its QEMUs hold) and returns its output.
func (d *Spectrumd) LinksIP(args ...string) ([]byte, error) {
	path, err := nstest.HeldNetns(d.cmd.Process.Pid)
	if err == nil && path == "" {
		err = errors.New("spectrumd holds no links' namespace")
	}
	if err != nil {
		return nil, err
	}
	return nstest.IPAt(path, args...)
}

// Exited is closed when the serve process has ended.
func (d *Spectrumd) Exited() <-chan struct{} { return d.exited }

// Output is everything spectrumd serve wrote so far.
func (d *Spectrumd) Output() string { return d.out.String() }

// report prints spectrumd's output and every VM's log file.
func (d *Spectrumd) report(t testing.TB) {
	t.Logf("spectrumd serve output (run %s, netns %s):\n%s", d.Run, d.NS.Name, d.out)
	logs, _ := filepath.Glob(filepath.Join(d.State, "logs", "*.log"))
	for _, l := range logs {
		b, _ := os.ReadFile(l)
		t.Logf("serial log %s:\n%s", l, b)
	}
}

// CLI runs `spectrumd CMD -run RUN ARGS...` and returns its standard output;
// the error carries its standard error.
func (d *Spectrumd) CLI(cmd string, args ...string) ([]byte, error) {
	var stdout, stderr bytes.Buffer
	c := exec.Command(d.Bin, append([]string{cmd, "-run", d.Run}, args...)...)
	c.Stdout, c.Stderr = &stdout, &stderr
	if err := c.Run(); err != nil {
		return stdout.Bytes(), fmt.Errorf("spectrumd %s %s: %w: %s", cmd, strings.Join(args, " "), err, bytes.TrimSpace(stderr.Bytes()))
	}
	return stdout.Bytes(), nil
}

// List returns every VM's status (`spectrumd list -json`).
func (d *Spectrumd) List(t testing.TB) []control.VMStatus {
	t.Helper()
	out, err := d.CLI("list", "-json")
	if err != nil {
		t.Fatal(err)
	}
	var vms []control.VMStatus
	if err := json.Unmarshal(out, &vms); err != nil {
		t.Fatalf("spectrumd list -json: %v: %s", err, out)
	}
	return vms
}

// Status returns one VM's status (`spectrumd status -json NAME`).
func (d *Spectrumd) Status(t testing.TB, name string) control.VMStatus {
	t.Helper()
	out, err := d.CLI("status", "-json", name)
	if err != nil {
		t.Fatal(err)
	}
	var v control.VMStatus
	if err := json.Unmarshal(out, &v); err != nil {
		t.Fatalf("spectrumd status -json %s: %v: %s", name, err, out)
	}
	return v
}

// LinkID returns the id spectrumd gave the link between client and
// provider, from the client's status.
func (d *Spectrumd) LinkID(t testing.TB, client, provider string) mac.LinkID {
	t.Helper()
	for _, l := range d.Status(t, client).Links {
		if l.Role == "client" && l.Peer == provider {
			id, err := mac.ParseLinkID(l.ID)
			if err != nil {
				t.Fatalf("%s's link to %s: %v", client, provider, err)
			}
			return id
		}
	}
	t.Fatalf("spectrumd status %s: no link to provider %s", client, provider)
	return 0
}

// Start runs `spectrumd start NAME`, which launches NAME and any provider
// of it not running yet, and returns NAME's boot. Every VM it launched gets
// a new Proc (Proc(name)) reading its log file from where it stood before
// the start.
func (d *Spectrumd) Start(t testing.TB, name string) *Proc {
	t.Helper()
	if err := d.TryStart(t, name); err != nil {
		t.Fatal(err)
	}
	p := d.Proc(name)
	if p == nil {
		t.Fatalf("spectrumd start %s: not running afterwards (%+v)", name, d.Status(t, name))
	}
	return p
}

// TryStart is Start returning spectrumd's error instead of failing.
func (d *Spectrumd) TryStart(t testing.TB, name string) error {
	t.Helper()
	before := map[string]int{}
	offsets := map[string]int64{}
	for _, v := range d.List(t) {
		before[v.Name] = v.PID
		offsets[v.Name] = 0
		if fi, err := os.Stat(d.logPath(v.Name)); err == nil {
			offsets[v.Name] = fi.Size()
		}
	}
	at := time.Now()
	if _, err := d.CLI("start", name); err != nil {
		return err
	}
	for _, v := range d.List(t) {
		if v.PID == 0 || v.PID == before[v.Name] {
			continue
		}
		exited := make(chan struct{})
		p := &Proc{Name: v.Name, PID: v.PID, exited: exited}
		p.Serial = NewSerial(&follower{path: d.logPath(v.Name), off: offsets[v.Name], pid: v.PID,
			stop: d.done, eof: exited}, at)
		d.mu.Lock()
		d.procs[v.Name] = p
		d.mu.Unlock()
	}
	return nil
}

// Proc returns name's latest boot, nil if it never started.
func (d *Spectrumd) Proc(name string) *Proc {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.procs[name]
}

// Stop runs `spectrumd stop NAME` and returns how long it took (the
// guest's power-down, the NIC unplugs and the link removal).
func (d *Spectrumd) Stop(t testing.TB, name string) time.Duration {
	t.Helper()
	start := time.Now()
	if _, err := d.CLI("stop", name); err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	if p := d.Proc(name); p != nil {
		select {
		case <-p.exited:
		case <-time.After(10 * time.Second):
			t.Errorf("%s: log still followed 10s after stop (QEMU pid %d alive?)", name, p.PID)
		}
	}
	return took
}

func (d *Spectrumd) logPath(name string) string {
	return filepath.Join(d.State, "logs", name+".log")
}

// Record is one of spectrumd's JSON log records.
type Record struct {
	Time   time.Time `json:"time"`
	Level  string    `json:"level"`
	Msg    string    `json:"msg"`
	VM     string    `json:"vm"`
	Source string    `json:"source"`
	Err    string    `json:"err"`
	Cmd    string    `json:"cmd"`
	Link   string    `json:"link"`
	Exit   string    `json:"exit"` // of "VM stopped": QEMU's exit status
}

// Records parses spectrumd's output so far.
func (d *Spectrumd) Records() []Record {
	var out []Record
	for _, l := range strings.Split(d.out.String(), "\n") {
		var r Record
		if json.Unmarshal([]byte(l), &r) == nil {
			out = append(out, r)
		}
	}
	return out
}

// WaitRecord waits for a record of spectrumd's for which match is true.
func (d *Spectrumd) WaitRecord(ctx context.Context, match func(Record) bool) (Record, error) {
	for {
		for _, r := range d.Records() {
			if match(r) {
				return r, nil
			}
		}
		select {
		case <-ctx.Done():
			return Record{}, ctx.Err()
		case <-d.exited:
			return Record{}, fmt.Errorf("spectrumd exited: %v", d.err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// BootTime is, from spectrumd's own timestamps, how long p took from
// "QEMU started" to its agent's summary line on the serial console
// (guest.DonePrefix). ok is false if either is missing.
func (d *Spectrumd) BootTime(p *Proc) (time.Duration, bool) {
	var start time.Time
	for _, r := range d.Records() {
		if r.VM != p.Name {
			continue
		}
		switch {
		case r.Msg == "QEMU started" && start.IsZero() && !r.Time.Before(p.Serial.start):
			start = r.Time
		case !start.IsZero() && r.Source == "serial" && strings.HasPrefix(r.Msg, "spectrum-netcfg: done: "):
			return r.Time.Sub(start), true
		}
	}
	return 0, false
}

// Relaunched waits until spectrumd has launched name again on its own (its
// supervisor restarting it: a pid other than old, running) and returns the
// new boot, read from the boot marker spectrumd wrote into the log file at
// that launch. spectrumd writes the marker before the new pid shows in
// status, so it is there to be found.
func (d *Spectrumd) Relaunched(t testing.TB, ctx context.Context, name string, old int) *Proc {
	t.Helper()
	for {
		st := d.Status(t, name)
		if st.PID != 0 && st.PID != old && st.State == "running" {
			b, err := os.ReadFile(d.logPath(name))
			if err != nil {
				t.Fatal(err)
			}
			marker := vmlog.BootMarkerPrefix + "VM launched, pid " + strconv.Itoa(st.PID) + ","
			i := strings.Index(string(b), marker)
			if i < 0 {
				t.Fatalf("%s: no boot marker %q in its log", name, marker)
			}
			exited := make(chan struct{})
			p := &Proc{Name: name, PID: st.PID, exited: exited}
			p.Serial = NewSerial(&follower{path: d.logPath(name), off: int64(i), pid: st.PID,
				stop: d.done, eof: exited}, st.Since)
			d.mu.Lock()
			d.procs[name] = p
			d.mu.Unlock()
			return p
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%s: not relaunched after pid %d ended (status %+v)", name, old, st)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// ConsoleRun attaches to name's virtio-console with `spectrumd console`
// (its standard input a pipe, not a terminal), types line into the shell
// the test init keeps there, waits until the console's output holds want,
// and detaches with Ctrl-]. It returns what the console showed.
func (d *Spectrumd) ConsoleRun(ctx context.Context, name, line, want string) (string, error) {
	cmd := exec.CommandContext(ctx, d.Bin, "console", "-run", d.Run, name)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return "", err
	}
	out := &syncbuf.Buffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		return "", err
	}
	defer cmd.Wait()
	defer stdin.Close()
	// The shell's prompt went out before anyone listened: a new line
	// brings one, then the command.
	if _, err := io.WriteString(stdin, "\n"+line+"\n"); err != nil {
		return out.String(), err
	}
	for !strings.Contains(out.String(), want) {
		select {
		case <-ctx.Done():
			return out.String(), fmt.Errorf("console of %s: no %q after %q: %w", name, want, line, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
	_, err = stdin.Write([]byte{0x1d})
	return out.String(), err
}
