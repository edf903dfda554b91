package hostlog

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/coreos/go-systemd/v22/journal"
	"github.com/google/go-cmp/cmp"
)

func TestPriority(t *testing.T) {
	for _, tc := range []struct {
		name  string
		level slog.Level
		want  journal.Priority
	}{
		{"debug", slog.LevelDebug, journal.PriDebug},
		{"below info", slog.LevelInfo - 1, journal.PriDebug},
		{"info", slog.LevelInfo, journal.PriInfo},
		{"info+1", slog.LevelInfo + 1, journal.PriInfo},
		{"notice", LevelNotice, journal.PriNotice},
		{"warn", slog.LevelWarn, journal.PriWarning},
		{"error", slog.LevelError, journal.PriErr},
		{"crit", LevelCrit, journal.PriCrit},
		{"far above crit", LevelCrit + 100, journal.PriCrit},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Priority(tc.level); got != tc.want {
				t.Errorf("Priority(%v) = %d, want %d", tc.level, got, tc.want)
			}
		})
	}
	for p := journal.PriEmerg; p <= journal.PriDebug; p++ {
		want := max(p, journal.PriCrit) // alert and emerg are never logged
		if got := Priority(LevelOf(p)); got != want {
			t.Errorf("Priority(LevelOf(%d)) = %d, want %d", p, got, want)
		}
	}
}

func TestFieldName(t *testing.T) {
	for _, tc := range []struct{ key, want string }{
		{"vm", "SPECTRUM_VM"},
		{"held_back", "SPECTRUM_HELD_BACK"},
		{"g.key", "SPECTRUM_G_KEY"},
		{"Mixed-Case 9", "SPECTRUM_MIXED_CASE_9"},
		{"ünï", "SPECTRUM___N__"}, // a byte each,
		{"", "SPECTRUM_"},
		{strings.Repeat("k", 100), "SPECTRUM_" + strings.Repeat("K", 64-len("SPECTRUM_"))},
	} {
		if got := FieldName(tc.key); got != tc.want {
			t.Errorf("FieldName(%q) = %q, want %q", tc.key, got, tc.want)
		}
	}
}

// sent is one entry a JournalHandler would have sent.
type sent struct {
	Msg  string
	Pri  journal.Priority
	Vars map[string]string
}

func capture(err error) (*JournalHandler, *[]sent, *strings.Builder) {
	var got []sent
	var fb strings.Builder
	h := NewJournalHandler(nil, slog.NewTextHandler(&fb, &slog.HandlerOptions{
		ReplaceAttr: func(g []string, a slog.Attr) slog.Attr {
			if a.Key == slog.TimeKey && len(g) == 0 {
				return slog.Attr{}
			}
			return a
		}}))
	h.send = func(msg string, p journal.Priority, vars map[string]string) error {
		got = append(got, sent{msg, p, vars})
		return err
	}
	return h, &got, &fb
}

func TestJournalHandlerEntries(t *testing.T) {
	h, got, _ := capture(nil)
	log := slog.New(h)
	log.Info("spectrumd serving", "control", "/run/spectrumd/control", "stop", 2*time.Second)
	log.Warn("VM serial output over the host log's rate", "vm", "appvm-lynx", "held_back", 7)
	log.Info("line\nPRIORITY=0\nSPECTRUM_VM=other", "vm", "appvm-lynx", "source", "serial")
	log.Log(context.Background(), LevelCrit, "Kernel panic - not syncing", "vm", "appvm-lynx", "source", "serial")
	log.Debug("control request", "op", "list") // below the level: not sent
	log.With("vm", "netvm").WithGroup("nic").Error("hot-plug", "mac", "02:00:00:00:00:01", "err", errors.New("timed out"))
	log.Info("empty", "why", "")
	want := []sent{
		{"spectrumd serving control=/run/spectrumd/control stop=2s", journal.PriInfo, map[string]string{
			"SYSLOG_IDENTIFIER": "spectrumd", "SPECTRUM_SOURCE": "spectrumd",
			"SPECTRUM_CONTROL": "/run/spectrumd/control", "SPECTRUM_STOP": "2s",
		}},
		{"VM serial output over the host log's rate held_back=7", journal.PriWarning, map[string]string{
			"SYSLOG_IDENTIFIER": "spectrumd/appvm-lynx", "SPECTRUM_SOURCE": "spectrumd",
			"SPECTRUM_VM": "appvm-lynx", "SPECTRUM_HELD_BACK": "7",
		}},
		// The guest's text is the message, whole: the protocol carries
		// the newlines inside the value (go-systemd's length-prefixed
		// form), so they cannot start fields of their own.
		{"line\nPRIORITY=0\nSPECTRUM_VM=other", journal.PriInfo, map[string]string{
			"SYSLOG_IDENTIFIER": "spectrumd/appvm-lynx", "SPECTRUM_SOURCE": "serial", "SPECTRUM_VM": "appvm-lynx",
		}},
		{"Kernel panic - not syncing", journal.PriCrit, map[string]string{
			"SYSLOG_IDENTIFIER": "spectrumd/appvm-lynx", "SPECTRUM_SOURCE": "serial", "SPECTRUM_VM": "appvm-lynx",
		}},
		{`hot-plug nic.mac=02:00:00:00:00:01 nic.err="timed out"`, journal.PriErr, map[string]string{
			"SYSLOG_IDENTIFIER": "spectrumd/netvm", "SPECTRUM_SOURCE": "spectrumd", "SPECTRUM_VM": "netvm",
			"SPECTRUM_NIC_MAC": "02:00:00:00:00:01", "SPECTRUM_NIC_ERR": "timed out",
		}},
		{`empty why=""`, journal.PriInfo, map[string]string{
			"SYSLOG_IDENTIFIER": "spectrumd", "SPECTRUM_SOURCE": "spectrumd", "SPECTRUM_WHY": "",
		}},
	}
	if diff := cmp.Diff(want, *got); diff != "" {
		t.Errorf("entries (-want +got):\n%s", diff)
	}
}

// A record the journal refuses is not lost: it goes to stderr with why.
func TestJournalHandlerFallback(t *testing.T) {
	h, got, fb := capture(errors.New("connection refused"))
	slog.New(h).With("vm", "appvm-lynx").Warn("VM stopped", "exit", 1)
	if len(*got) != 1 {
		t.Fatalf("%d entries sent, want 1", len(*got))
	}
	want := `level=WARN msg="VM stopped" vm=appvm-lynx exit=1 journal_err="connection refused"` + "\n"
	if fb.String() != want {
		t.Errorf("fallback got %q, want %q", fb.String(), want)
	}
}

func TestNewStderr(t *testing.T) {
	for _, tc := range []struct {
		mode, chose string
		json        bool
		want        []string
	}{
		{Stderr, "stderr (-log stderr)", false, []string{" level=NOTICE msg=n", " level=CRIT msg=c vm=x"}},
		{Stderr, "stderr (-log stderr)", true, []string{`"level":"NOTICE","msg":"n"`, `"level":"CRIT","msg":"c","vm":"x"`}},
		// A writer that is not the process's stderr is never the journal's stream.
		{Auto, "stderr (not the process's stderr)", false, []string{" level=NOTICE msg=n"}},
	} {
		var out strings.Builder
		h, chose, err := New(tc.mode, &out, tc.json)
		if err != nil {
			t.Fatal(err)
		}
		if chose != tc.chose {
			t.Errorf("New(%s) chose %q, want %q", tc.mode, chose, tc.chose)
		}
		log := slog.New(h)
		log.Log(context.Background(), LevelNotice, "n")
		log.Log(context.Background(), LevelCrit, "c", "vm", "x")
		for _, w := range tc.want {
			if !strings.Contains(out.String(), w) {
				t.Errorf("New(%s, json %v) wrote %q, want %q in it", tc.mode, tc.json, out.String(), w)
			}
		}
	}
	if _, _, err := New("syslog", nil, false); err == nil || !strings.Contains(err.Error(), `-log "syslog"`) {
		t.Errorf("New(syslog): %v, want an error naming -log and the value", err)
	}
}
