package cli

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"spectrum-os.org/netcfg/internal/nstest"
)

// TestRelaunchRefusesSwappedImage: a VM runs under a real `spectrumd
// serve`; its blk/root.img is then replaced by a symlink to a file only
// root can read (mode 0600 in a root-only directory), and its QEMU is
// killed. The supervisor's relaunch must refuse, with an error naming
// blk/root.img, and no process may ever hold the other file. (Before
// spectrumd opened the files itself, QEMU opened the image by its path as
// root and the guest got the other file as its disk.)
func TestRelaunchRefusesSwappedImage(t *testing.T) {
	requireQEMU(t)
	ns := nstest.New(t)
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	writeStubData(t, data)
	private := filepath.Join(dir, "root-only")
	if err := os.Mkdir(private, 0o700); err != nil {
		t.Fatal(err)
	}
	secret := filepath.Join(private, "secret.img")
	if err := os.WriteFile(secret, bytes.Repeat([]byte("SECRET "), 1<<17), 0o600); err != nil {
		t.Fatal(err)
	}
	state, run, logPath := filepath.Join(dir, "state"), filepath.Join(dir, "run"), filepath.Join(dir, "spectrumd.log")
	p := startServe(t, ns, logPath, "-data", data, "-state", state, "-run", run, "-accel", "tcg", "-memory", "64",
		"-stop-timeout", "500ms", "-start", "net")
	first := p.waitRunning(t, "net")["net"].PID

	img := filepath.Join(data, "net", "blk", "root.img")
	if err := os.Remove(img); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(secret, img); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(first, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}

	// The supervisor retries with backoff (1 s, 2 s, 4 s...): wait for two
	// refusals, watching every QEMU for the secret all the while.
	deadline := time.Now().Add(30 * time.Second)
	for {
		if pid, fd := holder(t, secret); pid != 0 {
			p.fail(t, "process %d holds the root-only file as descriptor %s", pid, fd)
		}
		log, _ := os.ReadFile(logPath)
		if refusals(string(log), img) >= 2 {
			break
		}
		if time.Now().After(deadline) {
			p.fail(t, "no two launches refused naming %s within 30 s", img)
		}
		time.Sleep(20 * time.Millisecond)
	}
	log, _ := os.ReadFile(logPath)
	for _, l := range strings.Split(string(log), "\n") {
		if refusals(l, img) > 0 {
			t.Logf("spectrumd: %s", l)
			break
		}
	}
	if n := strings.Count(string(log), `msg="QEMU started"`); n != 1 {
		p.fail(t, "QEMU started %d times, want once (before the swap)", n)
	}
}

// refusals counts spectrumd's log lines that name the image and say that
// it now leads out of the VM's directory.
func refusals(log, img string) int {
	n := 0
	for _, l := range strings.Split(log, "\n") {
		if strings.Contains(l, img) && strings.Contains(l, "symlink leads out of the VM's directory") {
			n++
		}
	}
	return n
}

// holder returns a process that has a descriptor of the file p, and which
// descriptor, or 0.
func holder(t *testing.T, p string) (int, string) {
	t.Helper()
	want, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	procs, _ := filepath.Glob("/proc/[0-9]*/fd/*")
	for _, fd := range procs {
		if fi, err := os.Stat(fd); err == nil && os.SameFile(fi, want) {
			var pid int
			fmt.Sscanf(fd, "/proc/%d/", &pid)
			return pid, filepath.Base(fd)
		}
	}
	return 0, ""
}
