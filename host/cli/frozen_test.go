package cli

import (
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"spectrum-os.org/netcfg/host/control"
	"spectrum-os.org/netcfg/internal/nstest"
)

// TestFrozenProvider: a provider's QEMU is frozen (SIGSTOP: a VMM that does
// not answer) while its client stops, so the client's stop waits on the
// provider's unplug. Meanwhile list and status answer (within the CLI's
// own wait, with the unplug's deadline far beyond it) and the stop has not
// returned; after SIGCONT the stop completes, and once the provider is
// stopped too nothing is left: no link, no QEMU.
func TestFrozenProvider(t *testing.T) {
	requireQEMU(t)
	ns := nstest.New(t)
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	writeStubData(t, data)
	const nicTimeout = 30 * time.Second
	s := startServe(t, ns, filepath.Join(dir, "spectrumd.log"), "-data", data, "-state", filepath.Join(dir, "state"),
		"-run", filepath.Join(dir, "run"), "-accel", "tcg", "-memory", "64", "-stop-timeout", "500ms",
		"-nic-timeout", nicTimeout.String(), "-vm-uids", testUIDs(), "-start", "app")
	vms := s.waitRunning(t, "net", "app")
	netPID, appPID := vms["net"].PID, vms["app"].PID
	if err := syscall.Kill(netPID, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	cont := func() { syscall.Kill(netPID, syscall.SIGCONT) }
	t.Cleanup(cont)

	stopped := make(chan error, 1)
	go func() { _, err := s.ask(control.Request{Op: "stop", Name: "app"}); stopped <- err }()
	// The client's QEMU goes first (killed after the stop timeout); once
	// it has been reaped (pid 0, still stopping) its owner is removing its
	// link, asking the frozen provider to unplug, and waiting.
	for deadline := time.Now().Add(nicTimeout / 2); ; time.Sleep(20 * time.Millisecond) {
		r, err := call(s.run, control.Request{Op: "status", Name: "app"}, DefaultTimeout)
		if err != nil {
			s.fail(t, "status app while its stop runs: %v", err)
		}
		if st := r.VMs[0]; st.State == "stopping" && st.PID == 0 {
			break
		}
		if time.Now().After(deadline) {
			s.fail(t, "app not reaped %v after its stop began: %+v", nicTimeout/2, r.VMs[0])
		}
	}
	if !processGone(appPID) {
		s.fail(t, "app's QEMU %d runs while its status says it was reaped", appPID)
	}
	for _, req := range []control.Request{{Op: "list"}, {Op: "status", Name: "app"}, {Op: "status", Name: "net"}} {
		r, err := call(s.run, req, DefaultTimeout)
		if err != nil || !r.OK {
			s.fail(t, "%s %s while net is frozen: %+v, %v", req.Op, req.Name, r, err)
		}
		if req.Op == "status" && req.Name == "app" && r.VMs[0].State != "stopping" {
			s.fail(t, "app is %s while its stop waits on net, want stopping", r.VMs[0].State)
		}
	}
	select {
	case err := <-stopped:
		s.fail(t, "stop app returned (%v) while net was frozen and its unplug not due", err)
	default:
	}
	if got := ourLinks(t, ns, s); len(got) != 3 {
		s.fail(t, "links %v while app's stop waits, want its bridge and two taps", got)
	}

	cont()
	if err := <-stopped; err != nil {
		s.fail(t, "stop app after SIGCONT: %v", err)
	}
	if got := ourLinks(t, ns, s); len(got) != 0 {
		s.fail(t, "links %v after app stopped", got)
	}
	if r, err := s.ask(control.Request{Op: "stop", Name: "net"}); err != nil || !r.OK {
		s.fail(t, "stop net: %+v, %v", r, err)
	}
	for _, pid := range []int{netPID, appPID} {
		if !processGone(pid) {
			s.fail(t, "QEMU %d still runs after both VMs stopped", pid)
		}
	}
	r, err := s.ask(control.Request{Op: "list"})
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range r.VMs {
		if v.State != "stopped" || v.PID != 0 {
			s.fail(t, "after both stopped: %+v", r.VMs)
		}
	}
	s.cmd.Process.Signal(syscall.SIGTERM)
	if err := s.cmd.Wait(); err != nil {
		s.fail(t, "spectrumd's exit: %v", err)
	}
}
