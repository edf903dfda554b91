package hostlog

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"spectrum-os.org/netcfg/internal/journaldtest"
	"spectrum-os.org/netcfg/internal/testenv"
)

const (
	helperAuto     = "auto"
	helperNoSocket = "nosocket"
)

func TestMain(m *testing.M) {
	testenv.RunHelper(map[string]func() int{helperAuto: autoHelper, helperNoSocket: noSocketHelper})
	os.Exit(journaldtest.Main(m))
}

func ctxFor(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// fields keeps the fields of es that spectrumd writes (journald adds
// its own: _PID, __CURSOR, _SOURCE_REALTIME_TIMESTAMP...).
func fields(es []journaldtest.Entry) []map[string]string {
	var out []map[string]string
	for _, e := range es {
		m := map[string]string{}
		for k, v := range e {
			if k == "MESSAGE" || k == "PRIORITY" || k == "SYSLOG_IDENTIFIER" || strings.HasPrefix(k, "SPECTRUM_") {
				m[k] = v
			}
		}
		out = append(out, m)
	}
	return out
}

// spectrumd's records reach a real journald as entries with their fields,
// and a guest's text cannot make fields of its own.
func TestJournalLive(t *testing.T) {
	j := journaldtest.Get(t)
	h, chose, err := New(Journal, os.Stderr, false)
	if err != nil {
		t.Fatal(err)
	}
	if chose != "journal (-log journal)" {
		t.Errorf("New(journal) chose %q", chose)
	}
	log := slog.New(h)
	log.Info("VM started", "vm", "live-lynx", "pid", 4242)
	log.Info("line\nPRIORITY=0\nSPECTRUM_VM=live-other\n_PID=1", "vm", "live-lynx", "source", "serial")
	log.Log(context.Background(), LevelCrit, "Kernel panic - not syncing: Attempted to kill init!", "vm", "live-lynx", "source", "serial")
	log.Warn("qemu: warning: host doesn't support requested feature", "vm", "live-lynx", "source", "qemu-stderr")
	want := []map[string]string{
		{"MESSAGE": "VM started pid=4242", "PRIORITY": "6", "SYSLOG_IDENTIFIER": "spectrumd/live-lynx",
			"SPECTRUM_VM": "live-lynx", "SPECTRUM_SOURCE": "spectrumd", "SPECTRUM_PID": "4242"},
		{"MESSAGE": "line\nPRIORITY=0\nSPECTRUM_VM=live-other\n_PID=1", "PRIORITY": "6", "SYSLOG_IDENTIFIER": "spectrumd/live-lynx",
			"SPECTRUM_VM": "live-lynx", "SPECTRUM_SOURCE": "serial"},
		{"MESSAGE": "Kernel panic - not syncing: Attempted to kill init!", "PRIORITY": "2", "SYSLOG_IDENTIFIER": "spectrumd/live-lynx",
			"SPECTRUM_VM": "live-lynx", "SPECTRUM_SOURCE": "serial"},
		{"MESSAGE": "qemu: warning: host doesn't support requested feature", "PRIORITY": "4", "SYSLOG_IDENTIFIER": "spectrumd/live-lynx",
			"SPECTRUM_VM": "live-lynx", "SPECTRUM_SOURCE": "qemu-stderr"},
	}
	got := j.Wait(ctxFor(t), t, len(want), "SPECTRUM_VM=live-lynx")
	if diff := cmp.Diff(want, fields(got)); diff != "" {
		t.Errorf("journalctl SPECTRUM_VM=live-lynx (-want +got):\n%s", diff)
	}
	for _, e := range got {
		if e["_PID"] != fmt.Sprint(os.Getpid()) || e["_TRANSPORT"] != "journal" {
			t.Errorf("entry %q: _PID %s _TRANSPORT %s, want %d journal", e["MESSAGE"], e["_PID"], e["_TRANSPORT"], os.Getpid())
		}
	}
	for _, m := range []string{"SPECTRUM_VM=live-other", "PRIORITY=0"} {
		if es := j.Entries(t, m); len(es) != 0 {
			t.Errorf("journalctl %s: %d entries, want none: %v", m, len(es), es)
		}
	}
	// Priority filters work on a guest's lines: the panic alone is crit.
	if es := j.Entries(t, "SPECTRUM_VM=live-lynx", "-p", "crit"); len(es) != 1 || es[0]["PRIORITY"] != "2" {
		t.Errorf("journalctl SPECTRUM_VM=live-lynx -p crit: %v, want the panic alone", es)
	}
	out, err := j.Journalctl("SPECTRUM_VM=live-lynx", "SPECTRUM_SOURCE=serial", "-o", "short")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("journalctl SPECTRUM_VM=live-lynx SPECTRUM_SOURCE=serial:\n%s", out)
}

// Under systemd (JOURNAL_STREAM names stderr) -log auto writes to the
// journal; when stderr is something else, to stderr.
func TestAutoLive(t *testing.T) {
	j := journaldtest.Get(t)
	for _, tc := range []struct {
		name    string
		stream  func(st *syscall.Stat_t) string
		journal bool
	}{
		{"stderr is the journal's stream", func(st *syscall.Stat_t) string { return fmt.Sprintf("%d:%d", st.Dev, st.Ino) }, true},
		{"another file is", func(st *syscall.Stat_t) string { return fmt.Sprintf("%d:%d", st.Dev, st.Ino+1) }, false},
		{"no JOURNAL_STREAM", nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			vm := fmt.Sprintf("auto-%v-%d", tc.journal, time.Now().UnixNano())
			f, err := os.Create(filepath.Join(t.TempDir(), "stderr"))
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			env := []string{"VM=" + vm, "JOURNAL_STREAM="}
			if tc.stream != nil {
				var st syscall.Stat_t
				if err := syscall.Fstat(int(f.Fd()), &st); err != nil {
					t.Fatal(err)
				}
				env = append(env, "JOURNAL_STREAM="+tc.stream(&st))
			}
			cmd := testenv.HelperCommand(ctxFor(t), helperAuto, env...)
			cmd.Stderr = f
			if out, err := cmd.Output(); err != nil {
				t.Fatalf("helper: %v: %s", err, out)
			}
			stderr, err := os.ReadFile(f.Name())
			if err != nil {
				t.Fatal(err)
			}
			n := 0
			if tc.journal {
				n = 1
				if len(stderr) != 0 {
					t.Errorf("stderr got %q, want nothing", stderr)
				}
			} else if !strings.Contains(string(stderr), "msg=hello vm="+vm) {
				t.Errorf("stderr got %q, want the record", stderr)
			}
			// The record, if it is sent, is filed before the helper exits;
			// none more comes later.
			j.Wait(ctxFor(t), t, n, "SPECTRUM_VM="+vm)
		})
	}
}

func autoHelper() int {
	h, chose, err := New(Auto, os.Stderr, false)
	if err != nil {
		fmt.Println(err)
		return 1
	}
	fmt.Println(chose)
	slog.New(h).Info("hello", "vm", os.Getenv("VM"))
	return 0
}

// Where the journal's socket does not answer, -log journal is an error
// that says so, and -log auto writes to stderr even under systemd.
func TestNoSocketLive(t *testing.T) {
	journaldtest.Get(t)
	cmd := testenv.HelperCommand(ctxFor(t), helperNoSocket)
	cmd.SysProcAttr = &syscall.SysProcAttr{Unshareflags: syscall.CLONE_NEWNS}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("helper: %v: %s", err, out)
	}
	want := "-log journal: the journal's native socket /run/systemd/journal/socket does not answer\n" +
		"stderr (the journal's native socket does not answer)\n"
	if string(out) != want {
		t.Errorf("helper said %q, want %q", out, want)
	}
}

func noSocketHelper() int {
	// A mount namespace of this helper's own: an empty /run/systemd.
	if err := syscall.Mount("tmpfs", "/run/systemd", "tmpfs", 0, ""); err != nil {
		fmt.Println(err)
		return 1
	}
	if _, _, err := New(Journal, os.Stderr, false); err != nil {
		fmt.Println(err)
	}
	// stderr as the journal's stream, as systemd would set it.
	var st syscall.Stat_t
	if err := syscall.Fstat(2, &st); err != nil {
		fmt.Println(err)
		return 1
	}
	os.Setenv("JOURNAL_STREAM", fmt.Sprintf("%d:%d", st.Dev, st.Ino))
	_, chose, err := New(Auto, os.Stderr, false)
	if err != nil {
		fmt.Println(err)
		return 1
	}
	fmt.Println(chose)
	return 0
}
