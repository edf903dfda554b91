package vmm

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"spectrum-os.org/netcfg/internal/stubkernel"
	"spectrum-os.org/netcfg/internal/syncbuf"
)

// requireRoot skips without root, except in CI.
func requireRoot(t *testing.T, why string) {
	t.Helper()
	if os.Geteuid() != 0 {
		if os.Getenv("CI") != "" {
			t.Fatalf("must run as root in CI: %s", why)
		}
		t.Skipf("needs root (%s); runs in CI", why)
	}
}

// vmUser is the unprivileged user QEMU runs as in these tests.
func vmUser(t *testing.T) string {
	t.Helper()
	if _, err := user.Lookup("spectrum-vm"); err == nil {
		return "spectrum-vm"
	} else if os.Getenv("CI") != "" {
		t.Fatalf("user spectrum-vm missing in CI (make deps creates it): %v", err)
	}
	return "nobody"
}

// TestShutdownWithoutCAPKILL: spectrumd without CAP_KILL (as under a unit
// that forgot it) cannot kill a QEMU running under another uid. Shutdown of
// a guest that ignores the power button must then fail at once with an
// error that says so (EPERM, CAP_KILL), not wait for an exit that never
// comes. The daemon side runs in a child process whose bounding set lacks
// CAP_KILL (setpriv). (Before the fix Kill's error was dropped and Shutdown
// hung for good.)
func TestShutdownWithoutCAPKILL(t *testing.T) {
	requireQEMU(t)
	requireRoot(t, "QEMU runs under another uid")
	if os.Getenv("SPECTRUM_VMM_HELPER") != "" {
		return
	}
	setpriv, err := exec.LookPath("setpriv")
	if err != nil {
		t.Fatalf("setpriv (util-linux) is needed to drop CAP_KILL: %v", err)
	}
	ctx, cancel := context.WithTimeout(testContext(t, 60*time.Second), 40*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, setpriv, "--bounding-set=-kill", "--inh-caps=-kill", "--",
		os.Args[0], "-test.run=^TestHelperShutdownWithoutCAPKILL$", "-test.v")
	cmd.Env = append(os.Environ(), "SPECTRUM_VMM_HELPER="+vmUser(t))
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

// TestHelperShutdownWithoutCAPKILL is TestShutdownWithoutCAPKILL's child:
// it launches a VM whose guest ignores the power button and shuts it down.
func TestHelperShutdownWithoutCAPKILL(t *testing.T) {
	runAs := os.Getenv("SPECTRUM_VMM_HELPER")
	if runAs == "" {
		t.Skip("not a test (in CI neither): the helper process of TestShutdownWithoutCAPKILL")
	}
	var log syncbuf.Buffer
	q := testVMM(&log)
	q.opt.RunAs = runAs
	inst, err := q.Launch(context.Background(), testSpec(t, "stubborn", stubkernel.ELF()))
	if err != nil {
		t.Fatalf("Launch: %v\n%s", err, log.String())
	}
	fmt.Printf("qemu-pid=%d\n", inst.PID())
	err = inst.Shutdown(500 * time.Millisecond)
	fmt.Printf("shutdown error: %v\n", err)
	fmt.Printf("eperm=%v\n", errors.Is(err, syscall.EPERM))
	fmt.Printf("alive=%v\n", syscall.Kill(inst.PID(), 0) != syscall.ESRCH)
}
