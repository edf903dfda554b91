package cli

import (
	"bufio"
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"spectrum-os.org/netcfg/host/control"
	"spectrum-os.org/netcfg/internal/nstest"
	"spectrum-os.org/netcfg/internal/testenv"
)

// TestLogReaderGone: the pipe spectrumd logs to loses its reader (a
// terminal closed, a `| head`). spectrumd keeps serving, and SIGTERM still
// stops its VMs: none is orphaned.
func TestLogReaderGone(t *testing.T) {
	requireQEMU(t)
	ns := nstest.New(t)
	dir := t.TempDir()
	data, run := filepath.Join(dir, "data"), filepath.Join(dir, "run")
	writeStubData(t, data)
	args := []string{"-data", data, "-state", filepath.Join(dir, "state"), "-run", run,
		"-accel", "tcg", "-memory", "64", "-stop-timeout", "200ms"}
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd := ns.Command(context.Background(), os.Args[0])
	cmd.Env = testenv.HelperEnv(helperServe, "SPECTRUM_SERVE_ARGS="+strings.Join(args, "\n"))
	cmd.Stdout, cmd.Stderr = w, w
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w.Close()
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() { cmd.Process.Kill() })
	if _, err := bufio.NewReader(r).ReadString('\n'); err != nil {
		t.Fatalf("first log line: %v", err)
	}
	r.Close() // the reader goes away

	p := &serveProc{cmd: cmd, log: os.DevNull, run: run}
	p.waitServing(t)
	if resp, err := p.ask(control.Request{Op: "start", Name: "app"}); err != nil || !resp.OK {
		t.Fatalf("start app: %+v, %v", resp, err)
	}
	vms := p.waitRunning(t, "app", "net")
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("spectrumd after SIGTERM with its log reader gone: %v, want exit 0", err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("spectrumd did not end within 60 s of SIGTERM")
	}
	for name, st := range vms {
		if syscall.Kill(st.PID, 0) == nil {
			t.Errorf("%s's QEMU (pid %d) still runs after spectrumd stopped", name, st.PID)
			syscall.Kill(st.PID, syscall.SIGKILL)
		}
	}
}
