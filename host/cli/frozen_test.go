package cli

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"spectrum-os.org/netcfg/host/control"
	"spectrum-os.org/netcfg/host/daemon"
	"spectrum-os.org/netcfg/host/link"
	"spectrum-os.org/netcfg/internal/mac"
	"spectrum-os.org/netcfg/internal/nstest"
)

// TestFrozenProvider: a provider's QEMU is frozen (SIGSTOP: a VMM that does
// not answer) while its client stops, so the client's stop waits on the
// provider's unplug. Meanwhile list and status answer (within the CLI's
// own wait, with the unplug's deadline far beyond it) and the stop has not
// returned. The provider stays frozen past the unplug's deadline: the stop
// completes anyway and removes the link, and QMP's session with the
// provider closes (the unplug's command was never answered). After
// SIGCONT the client starts again and its NIC is hot-plugged into the
// provider on a new session, under a NIC id of its own (the lost unplug's
// is stuck); before, the provider's closed session was kept, and every
// later hot-plug into it, so every start of its clients, failed until the
// provider restarted. Once both are stopped nothing is left: no link, no
// QEMU.
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

	select {
	case err := <-stopped:
		if err != nil {
			s.fail(t, "stop app while net stays frozen: %v", err)
		}
	case <-time.After(nicTimeout + 30*time.Second):
		s.fail(t, "stop app has not returned in %v while net stays frozen (its unplug's deadline is %v)", nicTimeout+30*time.Second, nicTimeout)
	}
	if got := ourLinks(t, ns, s); len(got) != 0 {
		s.fail(t, "links %v after app stopped", got)
	}

	cont()
	if r, err := s.ask(control.Request{Op: "start", Name: "app"}); err != nil || !r.OK {
		s.fail(t, "start app after net's SIGCONT: %+v, %v", r, err)
	}
	r, err := s.ask(control.Request{Op: "status", Name: "app"})
	if err != nil || len(r.VMs) != 1 || len(r.VMs[0].Links) != 1 {
		s.fail(t, "status app after its second start: %+v, %v", r, err)
	}
	appPID2 := r.VMs[0].PID
	id, err := mac.ParseLinkID(r.VMs[0].Links[0].ID)
	if err != nil {
		t.Fatal(err)
	}
	// spectrumd closes its copy of a tap once QEMU has it: carrier on the
	// provider's tap is net's QEMU holding it.
	if got, want := carrier(t, s), []string{link.TapName(id, mac.Client), link.TapName(id, mac.Provider)}; !slices.Equal(got, want) {
		s.fail(t, "taps with carrier after app's second start: %v, want %v", got, want)
	}
	if log, _ := os.ReadFile(s.log); !strings.Contains(string(log), "id="+daemon.NICID(id)+"-1") {
		s.fail(t, "no NIC %s-1 hot-plugged into net (the lost unplug's id %s is stuck)", daemon.NICID(id), daemon.NICID(id))
	}

	// Stopping the provider first leaves its client nothing to unplug
	// (the stub guest would ignore the request until its deadline).
	if r, err := s.ask(control.Request{Op: "stop", Name: "net"}); err != nil || !r.OK {
		s.fail(t, "stop net: %+v, %v", r, err)
	}
	if r, err := s.ask(control.Request{Op: "stop", Name: "app"}); err != nil || !r.OK {
		s.fail(t, "stop app: %+v, %v", r, err)
	}
	for _, pid := range []int{netPID, appPID, appPID2} {
		if !processGone(pid) {
			s.fail(t, "QEMU %d still runs after both VMs stopped", pid)
		}
	}
	if got := ourLinks(t, ns, s); len(got) != 0 {
		s.fail(t, "links %v after both stopped", got)
	}
	r, err = s.ask(control.Request{Op: "list"})
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

// carrier lists the taps in serve's links' namespace whose carrier is up
// (a process holds them), sorted.
func carrier(t *testing.T, serve *serveProc) []string {
	t.Helper()
	path, err := nstest.HeldNetns(serve.cmd.Process.Pid)
	if err != nil || path == "" {
		serve.fail(t, "spectrumd holds no links' namespace (%v)", err)
	}
	b, err := nstest.IPAt(path, "-j", "link", "show")
	if err != nil {
		t.Fatal(err)
	}
	var links []struct {
		Ifname string   `json:"ifname"`
		Flags  []string `json:"flags"`
	}
	if err := json.Unmarshal(b, &links); err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, l := range links {
		if _, k, ok := link.ParseName(l.Ifname); ok && k != link.Bridge && slices.Contains(l.Flags, "LOWER_UP") {
			out = append(out, l.Ifname)
		}
	}
	slices.Sort(out)
	return out
}
