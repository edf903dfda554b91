package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"spectrum-os.org/netcfg/host/control"
	"spectrum-os.org/netcfg/host/link"
	"spectrum-os.org/netcfg/internal/nstest"
	"spectrum-os.org/netcfg/internal/stubkernel"
	"spectrum-os.org/netcfg/internal/testenv"
)

func TestMain(m *testing.M) {
	testenv.RunHelper(map[string]func() int{helperServe: serveHelper, helperConsole: consoleHelper, helperCheck: checkHelper})
	os.Exit(m.Run())
}

// helperServe is the helper process of startServe: `spectrumd serve` with
// the arguments in SPECTRUM_SERVE_ARGS (one per line).
const helperServe = "serve"

func serveHelper() int {
	if err := Serve(strings.Split(os.Getenv("SPECTRUM_SERVE_ARGS"), "\n"), os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "serve:", err)
		return 1
	}
	return 0
}

// serveProc is a `spectrumd serve` running in a test's namespace.
type serveProc struct {
	cmd *exec.Cmd
	log string
	run string
}

func startServe(t testing.TB, ns *nstest.NS, logPath string, args ...string) *serveProc {
	t.Helper()
	lf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer lf.Close()
	cmd := ns.Command(context.Background(), os.Args[0])
	cmd.Env = testenv.HelperEnv(helperServe, "SPECTRUM_SERVE_ARGS="+strings.Join(args, "\n"))
	cmd.Stdout, cmd.Stderr = lf, lf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &serveProc{cmd: cmd, log: logPath, run: args[slices.Index(args, "-run")+1]}
	t.Cleanup(func() {
		if p.cmd.ProcessState == nil {
			p.cmd.Process.Signal(syscall.SIGTERM)
			p.cmd.Wait()
		}
	})
	return p
}

func (p *serveProc) fail(t testing.TB, format string, args ...any) {
	t.Helper()
	b, _ := os.ReadFile(p.log)
	t.Fatalf(format+"\nspectrumd's log:\n%s", append(args, b)...)
}

// ask sends req as the CLI does, waiting as long as the CLI waits for start
// and stop.
func (p *serveProc) ask(req control.Request) (control.Response, error) {
	r, _, c, err := dial(p.run, req, DefaultWorkTimeout)
	if c != nil {
		c.Close()
	}
	return r, err
}

// waitServing waits until the daemon answers on its control socket.
func (p *serveProc) waitServing(t testing.TB) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if r, err := p.ask(control.Request{Op: "list"}); err == nil && r.OK {
			return
		}
		if time.Now().After(deadline) {
			p.fail(t, "spectrumd does not answer on its control socket")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitRunning waits until every VM in names runs and returns their
// statuses.
func (p *serveProc) waitRunning(t testing.TB, names ...string) map[string]control.VMStatus {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		out := map[string]control.VMStatus{}
		for _, n := range names {
			r, err := p.ask(control.Request{Op: "status", Name: n})
			if err == nil && r.OK && len(r.VMs) == 1 && r.VMs[0].State == "running" && r.VMs[0].PID != 0 {
				out[n] = r.VMs[0]
			}
		}
		if len(out) == len(names) {
			return out
		}
		if time.Now().After(deadline) {
			p.fail(t, "VMs %v not all running: %v", names, out)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// ourLinks lists the links spectrumd made, in the links' namespace of
// serve (nil: no spectrumd runs), and fails the test if a link is in
// spectrumd's own namespace ns, where none belongs.
func ourLinks(t testing.TB, ns *nstest.NS, serve *serveProc) []string {
	t.Helper()
	names := func(b []byte) []string {
		var links []struct {
			Ifname string `json:"ifname"`
		}
		if err := json.Unmarshal(b, &links); err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, l := range links {
			if _, _, ok := link.ParseName(l.Ifname); ok {
				out = append(out, l.Ifname)
			}
		}
		slices.Sort(out)
		return out
	}
	if own := names(ns.IP("-j", "link", "show")); len(own) != 0 {
		t.Errorf("links %v in spectrumd's own namespace", own)
	}
	if serve == nil {
		return nil
	}
	path, err := nstest.HeldNetns(serve.cmd.Process.Pid)
	if err != nil || path == "" {
		serve.fail(t, "spectrumd holds no links' namespace (%v)", err)
	}
	b, err := nstest.IPAt(path, "-j", "link", "show")
	if err != nil {
		t.Fatal(err)
	}
	return names(b)
}

func processGone(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return true
	}
	_, after, _ := strings.Cut(string(b), ") ")
	return strings.HasPrefix(after, "Z")
}

// TestKillServe kills `spectrumd serve` with SIGKILL while a provider and
// its client run under QEMU (the stub kernel), then starts it again.
//
// Each QEMU runs under a uid of its own from exec on, so the parent-death
// signal set before exec survives (no uid switch inside QEMU clears it any
// more): both QEMUs die with spectrumd, and the links' namespace with its
// links goes with the last of them. The next serve starts with an empty
// one, leaves no socket or pid file of the old VMs, and the pair
// gets its old link id back from links.json and each VM its old uid from
// vm-uids.json.
func TestKillServe(t *testing.T) {
	requireQEMU(t)
	ns := nstest.New(t)
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	writeStubData(t, data)
	state, run, logPath := filepath.Join(dir, "state"), filepath.Join(dir, "run"), filepath.Join(dir, "spectrumd.log")
	args := []string{"-data", data, "-state", state, "-run", run, "-accel", "tcg", "-memory", "64",
		"-stop-timeout", "500ms", "-vm-uids", testUIDs()}

	first := startServe(t, ns, logPath, append(args, "-start", "app")...)
	before := first.waitRunning(t, "net", "app")
	id := before["app"].Links[0].ID
	links := ourLinks(t, ns, first)
	if len(links) != 3 {
		first.fail(t, "links %v, want a bridge and two taps", links)
	}
	pids := []int{before["net"].PID, before["app"].PID}
	uids := map[string]string{"net": procUID(t, pids[0]), "app": procUID(t, pids[1])}
	if uids["net"] == uids["app"] || uids["net"] == "0" || uids["app"] == "0" {
		first.fail(t, "QEMUs run as uids %v, want two of their own", uids)
	}

	t0 := time.Now()
	first.cmd.Process.Kill()
	first.cmd.Wait()
	for _, pid := range pids {
		for !processGone(pid) {
			if time.Since(t0) > 5*time.Second {
				first.fail(t, "QEMU %d still running 5s after spectrumd was killed", pid)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	t.Logf("QEMUs gone %v after SIGKILL of spectrumd", time.Since(t0).Round(time.Millisecond))
	// The links' namespace goes with the last that held it, spectrumd
	// and its QEMUs, and its links with it: nothing of them is left in
	// spectrumd's own.
	ourLinks(t, ns, nil)

	t1 := time.Now()
	second := startServe(t, ns, logPath, args...)
	second.waitServing(t)
	t.Logf("second spectrumd answering %v after it started", time.Since(t1).Round(time.Millisecond))
	if got := ourLinks(t, ns, second); len(got) != 0 {
		second.fail(t, "links %v in the new links' namespace before any start", got)
	}
	left, _ := filepath.Glob(filepath.Join(run, "vms", "*", "*"))
	if len(left) != 0 {
		second.fail(t, "files of the old VMs left in the run directory: %v", left)
	}

	if r, err := second.ask(control.Request{Op: "start", Name: "app"}); err != nil || !r.OK {
		second.fail(t, "start app again: %+v, %v", r, err)
	}
	after := second.waitRunning(t, "net", "app")
	if got := after["app"].Links[0].ID; got != id {
		t.Errorf("link id after the restart %s, want %s (links.json)", got, id)
	}
	for _, vm := range []string{"net", "app"} {
		if got := procUID(t, after[vm].PID); got != uids[vm] {
			t.Errorf("%s's QEMU runs as uid %s after the restart, want %s (vm-uids.json)", vm, got, uids[vm])
		}
	}
	if got := ourLinks(t, ns, second); !slices.Equal(got, links) {
		t.Errorf("links after starting again %v, want %v", got, links)
	}
	// The provider first: the stub guest never lets go of a hot-plugged
	// NIC, so stopping the client first would wait for the unplug timeout.
	if r, err := second.ask(control.Request{Op: "stop", Name: "net"}); err != nil || !r.OK {
		second.fail(t, "stop net: %+v, %v", r, err)
	}
	second.cmd.Process.Signal(syscall.SIGTERM)
	if err := second.cmd.Wait(); err != nil {
		second.fail(t, "second spectrumd exit: %v", err)
	}
	ourLinks(t, ns, nil)
}

// procUID is the real uid process pid runs as.
func procUID(t *testing.T, pid int) string {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, _ := strings.Cut(string(b), "\nUid:")
	return strings.Fields(rest)[0]
}

// testUIDs is a -vm-uids range for one test: out of the default range and
// apart for each test binary, so tests running at once never share a uid.
func testUIDs() string {
	first := 420000 + (os.Getpid()%1000)*100
	return fmt.Sprintf("%d-%d", first, first+99)
}

// writeStubData writes a data directory of two VMs booting the stub
// kernel: "net", and "app", a client of net.
func writeStubData(t *testing.T, data string) {
	t.Helper()
	for _, f := range []struct {
		path string
		body []byte
	}{
		{"net/vmlinux", stubkernel.ELF()},
		{"net/blk/root.img", make([]byte, 1<<20)},
		{"app/vmlinux", stubkernel.ELF()},
		{"app/blk/root.img", make([]byte, 1<<20)},
		{"app/providers/net/net", nil},
	} {
		p := filepath.Join(data, f.path)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, f.body, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// requireQEMU stops the test where QEMU is missing (internal/testenv).
func requireQEMU(t testing.TB) {
	t.Helper()
	testenv.Tool(t, "qemu-system-x86_64", "make deps installs qemu-system-x86")
}
