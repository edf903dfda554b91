package qemu

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"

	"spectrum-os.org/netcfg/internal/testenv"
	"spectrum-os.org/netcfg/vmtest/kernel"
)

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

// TestIsolation boots the stub kernel the way spectrumd does and checks,
// from outside, what QEMU holds:
//   - its own uid and gid from exec on (never root), no supplementary
//     groups, no capabilities, the seccomp filter on;
//   - a network namespace of its own with nothing but a loopback that is
//     down (read back with ip -j in that namespace);
//   - exactly the descriptors it should have: no pid file (spectrumd
//     writes it, QEMU could rewrite it before), and no descriptor the test
//     process holds without close-on-exec (a stray one spectrumd inherited);
//   - the kernel, initramfs and image are 0600 files in a directory only
//     root can read: QEMU's uid may open none of them, yet it boots, from a
//     sealed copy of the kernel and initramfs and the image's descriptor.
func TestIsolation(t *testing.T) {
	requireQEMU(t)
	ctx := testContext(t, 60*time.Second)
	c := testConfig(t)
	dir := testDir(c)
	for _, f := range append([]*os.File{c.Kernel, c.Initramfs}, c.Images...) {
		if err := f.Chmod(0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	c.PIDFile = filepath.Join(t.TempDir(), "qemu.pid")
	// A descriptor without close-on-exec, as a shell or supervisor may
	// leave to spectrumd.
	var stray [2]int
	if err := unix.Pipe2(stray[:], 0); err != nil {
		t.Fatal(err)
	}
	defer unix.Close(stray[0])
	defer unix.Close(stray[1])

	p, stderr := start(t, ctx, c)
	seen, serial := serialLines(p, smokeMessage)
	select {
	case <-seen:
	case <-ctx.Done():
		t.Fatalf("no %q on the serial port\nserial:\n%s\nstderr: %s\nreproduce: %s", smokeMessage, serial, stderr, Quote(p.Argv))
	}

	st := procStatus(t, p.Pid())
	id := func(n uint32) string { return strings.Repeat(strconv.Itoa(int(n))+" ", 3) + strconv.Itoa(int(n)) }
	want := map[string]string{"Uid": id(c.UID), "Gid": id(c.GID), "Groups": "",
		"CapInh": "0000000000000000", "CapPrm": "0000000000000000", "CapEff": "0000000000000000",
		"CapAmb": "0000000000000000", "Seccomp": "2", "NoNewPrivs": "1"}
	got := map[string]string{}
	for k := range want {
		got[k] = st[k]
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("/proc/%d/status (-want +got):\n%s", p.Pid(), diff)
	}

	ours, _ := os.Readlink("/proc/self/ns/net")
	theirs, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/net", p.Pid()))
	if ours == theirs || theirs == "" {
		t.Errorf("QEMU's network namespace %q, ours %q: want one of its own", theirs, ours)
	}
	out, err := exec.Command("nsenter", "--net=/proc/"+strconv.Itoa(p.Pid())+"/ns/net", "ip", "-j", "link", "show").Output()
	if err != nil {
		t.Fatalf("ip link in QEMU's namespace: %v", err)
	}
	var links []struct {
		Ifname    string `json:"ifname"`
		Operstate string `json:"operstate"`
	}
	if err := json.Unmarshal(out, &links); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"lo DOWN"}, linkStates(links)); diff != "" {
		t.Errorf("links in QEMU's namespace (-want +got):\n%s", diff)
	}

	if b, _ := os.ReadFile(c.PIDFile); !strings.HasPrefix(string(b), strconv.Itoa(p.Pid())+" ") {
		t.Errorf("pid file holds %q, want %d and its start time", b, p.Pid())
	}
	var strayIno, serialIno unix.Stat_t
	unix.Fstat(stray[0], &strayIno)
	unix.Fstat(int(p.Serial.Fd()), &serialIno)
	t.Logf("descriptors: %v", descriptors(t, p.Pid()))
	for fd, what := range descriptors(t, p.Pid()) {
		ok := false
		switch {
		case strings.HasPrefix(what, "anon_inode:"), strings.HasPrefix(what, "socket:"), what == "/dev/null":
			ok = true // QEMU's own event descriptors; QMP and the console
		case what == fmt.Sprintf("pipe:[%d]", serialIno.Ino):
			ok = true
		case strings.HasPrefix(what, "pipe:") && (fd == 1 || fd == 2):
			ok = what != fmt.Sprintf("pipe:[%d]", strayIno.Ino) // its stderr
		case strings.HasPrefix(what, "/memfd:spectrumd copy of "):
			ok = fd == 6 || fd == 7 // the kernel's and initramfs's copies
		case what == c.Images[0].Name():
			ok = true
		}
		if !ok {
			t.Errorf("QEMU holds descriptor %d: %s, which it should not have", fd, what)
		}
	}
	for _, f := range []*os.File{c.Kernel, c.Initramfs} {
		if holds(t, p.Pid(), f) {
			t.Errorf("QEMU holds %s itself, which its uid may not read: want a copy", f.Name())
		}
	}
}

func linkStates(links []struct {
	Ifname    string `json:"ifname"`
	Operstate string `json:"operstate"`
}) []string {
	var out []string
	for _, l := range links {
		out = append(out, l.Ifname+" "+l.Operstate)
	}
	return out
}

// descriptors lists the descriptors of process pid and what each links to.
func descriptors(t *testing.T, pid int) map[int]string {
	t.Helper()
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatal(err)
	}
	out := map[int]string{}
	for _, e := range ents {
		fd, _ := strconv.Atoi(e.Name())
		out[fd], _ = os.Readlink(fmt.Sprintf("/proc/%d/fd/%d", pid, fd))
	}
	return out
}

// TestReadableKernelNotCopied: a kernel QEMU's uid may read (0644, the
// usual case) is not copied; QEMU reopens the file itself through its
// descriptor.
func TestReadableKernelNotCopied(t *testing.T) {
	requireQEMU(t)
	ctx := testContext(t, 60*time.Second)
	c := testConfig(t)
	p, _ := start(t, ctx, c)
	if !holds(t, p.Pid(), c.Kernel) {
		t.Errorf("QEMU holds no descriptor of %s", c.Kernel.Name())
	}
	if link, _ := os.Readlink(fmt.Sprintf("/proc/%d/fd/6", p.Pid())); link != c.Kernel.Name() {
		t.Errorf("QEMU's descriptor 6 is %q, want the kernel %s", link, c.Kernel.Name())
	}
}

// TestQEMUsCannotSignalEachOther: two QEMUs run under their own uids; a
// process with the first one's uid (what a guest that broke into that
// QEMU would be) can signal the first and not the second.
func TestQEMUsCannotSignalEachOther(t *testing.T) {
	requireQEMU(t)
	ctx := testContext(t, 60*time.Second)
	a, b := testConfig(t), testConfig(t)
	if a.UID == b.UID {
		t.Fatalf("two test configs share uid %d", a.UID)
	}
	pa, _ := start(t, ctx, a)
	pb, _ := start(t, ctx, b)
	cmd := testenv.HelperCommandOf(ctx, testenv.SharedBinary(t), helperKill,
		fmt.Sprintf("SPECTRUM_KILL_PIDS=%d %d", pa.Pid(), pb.Pid()))
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: a.UID, Gid: a.GID}}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("helper as uid %d: %v\n%s", a.UID, err, out)
	}
	want := fmt.Sprintf("kill %d SIGCONT: <nil>\nkill %d SIGSTOP: operation not permitted\nkill %d SIGKILL: operation not permitted\n",
		pa.Pid(), pb.Pid(), pb.Pid())
	if diff := cmp.Diff(want, string(out)); diff != "" {
		t.Errorf("signals from uid %d (-want +got):\n%s", a.UID, diff)
	}
	if gone(pb.Pid()) {
		t.Errorf("the second QEMU died")
	}
}

// helperKill is TestQEMUsCannotSignalEachOther's helper process: it
// signals the two pids in SPECTRUM_KILL_PIDS (its own QEMU's, the other's)
// and prints each result.
const helperKill = "qemu-kill"

func killHelper() int {
	var own, other int
	fmt.Sscanf(os.Getenv("SPECTRUM_KILL_PIDS"), "%d %d", &own, &other)
	for _, k := range []struct {
		pid int
		sig syscall.Signal
		s   string
	}{{own, syscall.SIGCONT, "SIGCONT"}, {other, syscall.SIGSTOP, "SIGSTOP"}, {other, syscall.SIGKILL, "SIGKILL"}} {
		err := syscall.Kill(k.pid, k.sig)
		fmt.Printf("kill %d %s: %v\n", k.pid, k.s, errOrNil(err))
	}
	return 0
}

func errOrNil(err error) any {
	if err == nil {
		return "<nil>"
	}
	return err
}

// TestKillOrphan: KillOrphan kills the QEMU its pid file names, and only
// that very process: a pid file whose start time does not match the
// process with that pid (the pid was reused) is removed and nothing is
// killed; a missing file is nothing to do.
func TestKillOrphan(t *testing.T) {
	requireQEMU(t)
	ctx := testContext(t, 30*time.Second)
	c := testConfig(t)
	c.PIDFile = filepath.Join(t.TempDir(), "qemu.pid")
	p, _ := start(t, ctx, c)
	got, err := KillOrphan(c.PIDFile, 5*time.Second)
	if err != nil || got != p.Pid() {
		t.Fatalf("KillOrphan = %d, %v; want %d killed", got, err, p.Pid())
	}
	if !gone(p.Pid()) {
		t.Errorf("QEMU %d still running", p.Pid())
	}
	if _, err := os.Lstat(c.PIDFile); err == nil {
		t.Error("pid file left behind")
	}

	// Our own pid with another start time: a reused pid.
	start, err := startTime(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(c.PIDFile, fmt.Appendf(nil, "%d %d\n", os.Getpid(), start+1), 0o600)
	if got, err := KillOrphan(c.PIDFile, time.Second); err != nil || got != 0 {
		t.Errorf("KillOrphan of a reused pid = %d, %v; want 0, nil", got, err)
	}
	if _, err := os.Lstat(c.PIDFile); err == nil {
		t.Error("stale pid file left behind")
	}
	os.WriteFile(c.PIDFile, []byte("garbage"), 0o600)
	if got, _ := KillOrphan(c.PIDFile, time.Second); got != 0 {
		t.Errorf("KillOrphan of garbage killed %d", got)
	}
	if got, err := KillOrphan(c.PIDFile, time.Second); err != nil || got != 0 {
		t.Errorf("KillOrphan of no file = %d, %v; want 0, nil", got, err)
	}
}

// BenchmarkKernelCopy measures the sealed copy a kernel gets when QEMU's
// uid may not read it (kernelFile), for the Debian test kernel (`make
// kernel`): its cost in time, and in memory the copy's size, for each launch.
func BenchmarkKernelCopy(b *testing.B) {
	k, err := kernel.Find()
	testenv.NoErr(b, err, "make kernel fetches the test kernel")
	f, err := os.Open(k.Vmlinux)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	fi, _ := f.Stat()
	b.SetBytes(fi.Size())
	for b.Loop() {
		m, err := sealedCopy(f, fi.Size())
		if err != nil {
			b.Fatal(err)
		}
		m.Close()
	}
	b.ReportMetric(float64(fi.Size())/(1<<20), "MiB/copy")
}

// TestStartWithoutCapabilities: a spectrumd that may not make QEMU's
// network namespace (no CAP_SYS_ADMIN) or switch to its uid (no
// CAP_SETUID) fails the start with an error that says what it needs,
// rather than run QEMU with less isolation.
func TestStartWithoutCapabilities(t *testing.T) {
	requireQEMU(t)
	setpriv := testenv.Tool(t, "setpriv", "util-linux provides it")
	for _, c := range []string{"sys_admin", "setuid"} {
		t.Run(c, func(t *testing.T) {
			ctx := testContext(t, 30*time.Second)
			cfg := testConfig(t)
			dir := testDir(cfg)
			cfg.Kernel, cfg.Initramfs, cfg.Images = nil, nil, nil
			b, _ := json.Marshal(cfg)
			cmd := testenv.HelperCommand(ctx, helperStart, "SPECTRUM_QEMU_CONFIG="+string(b), "SPECTRUM_QEMU_DIR="+dir)
			cmd.Args = []string{setpriv, "--bounding-set=-" + c, "--inh-caps=-" + c, "--", cmd.Path}
			cmd.Path = setpriv
			out, err := cmd.CombinedOutput()
			if err == nil {
				t.Fatalf("QEMU started without CAP_%s:\n%s", strings.ToUpper(c), out)
			}
			if !strings.Contains(string(out), "operation not permitted") || !strings.Contains(string(out), "CAP_SYS_ADMIN") {
				t.Errorf("the error does not say what spectrumd needs:\n%s", out)
			}
		})
	}
}
