package vmm

import (
	"bufio"
	"errors"
	"io"
	"testing"
	"time"

	"spectrum-os.org/netcfg/internal/stubkernel"
	"spectrum-os.org/netcfg/internal/syncbuf"
)

// TestSerialDrainedAfterExit: a guest writes a burst of lines and crashes
// at once (the stub kernel's Burst: a triple fault right after its last
// line). Its serial console is read only after Wait has returned, the
// latest a reader can be: every line is still there, the last one whole,
// then EOF. (Before the fix Wait closed the pipe and the lines were lost.)
func TestSerialDrainedAfterExit(t *testing.T) {
	requireQEMU(t)
	const n = 5000 // about 150 KiB: more than a default pipe, less than ours
	ctx := testContext(t, 60*time.Second)
	var log syncbuf.Buffer
	inst, err := testVMM(t, &log).Launch(ctx, testSpec(t, "burst", stubkernel.Burst(n)))
	if err != nil {
		t.Fatalf("Launch: %v\n%s", err, log.String())
	}
	waited := make(chan error, 1)
	go func() { waited <- inst.Wait() }()
	select {
	case err := <-waited:
		if err != nil {
			t.Errorf("QEMU exit after the guest's triple fault: %v (want status 0: -no-reboot)", err)
		}
	case <-ctx.Done():
		shutdownNow(inst)
		t.Fatalf("the burst guest did not exit\n%s", log.String())
	}
	sc := bufio.NewScanner(inst.Serial())
	got := 0
	for sc.Scan() {
		if sc.Text() != stubkernel.Message {
			t.Fatalf("line %d = %q, want %q", got+1, sc.Text(), stubkernel.Message)
		}
		got++
	}
	if err := sc.Err(); err != nil {
		t.Errorf("reading the serial console after QEMU exited: %v", err)
	}
	if got != n {
		t.Errorf("%d serial lines read after exit, want all %d", got, n)
	}
	// The pipe is closed once its end was read: reading again is EOF,
	// not an error.
	if n, err := inst.Serial().Read(make([]byte, 1)); n != 0 || !errors.Is(err, io.EOF) {
		t.Errorf("Read after EOF = %d, %v; want 0, EOF", n, err)
	}
}
