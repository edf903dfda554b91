package vmm

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"spectrum-os.org/netcfg/host/qmp"
	"spectrum-os.org/netcfg/internal/stubkernel"
	"spectrum-os.org/netcfg/internal/syncbuf"
	"spectrum-os.org/netcfg/internal/testenv"
)

// helperFakeQEMU stands in for QEMU where a test needs QEMU to do what the
// real one never does: run by Launch as Options.Binary, under the VM's
// uid and network namespace like QEMU, it serves QMP on the listening
// socket QEMU gets as descriptor 3, answering each command with an empty
// return, and misbehaves as fakeQEMUEnv says:
//
//   - "stray": after the handshake it sends a reply that answers nothing
//     (a QEMU that a guest broke into may).
//   - "refuse-cont": it refuses cont, which resumes the guest of a QEMU
//     started paused (-S).
//
// It writes its pid to stderr first ("fake-qemu pid=N").
const helperFakeQEMU = "fake-qemu"

// fakeQEMUEnv is the variable that tells the fake QEMU how to misbehave.
const fakeQEMUEnv = "SPECTRUM_FAKE_QEMU"

func fakeQEMUHelper() int {
	fmt.Fprintf(os.Stderr, "fake-qemu pid=%d\n", os.Getpid())
	l, err := net.FileListener(os.NewFile(3, "qmp"))
	if err != nil {
		fmt.Fprintln(os.Stderr, "fake-qemu:", err)
		return 1
	}
	conn, err := l.Accept()
	if err != nil {
		fmt.Fprintln(os.Stderr, "fake-qemu:", err)
		return 1
	}
	mode := os.Getenv(fakeQEMUEnv)
	fmt.Fprintln(conn, `{"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7}, "package": "fake"}, "capabilities": ["oob"]}}`)
	sc := bufio.NewScanner(conn)
	for sc.Scan() {
		var cmd struct {
			Execute string          `json:"execute"`
			ID      json.RawMessage `json:"id"`
		}
		if err := json.Unmarshal(sc.Bytes(), &cmd); err != nil {
			fmt.Fprintln(os.Stderr, "fake-qemu:", err)
			return 1
		}
		if cmd.Execute == "cont" && mode == "refuse-cont" {
			fmt.Fprintf(conn, `{"error": {"class": "GenericError", "desc": "fake: no cont"}, "id": %s}`+"\n", cmd.ID)
			continue
		}
		fmt.Fprintf(conn, `{"return": {}, "id": %s}`+"\n", cmd.ID)
		if cmd.Execute == "qmp_capabilities" && mode == "stray" {
			fmt.Fprintln(conn, `{"return": {}}`)
		}
	}
	return 0
}

// fakeVMM is testVMM with the fake QEMU as its binary, misbehaving as mode
// says.
func fakeVMM(t *testing.T, log *syncbuf.Buffer, mode string) *QEMU {
	t.Helper()
	// The fake is this test binary, which QEMU's uid must be able to run,
	// and it learns that it is the fake from the environment QEMU inherits.
	env := testenv.HelperEnv(helperFakeQEMU, fakeQEMUEnv+"="+mode)
	for _, kv := range env[len(os.Environ()):] {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
	q := testVMM(t, log)
	q.opt.Binary = testenv.SharedBinary(t)
	return q
}

// TestQMPDropsLogged: what QMP drops from a VM's QEMU (here a reply that
// answers no command) is in spectrumd's log tagged with the VM's name.
// (Before, Start dialled QMP with no logger: drops were only counted.)
func TestQMPDropsLogged(t *testing.T) {
	requireQEMU(t)
	var log syncbuf.Buffer
	q := fakeVMM(t, &log, "stray")
	ctx := testContext(t, 30*time.Second)
	inst, err := q.Launch(ctx, testSpec(t, "app", stubkernel.ELF()))
	if err != nil {
		t.Fatalf("Launch: %v\nlog:\n%s", err, log.String())
	}
	defer shutdownNow(inst)
	for !strings.Contains(log.String(), `msg="QMP reply that answers no waiting command dropped" vm=app`) {
		if ctx.Err() != nil {
			t.Fatalf("no QMP drop logged with vm=app:\n%s", log.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestRefusedContFails: QEMU starts paused (-S) and Launch resumes it after
// the QMP handshake; a QEMU that refuses cont fails the launch cleanly: the
// error names the VM and QEMU's refusal, the process is gone, its sockets
// and pid file are removed, and its uid is free again.
func TestRefusedContFails(t *testing.T) {
	requireQEMU(t)
	var log syncbuf.Buffer
	q := fakeVMM(t, &log, "refuse-cont")
	ctx := testContext(t, 30*time.Second)
	spec := testSpec(t, "app", stubkernel.ELF())
	inst, err := q.Launch(ctx, spec)
	if err == nil {
		shutdownNow(inst)
		t.Fatalf("Launch with a QEMU that refuses cont succeeded\nlog:\n%s", log.String())
	}
	var ce *qmp.CommandError
	if !errors.As(err, &ce) || ce.Desc != "fake: no cont" || !strings.Contains(err.Error(), "qemu app: qmp cont:") {
		t.Errorf("Launch = %v, want QEMU's refusal of cont, naming the VM", err)
	}
	_, rest, ok := strings.Cut(log.String(), "fake-qemu pid=")
	pid, perr := strconv.Atoi(rest[:len(rest)-len(strings.TrimLeft(rest, "0123456789"))])
	if !ok || perr != nil {
		t.Fatalf("the fake QEMU logged no pid:\n%s", log.String())
	}
	if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("QEMU %d still exists after the failed launch (%v)", pid, err)
	}
	for _, f := range []string{spec.QMPPath, spec.ConsolePath, spec.PIDPath} {
		if _, err := os.Lstat(f); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s left behind by the failed launch (%v)", f, err)
		}
	}
	q.opt.UIDs.mu.Lock()
	running := q.opt.UIDs.running["app"]
	q.opt.UIDs.mu.Unlock()
	if running != 0 {
		t.Errorf("app's uid still counted as running %d times after the failed launch", running)
	}
}
