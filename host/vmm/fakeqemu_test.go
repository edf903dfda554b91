package vmm

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"strings"
	"testing"
	"time"

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
