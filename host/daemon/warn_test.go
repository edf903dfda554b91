package daemon

import (
	"log/slog"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"

	"spectrum-os.org/netcfg/host/alloc"
	"spectrum-os.org/netcfg/host/config"
	"spectrum-os.org/netcfg/internal/syncbuf"
)

// warnLinks is staticLinks whose VMs have the warnings a test sets.
type warnLinks struct {
	staticLinks
	mu       sync.Mutex
	warnings map[string][]config.Warning
}

func (w *warnLinks) set(vm string, ws ...config.Warning) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.warnings[vm] = ws
}

func (w *warnLinks) Load(held []alloc.Link) (*config.Config, []alloc.Link, error) {
	cfg, links, err := w.staticLinks.Load(held)
	w.mu.Lock()
	defer w.mu.Unlock()
	for name, vm := range cfg.VMs {
		vm.Warnings = w.warnings[name]
	}
	return cfg, links, err
}

// TestWarningsShownAndLoggedOnce: a VM directory's warnings (entries not
// used) are in the VM's status as the last load found them, and in the
// daemon's log once each: not again at every reload.
func TestWarningsShownAndLoggedOnce(t *testing.T) {
	typo := config.Warning{Path: "data/app/provider/net", Msg: "unknown entry, not used: did you mean providers/net?"}
	raw := config.Warning{Path: "data/app/blk/disk.raw", Msg: "not a *.img disk image, not given to the VM"}
	links := &warnLinks{staticLinks: staticLinks{vms: map[string][]string{"app": nil, "net": nil}}, warnings: map[string][]config.Warning{}}
	links.set("app", typo)
	var logBuf syncbuf.Buffer
	d, _, _ := newTestDaemon(t, nil, func(o *Options, _ *fakeVMM) {
		o.Links = links
		o.Log = slog.New(slog.NewTextHandler(&logBuf, nil))
	})
	logged := func() int { return strings.Count(logBuf.String(), "VM directory entry not used") }
	status := func(name string) []string {
		t.Helper()
		st, err := d.Status(name)
		if err != nil {
			t.Fatal(err)
		}
		return st.Warnings
	}
	if diff := cmp.Diff([]string{typo.Path + ": " + typo.Msg}, status("app")); diff != "" {
		t.Errorf("status warnings (-want +got):\n%s", diff)
	}
	if w := status("net"); w != nil {
		t.Errorf("net: %q", w)
	}
	if n := logged(); n != 1 || !strings.Contains(logBuf.String(), "path=data/app/provider/net") {
		t.Errorf("%d warnings logged, want 1:\n%s", n, logBuf.String())
	}
	for range 3 {
		if err := d.reloadConfig(); err != nil {
			t.Fatal(err)
		}
	}
	if n := logged(); n != 1 {
		t.Errorf("after reloads: %d warnings logged, want still 1:\n%s", n, logBuf.String())
	}
	links.set("app", typo, raw)
	if err := d.reloadConfig(); err != nil {
		t.Fatal(err)
	}
	if n := logged(); n != 2 || !strings.Contains(logBuf.String(), "path=data/app/blk/disk.raw") {
		t.Errorf("a new warning: %d logged, want 2:\n%s", n, logBuf.String())
	}
	if got := status("app"); len(got) != 2 {
		t.Errorf("status warnings: %q", got)
	}
	links.set("app")
	if err := d.reloadConfig(); err != nil {
		t.Fatal(err)
	}
	if w := status("app"); w != nil {
		t.Errorf("fixed, status still warns: %q", w)
	}
}
