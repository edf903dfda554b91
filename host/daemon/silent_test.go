package daemon

import (
	"log/slog"
	"strings"
	"testing"
	"time"

	"spectrum-os.org/netcfg/internal/syncbuf"
)

// TestSilentVMIsReported: a VM that writes nothing to its serial console
// for SilentAfter is logged once and shows no_output_since in its status;
// one that writes is not.
func TestSilentVMIsReported(t *testing.T) {
	var logBuf syncbuf.Buffer
	d, vmm, _ := newTestDaemon(t, map[string][]string{"mute": nil, "talker": nil, "late": nil}, func(o *Options, v *fakeVMM) {
		o.SilentAfter = 200 * time.Millisecond
		o.Log = slog.New(slog.NewTextHandler(&logBuf, nil))
	})
	vmm.silent = true
	if err := d.Start("mute"); err != nil {
		t.Fatal(err)
	}
	st, _ := d.Status("mute")
	if !st.NoOutputSince.IsZero() {
		t.Errorf("just launched, no_output_since = %v, want unset", st.NoOutputSince)
	}
	waitFor(t, "silent warning", func() bool { return strings.Contains(logBuf.String(), "written nothing to its serial console") })
	st, _ = d.Status("mute")
	if st.State != "running" || !st.NoOutputSince.Equal(st.Since) {
		t.Errorf("silent VM status %+v, want running with no_output_since = since", st)
	}
	if !strings.Contains(logBuf.String(), "vm=mute") {
		t.Errorf("warning does not name the VM:\n%s", logBuf.String())
	}

	vmm.mu.Lock()
	vmm.silent = false
	vmm.mu.Unlock()
	if err := d.Start("talker"); err != nil {
		t.Fatal(err)
	}
	// A silent VM launched after the talker: by the time its warning is
	// logged, the talker's own SilentAfter has passed too.
	vmm.mu.Lock()
	vmm.silent = true
	vmm.mu.Unlock()
	if err := d.Start("late"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "silent warning for late", func() bool {
		return strings.Contains(logBuf.String(), "its guest may not boot\" vm=late")
	})
	if st, _ := d.Status("talker"); !st.NoOutputSince.IsZero() {
		t.Errorf("talking VM reported silent: %+v", st)
	}
	if n := strings.Count(logBuf.String(), "written nothing"); n != 2 || strings.Contains(logBuf.String(), "its guest may not boot\" vm=talker") {
		t.Errorf("%d silent warnings, want 2 (for mute and late, not talker):\n%s", n, logBuf.String())
	}

	// Once the silent guest writes, it is no longer silent.
	vmm.inst("mute").w.Write([]byte("late boot\n"))
	waitFor(t, "mute no longer silent", func() bool { st, _ := d.Status("mute"); return st.NoOutputSince.IsZero() })
}
