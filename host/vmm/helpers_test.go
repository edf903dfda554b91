package vmm

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"spectrum-os.org/netcfg/host/config"
	"spectrum-os.org/netcfg/host/daemon"
	"spectrum-os.org/netcfg/host/qemu"
	"spectrum-os.org/netcfg/internal/syncbuf"
	"spectrum-os.org/netcfg/internal/testenv"
)

// requireQEMU stops the test where QEMU is missing (internal/testenv), or
// where it cannot run as spectrumd runs it (its own uid and network
// namespace need root).
func requireQEMU(t *testing.T) {
	t.Helper()
	testenv.Tool(t, qemu.DefaultBinary, "make deps installs qemu-system-x86")
	testenv.Root(t, "to start QEMU under its own uid in a network namespace of its own")
}

func TestMain(m *testing.M) {
	testenv.RunHelper(map[string]func() int{helperShutdown: shutdownHelper, helperFakeQEMU: fakeQEMUHelper})
	os.Exit(m.Run())
}

// testSpec writes a VM directory booting kernel (a stub kernel) and
// returns the daemon's Spec for it, with the sockets under a fresh run
// directory.
func testSpec(t *testing.T, name string, kernel []byte) daemon.Spec {
	t.Helper()
	dir := filepath.Join(t.TempDir(), name)
	for _, f := range []struct {
		name string
		data []byte
	}{
		{"vmlinux", kernel},
		{"blk/root.img", make([]byte, 1<<20)},
	} {
		p := filepath.Join(dir, f.name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, f.data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	run := t.TempDir()
	return daemon.Spec{
		VM:          &config.VM{Name: name, Dir: dir, Kernel: filepath.Join(dir, "vmlinux"), Images: []string{filepath.Join(dir, "blk/root.img")}},
		ConsolePath: filepath.Join(run, "console.sock"),
		QMPPath:     filepath.Join(run, "qmp.sock"),
		PIDPath:     filepath.Join(run, daemon.PIDFile),
	}
}

// testVMM is a VMM as serve makes it (TCG, small guests, uids of a test
// range) logging into log.
func testVMM(t *testing.T, log *syncbuf.Buffer) *QEMU {
	q, err := New(Options{Accel: "tcg", MemoryMiB: 64, UIDs: testUIDs(t), Log: slog.New(slog.NewTextHandler(log, nil))})
	if err != nil {
		t.Fatal(err)
	}
	return q
}

// testUIDs is an allocator over a range of its own for this test binary,
// kept in memory.
func testUIDs(t testing.TB) *UIDs {
	first := uint32(430000 + (os.Getpid()%1000)*100)
	u, err := OpenUIDs("", UIDRange{first, first + 99}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// testContext ends a little before the test's own deadline.
func testContext(t *testing.T, max time.Duration) context.Context {
	d := time.Now().Add(max)
	if td, ok := t.Deadline(); ok && td.Add(-5*time.Second).Before(d) {
		d = td.Add(-5 * time.Second)
	}
	ctx, cancel := context.WithDeadline(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// shutdownNow kills inst's QEMU at once (a shutdown whose time is up).
func shutdownNow(inst daemon.Instance) error {
	ctx, cancel := context.WithTimeout(context.Background(), 0)
	defer cancel()
	return inst.Shutdown(ctx)
}
