package confine

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"unsafe"

	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"

	"spectrum-os.org/netcfg/internal/testenv"
)

// helperShow is the confined program of TestWrap: it prints its argv, its
// descriptors and what /proc/self/status says of its confinement.
const helperShow = "confine-show"

func showHelper() int {
	fds := map[string]string{}
	ents, _ := os.ReadDir("/proc/self/fd")
	for _, e := range ents {
		if fd, _ := strconv.Atoi(e.Name()); fd > 2 {
			fds[e.Name()], _ = os.Readlink("/proc/self/fd/" + e.Name())
		}
	}
	st, _ := os.ReadFile("/proc/self/status")
	status := map[string]string{}
	for _, l := range strings.Split(string(st), "\n") {
		if k, v, ok := strings.Cut(l, ":"); ok && (k == "NoNewPrivs" || k == "Seccomp") {
			status[k] = strings.TrimSpace(v)
		}
	}
	json.NewEncoder(os.Stdout).Encode(map[string]any{"argv": os.Args, "fds": fds, "status": status})
	return 0
}

// TestWrap: a wrapped command runs its program with its own argv, under
// the filter with no_new_privs, with the files it was given and without
// the status pipe; Started says it started. (Descriptors this test binary
// inherited without close-on-exec reach it too: closing those is the
// caller's business, as host/qemu does.)
func TestWrap(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	given, err := os.Open("/dev/null")
	if err != nil {
		t.Fatal(err)
	}
	defer given.Close()
	cmd := exec.CommandContext(ctx, Self, "program-name", "-x")
	cmd.Env = testenv.HelperEnv(helperShow)
	cmd.ExtraFiles = []*os.File{given}
	l, err := Wrap(cmd)
	if err != nil {
		t.Fatal(err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(l.w.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	statusPipe := fmt.Sprintf("pipe:[%d]", st.Ino)
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		l.Close()
		t.Fatal(err)
	}
	if err := l.Started(time.Now().Add(20 * time.Second)); err != nil {
		t.Errorf("Started: %v", err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("%v\n%s", err, stderr.String())
	}
	var got struct {
		Argv   []string
		FDs    map[string]string
		Status map[string]string
	}
	if err := json.Unmarshal([]byte(stdout.String()), &got); err != nil {
		t.Fatalf("%v: %q", err, stdout.String())
	}
	if want := []string{Self, "program-name", "-x"}; strings.Join(got.Argv, " ") != strings.Join(want, " ") {
		t.Errorf("argv %q, want %q", got.Argv, want)
	}
	if got.Status["Seccomp"] != "2" || got.Status["NoNewPrivs"] != "1" {
		t.Errorf("status %v, want Seccomp 2 and NoNewPrivs 1", got.Status)
	}
	if got.FDs["3"] != "/dev/null" {
		t.Errorf("descriptor 3 is %q, want the file given, /dev/null", got.FDs["3"])
	}
	for fd, what := range got.FDs {
		if what == statusPipe {
			t.Errorf("the program holds the status pipe as descriptor %s", fd)
		}
	}
}

// helperNoSeccomp starts a wrapped command under a filter of its own that
// makes seccomp(2) fail, as a host whose kernel has no seccomp, or a unit
// that denies it, would: the trampoline cannot install its filter.
const helperNoSeccomp = "confine-no-seccomp"

func noSeccompHelper() int {
	ins := []bpf.Instruction{
		bpf.LoadAbsolute{Off: 0, Size: 4},
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: unix.SYS_SECCOMP, SkipFalse: 1},
		bpf.RetConstant{Val: unix.SECCOMP_RET_ERRNO | uint32(unix.ENOSYS)},
		bpf.RetConstant{Val: unix.SECCOMP_RET_ALLOW},
	}
	raw, _ := bpf.Assemble(ins)
	prog := make([]unix.SockFilter, len(raw))
	for i, r := range raw {
		prog[i] = unix.SockFilter{Code: r.Op, Jt: r.Jt, Jf: r.Jf, K: r.K}
	}
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		fmt.Println("no_new_privs:", err)
		return 1
	}
	if err := unix.Prctl(unix.PR_SET_SECCOMP, unix.SECCOMP_MODE_FILTER, uintptr(unsafe.Pointer(&unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]})), 0, 0); err != nil {
		fmt.Println("seccomp:", err)
		return 1
	}
	cmd := exec.Command(Self)
	cmd.Env = testenv.HelperEnv(helperStatus)
	l, err := Wrap(cmd)
	if err != nil {
		fmt.Println("Wrap:", err)
		return 1
	}
	out := &strings.Builder{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		fmt.Println("Start:", err)
		return 1
	}
	err = l.Started(time.Now().Add(20 * time.Second))
	werr := cmd.Wait()
	fmt.Printf("Started: %v\nWait: %v\noutput: %s", err, werr, out)
	return 0
}

// TestFailClosed: where the filter cannot be installed, the program never
// runs, and Started says why.
func TestFailClosed(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := testenv.HelperCommand(ctx, helperNoSeccomp).CombinedOutput()
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	want := "Started: confine: install the system-call filter: seccomp: function not implemented\n" +
		"Wait: exit status 126\n" +
		"output: " + Arg0 + ": install the system-call filter: seccomp: function not implemented\n"
	if string(out) != want {
		t.Errorf("got:\n%s\nwant:\n%s", out, want)
	}
}
