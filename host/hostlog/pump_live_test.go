package hostlog_test

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"spectrum-os.org/netcfg/host/hostlog"
	"spectrum-os.org/netcfg/host/vmlog"
	"spectrum-os.org/netcfg/internal/journaldtest"
)

// A guest's serial console, through vmlog.Pump as spectrumd reads it, into
// a real journald: journalctl SPECTRUM_VM=appvm-lynx is the guest's lines,
// each at its priority, escaped; lines that look like journal fields are
// lines of that VM; a debug line is in the VM's log file only.
func TestSerialToJournalLive(t *testing.T) {
	j := journaldtest.Get(t)
	h, _, err := hostlog.New(hostlog.Journal, os.Stderr, false)
	if err != nil {
		t.Fatal(err)
	}
	serial := "<6>[    0.000000] Linux version 6.1.0\n" +
		"[    1.2] spectrum-netcfg: eth0 0a:b3:ec:00:a5:46: added 100.64.165.70/16\n" +
		"\x1b[2K\rlevel=INFO forged\n" +
		"line one\nPRIORITY=0\nSPECTRUM_VM=other\nSYSLOG_IDENTIFIER=sshd\n" +
		"<0>[    3.0] Kernel panic - not syncing: VFS: Unable to mount root fs\n" +
		"<7>debug noise\n" +
		"mount: error: /dev/vda: no such device\n" +
		"no newline at the end"
	lf := &vmlog.File{Path: filepath.Join(t.TempDir(), "appvm-lynx.log")}
	vmlog.Pump(strings.NewReader(serial), "appvm-lynx", slog.New(h), lf)
	lf.Close()

	type entry struct{ Message, Priority, Identifier, VM, Source string }
	want := []entry{
		{"[    0.000000] Linux version 6.1.0", "6", "", "", ""},
		{"[    1.2] spectrum-netcfg: eth0 0a:b3:ec:00:a5:46: added 100.64.165.70/16", "6", "", "", ""},
		{`\x1b[2K\rlevel=INFO forged`, "6", "", "", ""},
		{"line one", "6", "", "", ""},
		{"PRIORITY=0", "6", "", "", ""},
		{"SPECTRUM_VM=other", "6", "", "", ""},
		{"SYSLOG_IDENTIFIER=sshd", "6", "", "", ""},
		{"[    3.0] Kernel panic - not syncing: VFS: Unable to mount root fs", "2", "", "", ""},
		{"mount: error: /dev/vda: no such device", "3", "", "", ""},
		{"no newline at the end…", "6", "", "", ""},
	}
	for i := range want {
		want[i].Identifier, want[i].VM, want[i].Source = "spectrumd/appvm-lynx", "appvm-lynx", "serial"
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var got []entry
	for _, e := range j.Wait(ctx, t, len(want), "SPECTRUM_VM=appvm-lynx") {
		got = append(got, entry{e["MESSAGE"], e["PRIORITY"], e["SYSLOG_IDENTIFIER"], e["SPECTRUM_VM"], e["SPECTRUM_SOURCE"]})
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("journalctl SPECTRUM_VM=appvm-lynx (-want +got):\n%s", diff)
	}
	for _, m := range []string{"SPECTRUM_VM=other", "PRIORITY=0", "PRIORITY=1", "SYSLOG_IDENTIFIER=sshd"} {
		if es := j.Entries(t, m); len(es) != 0 {
			t.Errorf("journalctl %s: %d entries, want none: %v", m, len(es), es)
		}
	}
	b, err := os.ReadFile(lf.Path)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), "\n<7>debug noise\n") || !strings.HasPrefix(string(b), "<6>[    0.000000] Linux") {
		t.Errorf("the VM's log file lost the guest's own text:\n%s", b)
	}
	out, err := j.Journalctl("SPECTRUM_VM=appvm-lynx")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("journalctl SPECTRUM_VM=appvm-lynx:\n%s", out)
	if out, err = j.Journalctl("SPECTRUM_VM=appvm-lynx", "-p", "err"); err != nil {
		t.Fatal(err)
	}
	t.Logf("journalctl SPECTRUM_VM=appvm-lynx -p err:\n%s", out)
}
