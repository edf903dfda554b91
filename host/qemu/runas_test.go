package qemu

import (
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"spectrum-os.org/netcfg/internal/testenv"
)

// vmUser is the user tests run QEMU as: spectrum-vm, which make deps
// creates; elsewhere than CI, nobody stands in for it.
func vmUser(t *testing.T) string {
	t.Helper()
	testenv.Root(t, "for QEMU to switch user")
	if _, err := user.Lookup("spectrum-vm"); err == nil {
		return "spectrum-vm"
	} else if testenv.InCI() {
		t.Fatalf("user spectrum-vm missing in CI (make deps creates it): %v", err)
	}
	return "nobody"
}

// procStatus returns the fields of /proc/PID/status.
func procStatus(t *testing.T, pid int) map[string]string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, l := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(l, ":"); ok {
			out[k] = strings.Join(strings.Fields(v), " ")
		}
	}
	return out
}

// TestRunAs boots the stub kernel with QEMU switching to the unprivileged
// user: the kernel, initramfs and image sit in a directory only root can
// read, so it boots only if QEMU opened them before the switch. QEMU then
// runs with that uid and gid and no capabilities, and holds its pid file.
func TestRunAs(t *testing.T) {
	requireQEMU(t)
	name := vmUser(t)
	u, err := user.Lookup(name)
	if err != nil {
		t.Fatal(err)
	}
	ctx := testContext(t, 60*time.Second)
	c := testConfig(t)
	c.RunAs = name
	c.PIDFile = filepath.Join(t.TempDir(), "qemu.pid")
	p, stderr := start(t, ctx, c)
	seen, serial := serialLines(p, smokeMessage)
	select {
	case <-seen:
	case <-ctx.Done():
		t.Fatalf("no %q on the serial port\nserial:\n%s\nstderr: %s\nreproduce: %s", smokeMessage, serial, stderr, Quote(p.Argv))
	}
	st := procStatus(t, p.Pid())
	want := strings.Repeat(u.Uid+" ", 3) + u.Uid
	wantG := strings.Repeat(u.Gid+" ", 3) + u.Gid
	if st["Uid"] != want || st["Gid"] != wantG || st["CapEff"] != "0000000000000000" || st["CapPrm"] != "0000000000000000" {
		t.Errorf("QEMU runs with Uid %q Gid %q CapEff %q CapPrm %q; want uid and gid of %s (%s, %s), no capabilities",
			st["Uid"], st["Gid"], st["CapEff"], st["CapPrm"], name, u.Uid, u.Gid)
	}
	if st["Seccomp"] != "2" {
		t.Errorf("QEMU Seccomp = %q, want 2 (filter)", st["Seccomp"])
	}
	if b, _ := os.ReadFile(c.PIDFile); strings.TrimSpace(string(b)) != strconv.Itoa(p.Pid()) {
		t.Errorf("pid file holds %q, want %d", b, p.Pid())
	}
	if s, err := p.QMP.Status(ctx); err != nil || !s.Running {
		t.Errorf("query-status = %+v, %v", s, err)
	}
	if graceful, err := p.Stop(time.Second); err != nil {
		t.Errorf("Stop: %v", err)
	} else if !graceful {
		t.Log("killed after the power button (the stub guest ignores it)")
	}
	for _, f := range []string{c.QMPSocket, c.ConsoleSocket, c.PIDFile} {
		if _, err := os.Lstat(f); err == nil {
			t.Errorf("%s left behind", f)
		}
	}
}

// TestKillOrphan: a QEMU under RunAs outlives its parent (the user switch
// clears the parent-death signal), and KillOrphan finds it through the lock
// on its pid file and kills it.
func TestKillOrphan(t *testing.T) {
	requireQEMU(t)
	ctx := testContext(t, 30*time.Second)
	c := testConfig(t)
	c.RunAs = vmUser(t)
	c.PIDFile = filepath.Join(t.TempDir(), "qemu.pid")
	pid := startInHelper(t, ctx, c)
	defer syscall.Kill(pid, syscall.SIGKILL)
	time.Sleep(500 * time.Millisecond)
	if gone(pid) {
		t.Fatalf("QEMU %d under RunAs died with its parent: the parent-death signal survived the user switch, update Config.RunAs's doc", pid)
	}
	got, err := KillOrphan(c.PIDFile, 5*time.Second)
	if err != nil || got != pid {
		t.Fatalf("KillOrphan = %d, %v; want %d killed", got, err, pid)
	}
	if !gone(pid) {
		t.Errorf("QEMU %d still running", pid)
	}
	if _, err := os.Lstat(c.PIDFile); err == nil {
		t.Error("pid file left behind")
	}
	// A stale pid file (nobody holds its lock) is removed, nothing killed.
	os.WriteFile(c.PIDFile, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o600)
	if got, err := KillOrphan(c.PIDFile, time.Second); err != nil || got != 0 {
		t.Errorf("KillOrphan of a stale file = %d, %v; want 0, nil", got, err)
	}
	if _, err := os.Lstat(c.PIDFile); err == nil {
		t.Error("stale pid file left behind")
	}
}
