package vmm

import (
	"errors"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"spectrum-os.org/netcfg/host/daemon"
	"spectrum-os.org/netcfg/internal/stubkernel"
	"spectrum-os.org/netcfg/internal/syncbuf"
)

// TestKillOrphans: a QEMU still running from RUN/vms/NAME/qemu.pid when
// spectrumd starts (left by one that died) is killed, the kill is logged,
// and RUN/vms goes; a pid file whose process is gone is only removed.
func TestKillOrphans(t *testing.T) {
	requireQEMU(t)
	ctx := testContext(t, 60*time.Second)
	run := t.TempDir()
	spec := testSpec(t, "left", stubkernel.ELF())
	dir := filepath.Join(run, "vms", "left")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	spec.QMPPath, spec.ConsolePath, spec.PIDPath = filepath.Join(dir, "qmp.sock"), filepath.Join(dir, "console.sock"), filepath.Join(dir, daemon.PIDFile)
	var log syncbuf.Buffer
	inst, err := testVMM(t, &log).Launch(ctx, spec)
	if err != nil {
		t.Fatalf("Launch: %v\n%s", err, log.String())
	}
	defer shutdownNow(inst)
	stale := filepath.Join(run, "vms", "gone", daemon.PIDFile)
	os.MkdirAll(filepath.Dir(stale), 0o700)
	os.WriteFile(stale, []byte("1 1\n"), 0o600) // pid 1 did not start at tick 1

	var out syncbuf.Buffer
	KillOrphans(run, slog.New(slog.NewTextHandler(&out, nil)))
	waited := make(chan error, 1)
	go func() { waited <- inst.Wait() }()
	select {
	case <-waited:
	case <-ctx.Done():
		t.Fatalf("the orphan QEMU %d still runs after KillOrphans:\n%s", inst.PID(), out.String())
	}
	if !strings.Contains(out.String(), "killed an orphaned QEMU") || strings.Count(out.String(), "killed") != 1 {
		t.Errorf("want one kill logged:\n%s", out.String())
	}
	if _, err := os.Stat(filepath.Join(run, "vms")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("RUN/vms left behind (%v)", err)
	}
}
