// Package journal is the end-to-end test of a guest's serial console in the
// host's journal: a Linux guest under spectrumd, with a real journald.
package journal

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"spectrum-os.org/netcfg/internal/journaldtest"
	"spectrum-os.org/netcfg/internal/nstest"
	"spectrum-os.org/netcfg/vmtest/vm"
)

func TestMain(m *testing.M) { os.Exit(journaldtest.Main(m)) }

// TestGuestConsoleInJournal boots the test guest with the kernel's console
// lines carrying their priorities (console_msg_format=syslog) under
// `spectrumd serve -log journal`: journalctl SPECTRUM_VM=appvm-lynx reads
// its console, each line at its kernel's priority with the "<N>" taken off;
// the kernel's emerg ("reboot: Power down") is crit, nothing is alert or
// emerg; the VM's log file keeps the lines as the guest wrote them.
func TestGuestConsoleInJournal(t *testing.T) {
	j := journaldtest.Get(t)
	a := vm.BuildAssets(t, vm.Require(t))
	bin, err := vm.BuildSpectrumd(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ns := nstest.New(t)
	data, state := t.TempDir(), t.TempDir()
	if _, err := vm.WriteDir(data, vm.Spec{Name: "appvm-lynx", Cmdline: "console_msg_format=syslog"}, a); err != nil {
		t.Fatal(err)
	}
	d := vm.Serve(t, ns, bin, data, state, "-log", "journal")
	p := d.Start(t, "appvm-lynx")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	select {
	case <-p.Exited(): // the test init powers the guest off
	case <-ctx.Done():
		t.Fatal("the guest did not power off")
	}
	want := []struct{ match, priority string }{
		{"Linux version ", "5"},     // the kernel's banner: pr_notice
		{"reboot: Power down", "2"}, // pr_emerg, a guest's at most crit
	}
	for _, w := range want {
		var found []journaldtest.Entry
		for _, e := range j.Entries(t, "SPECTRUM_VM=appvm-lynx", "SPECTRUM_SOURCE=serial") {
			if strings.Contains(e["MESSAGE"], w.match) {
				found = append(found, e)
			}
		}
		if len(found) != 1 || found[0]["PRIORITY"] != w.priority || !strings.HasPrefix(found[0]["MESSAGE"], "[") {
			t.Errorf("journalctl SPECTRUM_VM=appvm-lynx: %q: %v; want one entry, priority %s, its <N> taken off", w.match, found, w.priority)
		}
	}
	for _, pri := range []string{"0", "1"} {
		if es := j.Entries(t, "SPECTRUM_VM=appvm-lynx", "PRIORITY="+pri); len(es) != 0 {
			t.Errorf("journalctl SPECTRUM_VM=appvm-lynx PRIORITY=%s: %v, want none", pri, es)
		}
	}
	if out := d.Output(); out != "" {
		t.Errorf("spectrumd -log journal wrote to stderr:\n%s", out)
	}
	b, err := os.ReadFile(filepath.Join(state, "logs", "appvm-lynx.log"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), "<5>[") || !strings.Contains(string(b), "<0>[") {
		t.Errorf("the VM's log file lost the kernel's priorities:\n%s", b)
	}
	out, err := j.Journalctl("SPECTRUM_VM=appvm-lynx", "-p", "notice")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("journalctl SPECTRUM_VM=appvm-lynx -p notice:\n%s", out)
}
