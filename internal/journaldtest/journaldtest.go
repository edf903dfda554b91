// Package journaldtest runs a real systemd-journald for a package's tests,
// so that code logging to the journal through its standard socket
// (/run/systemd/journal/socket) is tested against journald itself and read
// back with journalctl.
//
// The journald runs in a mount namespace of the test binary's own, on a
// tmpfs mounted over /run there: the host's /run, journal and users are
// never touched. It is a journald "namespace" instance, which reads neither
// the kernel's log nor the audit socket (the main instance would import the
// host's kernel messages and turn the kernel's auditing on), keeps its
// journal in memory (Storage=volatile), forwards nothing (not to the
// terminals of logged-in users, not to syslog) and has no rate limit.
//
// A namespace instance exits when it has had no stream or varlink client
// for 30 s (socket activation starts it again; nothing does here), which
// would leave a package's later tests without a journal: its config keeps
// it running (MaxRetentionSec, see start), and Get fails a test once it
// has exited anyway.
package journaldtest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"spectrum-os.org/netcfg/internal/syncbuf"
	"spectrum-os.org/netcfg/internal/testenv"
)

// namespace is the journald namespace instance's name.
const namespace = "spectrumtest"

// childEnv is set in the test binary run again in its own mount namespace.
const childEnv = "SPECTRUM_JOURNALDTEST"

// Journald is the test binary's journald.
type Journald struct {
	Dir    string // its journal files' directory, for journalctl -D
	cmd    *exec.Cmd
	log    syncbuf.Buffer // its own output
	exited chan struct{}  // closed when it has exited (cmd.ProcessState set)
}

var (
	mainCalled bool // Main runs the tests
	running    *Journald
	startErr   error
)

// Main is a package's TestMain (after testenv.RunHelper). As root it runs
// the package's tests again, with the same arguments, in a child process
// with a mount namespace of its own, where a journald listens on
// /run/systemd/journal/socket, and returns the child's exit status. Not as
// root it runs them as they are (Get then skips, where skipping is honest).
// Helper processes the tests start inherit the namespace and the journald.
func Main(m *testing.M) int {
	if os.Geteuid() != 0 {
		return m.Run()
	}
	if os.Getenv(childEnv) == "" {
		self, err := os.Executable()
		if err != nil {
			fmt.Fprintln(os.Stderr, "journaldtest:", err)
			return 1
		}
		cmd := exec.Command(self, os.Args[1:]...)
		cmd.Env = append(os.Environ(), childEnv+"=1")
		cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
		// Go makes every mount in the new namespace private before the
		// child runs: nothing mounted there shows on the host.
		cmd.SysProcAttr = &syscall.SysProcAttr{Unshareflags: syscall.CLONE_NEWNS, Pdeathsig: syscall.SIGKILL}
		if err := cmd.Start(); err != nil {
			// No mount namespace for this root (a container without
			// CAP_SYS_ADMIN): the tests run here, and Get fails.
			startErr = fmt.Errorf("a mount namespace of its own: %w", err)
			mainCalled = true
			return m.Run()
		}
		if err := cmd.Wait(); err != nil {
			var ee *exec.ExitError
			if errors.As(err, &ee) && ee.ExitCode() > 0 {
				return ee.ExitCode()
			}
			fmt.Fprintln(os.Stderr, "journaldtest: the tests in a mount namespace of their own:", err)
			return 1
		}
		return 0
	}
	mainCalled = true
	running, startErr = start()
	code := m.Run()
	if running != nil {
		running.cmd.Process.Signal(syscall.SIGTERM)
		<-running.exited
	}
	return code
}

// start mounts a tmpfs over /run and starts journald there; this process is
// alone in its mount namespace.
func start() (*Journald, error) {
	bin := ""
	for _, p := range []string{"/lib/systemd/systemd-journald", "/usr/lib/systemd/systemd-journald"} {
		if _, err := os.Stat(p); err == nil {
			bin = p
			break
		}
	}
	if bin == "" {
		return nil, errors.New("no systemd-journald in /lib/systemd or /usr/lib/systemd")
	}
	if err := syscall.Mount("tmpfs", "/run", "tmpfs", syscall.MS_NOSUID|syscall.MS_NODEV, "mode=0755"); err != nil {
		return nil, fmt.Errorf("mount a tmpfs on /run: %w", err)
	}
	conf := "/run/systemd/journald@" + namespace + ".conf.d"
	if err := os.MkdirAll(conf, 0o755); err != nil {
		return nil, err
	}
	// zz-: the last drop-in read, whatever the host's /etc holds.
	// MaxRetentionSec: a namespace instance whose retention limit is over
	// its idle timeout (30 s) stays up to enforce it, instead of exiting
	// 30 s after its last client (journald-server.c, server_is_idle);
	// a year deletes nothing a test wrote.
	err := os.WriteFile(filepath.Join(conf, "zz-spectrum-test.conf"), []byte(
		"[Journal]\nStorage=volatile\nForwardToWall=no\nForwardToSyslog=no\nForwardToConsole=no\nForwardToKMsg=no\nRateLimitBurst=0\nMaxRetentionSec=1y\n"), 0o644)
	if err != nil {
		return nil, err
	}
	// A namespace instance listens in /run/systemd/journal.NAMESPACE; the
	// standard path leads there.
	if err := os.Symlink("journal."+namespace, "/run/systemd/journal"); err != nil {
		return nil, err
	}
	j := &Journald{cmd: exec.Command(bin, namespace), exited: make(chan struct{})}
	j.cmd.Stdout, j.cmd.Stderr = &j.log, &j.log
	j.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	// The parent-death signal comes when the thread that forked journald
	// exits, and Go ends a thread whose goroutine exits locked to it (a
	// test's network namespace switch, say): journald is forked from a
	// thread locked to a goroutine that lives as long as journald does.
	started := make(chan error)
	go func() {
		runtime.LockOSThread()
		if err := j.cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		j.cmd.Wait()
		close(j.exited)
	}()
	if err := <-started; err != nil {
		return nil, err
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		dirs, _ := filepath.Glob("/run/log/journal/*." + namespace)
		_, err := os.Stat("/run/systemd/journal/socket")
		if len(dirs) == 1 && err == nil {
			j.Dir = dirs[0]
			return j, nil
		}
		if time.Now().After(deadline) {
			j.cmd.Process.Kill()
			<-j.exited
			return nil, fmt.Errorf("%s %s: no socket and journal after 30s: %s", bin, namespace, j.log.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Get returns the test binary's journald: it fails t where journald did not
// start, and stops it (a skip, but under CI) where it cannot run.
func Get(t testing.TB) *Journald {
	t.Helper()
	testenv.Root(t, "to run systemd-journald in a mount namespace of its own")
	if !mainCalled {
		t.Fatal("journaldtest.Get: the package's TestMain does not call journaldtest.Main")
	}
	if startErr != nil {
		if strings.HasPrefix(startErr.Error(), "no systemd-journald") {
			testenv.Skip(t, startErr.Error()+" (make deps installs systemd)")
		}
		t.Fatal("journald:", startErr)
	}
	if err := running.gone(); err != nil {
		t.Fatalf("journald: %v", err)
	}
	return running
}

// gone says how journald exited, if it has: the tests after that have no
// journal.
func (j *Journald) gone() error {
	select {
	case <-j.exited:
		return fmt.Errorf("systemd-journald exited during the tests (%v); its output: %q", j.cmd.ProcessState, j.log.String())
	default:
		return nil
	}
}

// Entry is a journal entry's fields, as journalctl -o json gives them; a
// value that is not valid UTF-8 text (journalctl gives it as an array of
// bytes) is kept as those bytes; a field given more than once is its
// values joined by newlines.
type Entry map[string]string

// Entries returns the entries that match every match (journalctl's FIELD=VALUE),
// oldest first.
func (j *Journald) Entries(t testing.TB, match ...string) []Entry {
	t.Helper()
	out, err := j.Journalctl(append([]string{"-o", "json", "--all"}, match...)...)
	if err != nil {
		t.Fatal(err)
	}
	var es []Entry
	for _, l := range bytes.Split(bytes.TrimSpace(out), []byte("\n")) {
		if len(l) == 0 {
			continue
		}
		var raw map[string]json.RawMessage
		if err := json.Unmarshal(l, &raw); err != nil {
			t.Fatalf("journalctl -o json: %v: %s", err, l)
		}
		e := make(Entry, len(raw))
		for k, v := range raw {
			val, ok := jsonValue(v)
			if !ok {
				// A field given more than once: an array of values.
				var vs []json.RawMessage
				if json.Unmarshal(v, &vs) != nil {
					t.Fatalf("journalctl -o json: field %s: %s", k, v)
				}
				var all []string
				for _, v := range vs {
					if val, ok = jsonValue(v); !ok {
						t.Fatalf("journalctl -o json: field %s: %s", k, v)
					}
					all = append(all, val)
				}
				val = strings.Join(all, "\n")
			}
			e[k] = val
		}
		es = append(es, e)
	}
	return es
}

// jsonValue decodes one value of journalctl -o json: a string, or an array
// of bytes.
func jsonValue(v json.RawMessage) (string, bool) {
	var s string
	if json.Unmarshal(v, &s) == nil {
		return s, true
	}
	var nums []byte
	var ints []int
	if json.Unmarshal(v, &ints) != nil {
		return "", false
	}
	for _, n := range ints {
		nums = append(nums, byte(n))
	}
	return string(nums), true
}

// Wait returns the entries matching match once there are n of them (journald
// files what it receives at once, but after the sender's call returns), and
// fails t when there are fewer by ctx's end, or more.
func (j *Journald) Wait(ctx context.Context, t testing.TB, n int, match ...string) []Entry {
	t.Helper()
	for {
		es := j.Entries(t, match...)
		if len(es) > n {
			t.Fatalf("journalctl %v: %d entries, want %d: %v", match, len(es), n, es)
		}
		if len(es) == n {
			return es
		}
		select {
		case <-ctx.Done():
			t.Fatalf("journalctl %v: %d entries, want %d: %v\n%s", match, len(es), n, es, j.Dump())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Dump is what a failed test needs to tell why an entry is missing: the
// journal's last entries, whoever sent them, with their pid, identifier
// and message (journald's own notices, "Suppressed N messages" among them,
// included), the journal's files, and journald's own output.
func (j *Journald) Dump() string {
	var b strings.Builder
	out, err := j.Journalctl("-o", "json", "--all", "-n", "200")
	fmt.Fprintf(&b, "the journal's last entries (of any sender):\n")
	if err != nil {
		fmt.Fprintf(&b, "  %v\n", err)
	}
	for _, l := range bytes.Split(bytes.TrimSpace(out), []byte("\n")) {
		var e map[string]any
		if json.Unmarshal(l, &e) != nil {
			continue
		}
		fmt.Fprintf(&b, "  %v _PID=%v _COMM=%v %v: %v\n", e["__MONOTONIC_TIMESTAMP"], e["_PID"], e["_COMM"], e["SYSLOG_IDENTIFIER"], e["MESSAGE"])
	}
	files, _ := filepath.Glob(filepath.Join(j.Dir, "*"))
	fmt.Fprintf(&b, "journal files: %v\n", files)
	if err := j.gone(); err != nil {
		fmt.Fprintf(&b, "%v", err)
	} else {
		fmt.Fprintf(&b, "journald runs; its output: %q", j.log.String())
	}
	return b.String()
}

// Journalctl runs journalctl on the journal with args and returns its
// standard output; the error has its standard error.
func (j *Journald) Journalctl(args ...string) ([]byte, error) {
	var stderr bytes.Buffer
	cmd := exec.Command("journalctl", append([]string{"-D", j.Dir, "--no-pager", "-q"}, args...)...)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return out, fmt.Errorf("journalctl %s: %v: %s", strings.Join(args, " "), err, stderr.Bytes())
	}
	return out, nil
}
