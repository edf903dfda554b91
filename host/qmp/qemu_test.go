package qmp

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// startQEMU runs a real QEMU with no machine, paused (-S), its QMP monitor
// on a unix socket, and returns the socket's path and the process. QEMU is
// killed when the test ends; exited is closed when it has exited.
func startQEMU(t testing.TB) (sock string, qemu *exec.Cmd, exited <-chan struct{}) {
	t.Helper()
	bin, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("qemu-system-x86_64 missing in CI (make deps installs it): %v", err)
		}
		t.Skip("qemu-system-x86_64 not installed (make deps installs it; runs in CI)")
	}
	sock = filepath.Join(t.TempDir(), "qmp.sock")
	cmd := exec.Command(bin, "-machine", "none", "-nodefaults", "-no-user-config", "-display", "none", "-S",
		"-qmp", "unix:"+sock+",server=on,wait=off")
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGCONT)
		cmd.Process.Kill()
		<-done
	})
	// QEMU binds the socket while it starts; under load that takes seconds.
	deadline := time.Now().Add(60 * time.Second)
	for {
		if _, err := os.Stat(sock); err == nil {
			return sock, cmd, done
		}
		if time.Now().After(deadline) {
			t.Fatalf("QEMU did not create %s in 60 s", sock)
		}
		select {
		case <-done:
			t.Fatalf("QEMU exited before creating its QMP socket: %v", cmd.ProcessState)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// A real QEMU: started paused and resumed after the handshake, a
// descriptor passed with getfd, then frozen with SIGSTOP (a hung VMM): a
// call and a new Dial end at their deadlines, and after SIGCONT a new
// client works.
func TestRealQEMU(t *testing.T) {
	sock, qemu, exited := startQEMU(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c, err := Dial(ctx, sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if g := c.Greeting(); g.Major < 7 {
		t.Errorf("Greeting = %+v, want QEMU 7 or later", g)
	}
	if st, err := c.Status(ctx); err != nil || st.Status != "prelaunch" {
		t.Errorf("Status of a QEMU started with -S = %+v, %v; want prelaunch", st, err)
	}
	if err := c.Cont(ctx); err != nil {
		t.Fatal(err)
	}
	if st, err := c.Status(ctx); err != nil || !st.Running {
		t.Errorf("Status after Cont = %+v, %v; want running", st, err)
	}

	// SCM_RIGHTS reaches QEMU without the "oob" capability negotiated:
	// closefd finds the descriptor getfd named.
	null, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer null.Close()
	if err := c.GetFD(ctx, "probe", null); err != nil {
		t.Fatal(err)
	}
	if err := c.Run(ctx, "closefd", map[string]string{"fdname": "probe"}, nil); err != nil {
		t.Errorf("closefd of the descriptor getfd passed: %v", err)
	}
	var ce *CommandError
	if err := c.Run(ctx, "getfd", map[string]string{"fdname": "none"}, nil); !errors.As(err, &ce) {
		t.Errorf("getfd without a descriptor = %v, want QEMU's refusal", err)
	}

	if err := qemu.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	frozen := true
	defer func() {
		if frozen {
			qemu.Process.Signal(syscall.SIGCONT)
		}
	}()
	sctx, scancel := context.WithTimeout(ctx, 2*time.Second)
	defer scancel()
	waiting := make(chan error, 1)
	go func() {
		// Behind the first call, with the test's whole deadline.
		time.Sleep(100 * time.Millisecond)
		_, err := c.Status(ctx)
		waiting <- err
	}()
	if _, err := c.Status(sctx); !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, ErrClosed) {
		t.Errorf("Status of a frozen QEMU = %v, want DeadlineExceeded and ErrClosed", err)
	}
	if err := <-waiting; !errors.Is(err, ErrClosed) {
		t.Errorf("a second Status of a frozen QEMU = %v, want ErrClosed", err)
	}
	<-c.Done()
	dctx, dcancel := context.WithTimeout(ctx, time.Second)
	defer dcancel()
	if c2, err := Dial(dctx, sock); !errors.Is(err, context.DeadlineExceeded) {
		if c2 != nil {
			c2.Close()
		}
		t.Errorf("Dial of a frozen QEMU = %v, want DeadlineExceeded", err)
	}

	if err := qemu.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	frozen = false
	c3, err := Dial(ctx, sock)
	if err != nil {
		t.Fatalf("Dial after SIGCONT: %v", err)
	}
	defer c3.Close()
	if st, err := c3.Status(ctx); err != nil || !st.Running {
		t.Errorf("Status after SIGCONT = %+v, %v; want running", st, err)
	}
	if err := c3.Quit(ctx); err != nil {
		t.Errorf("Quit = %v", err)
	}
	select {
	case <-exited:
	case <-ctx.Done():
		t.Error("QEMU still runs after Quit")
	}
}
