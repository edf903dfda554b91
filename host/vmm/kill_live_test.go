package vmm

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"spectrum-os.org/netcfg/host/config"
	"spectrum-os.org/netcfg/host/daemon"
	"spectrum-os.org/netcfg/internal/stubkernel"
	"spectrum-os.org/netcfg/internal/syncbuf"
	"spectrum-os.org/netcfg/internal/testenv"
)

// TestShutdownWithoutCAPKILL: spectrumd without CAP_KILL (as under a unit
// that forgot it) cannot kill a QEMU running under another uid. Shutdown of
// a guest that ignores the power button must then fail at once with an
// error that says so (EPERM, CAP_KILL), not wait for an exit that never
// comes. The daemon side runs in a helper process whose bounding set lacks
// CAP_KILL (setpriv). (Before the fix Kill's error was dropped and Shutdown
// hung for good.)
func TestShutdownWithoutCAPKILL(t *testing.T) {
	requireQEMU(t)
	setpriv := testenv.Tool(t, "setpriv", "util-linux provides it")
	ctx, cancel := context.WithTimeout(testContext(t, 60*time.Second), 40*time.Second)
	defer cancel()
	cmd := testenv.HelperCommand(ctx, helperShutdown, "SPECTRUM_VMM_DIR="+t.TempDir())
	cmd.Args = append([]string{setpriv, "--bounding-set=-kill", "--inh-caps=-kill", "--"}, cmd.Path)
	cmd.Path = setpriv
	cmd.WaitDelay = time.Second
	out, err := cmd.CombinedOutput()
	if pid := field(string(out), "qemu-pid="); pid != "" {
		n, _ := strconv.Atoi(pid)
		defer syscall.Kill(n, syscall.SIGKILL) // we have CAP_KILL
	}
	if ctx.Err() != nil {
		t.Fatalf("Shutdown without CAP_KILL hung (killed after 40 s):\n%s", out)
	}
	if err != nil {
		t.Fatalf("helper: %v\n%s", err, out)
	}
	t.Logf("helper:\n%s", out)
	if field(string(out), "eperm=") != "true" || field(string(out), "alive=") != "true" {
		t.Errorf("want Shutdown to fail with EPERM and QEMU still running:\n%s", out)
	}
	if !strings.Contains(string(out), "CAP_KILL") {
		t.Errorf("the error does not say what is missing (CAP_KILL):\n%s", out)
	}
}

// field returns the word after key in out.
func field(out, key string) string {
	_, rest, ok := strings.Cut(out, key)
	if !ok {
		return ""
	}
	return strings.Fields(rest + " ")[0]
}

// helperShutdown is TestShutdownWithoutCAPKILL's helper process: it
// launches a VM whose guest ignores the power button and shuts it down.
const helperShutdown = "vmm-shutdown"

func shutdownHelper() int {
	dir := os.Getenv("SPECTRUM_VMM_DIR")
	spec := daemon.Spec{
		VM: &config.VM{Name: "stubborn", Dir: dir, Kernel: filepath.Join(dir, "vmlinux"),
			Images: []string{filepath.Join(dir, "root.img")}},
		ConsolePath: filepath.Join(dir, "console.sock"),
		QMPPath:     filepath.Join(dir, "qmp.sock"),
	}
	if err := errors.Join(os.WriteFile(spec.VM.Kernel, stubkernel.ELF(), 0o644),
		os.WriteFile(spec.VM.Images[0], make([]byte, 1<<20), 0o644)); err != nil {
		fmt.Println(err)
		return 1
	}
	var log syncbuf.Buffer
	uids, _ := OpenUIDs("", UIDRange{440000, 440099}, nil)
	q, err := New(Options{Accel: "tcg", MemoryMiB: 64, UIDs: uids, Log: slog.New(slog.NewTextHandler(&log, nil))})
	if err != nil {
		fmt.Println(err)
		return 1
	}
	inst, err := q.Launch(context.Background(), spec)
	if err != nil {
		fmt.Printf("Launch: %v\n%s", err, log.String())
		return 1
	}
	fmt.Printf("qemu-pid=%d\n", inst.PID())
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	err = inst.Shutdown(ctx)
	cancel()
	fmt.Printf("shutdown error: %v\n", err)
	fmt.Printf("eperm=%v\n", errors.Is(err, syscall.EPERM))
	fmt.Printf("alive=%v\n", syscall.Kill(inst.PID(), 0) != syscall.ESRCH)
	return 0
}
