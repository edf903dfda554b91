package dist

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"spectrum-os.org/netcfg/host/control"
	"spectrum-os.org/netcfg/host/vmm"
	"spectrum-os.org/netcfg/internal/journaldtest"
	"spectrum-os.org/netcfg/internal/mac"
	"spectrum-os.org/netcfg/internal/nstest"
	"spectrum-os.org/netcfg/internal/stubkernel"
	"spectrum-os.org/netcfg/internal/testenv"
	"spectrum-os.org/netcfg/vmtest/distinit"
	"spectrum-os.org/netcfg/vmtest/vm"
)

// sandboxEnv is one `make install` and a data directory, for lifecycles
// under the installed unit's sandbox. It lives under /run, not /tmp: the
// sandbox's PrivateTmp hides /tmp.
type sandboxEnv struct {
	root, bin, data string
	unit            unitKeys
	runs            int
	// journalStream: spectrumd's stderr is the journal's stream, as systemd
	// makes it (JOURNAL_STREAM names it).
	journalStream bool
}

func newSandboxEnv(t *testing.T) *sandboxEnv {
	t.Helper()
	testenv.Root(t, "to run spectrumd under its unit's sandbox (namespaces, taps, QEMU as other users)")
	testenv.Tool(t, "qemu-system-x86_64", "make deps installs qemu-system-x86")
	testenv.Tool(t, "ip", "make deps installs iproute2")
	root, err := os.MkdirTemp("/run", "spectrum-sandbox-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(root) })
	dest := filepath.Join(root, "dest")
	if out, err := distinit.Install(repoRoot(t), bins(t), dest, "INITRAMFS="); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	env := &sandboxEnv{root: root, bin: filepath.Join(dest, "usr/local/bin/spectrumd"), data: filepath.Join(root, "data")}
	env.unit = parseUnit(readFile(t, filepath.Join(dest, "usr/local/lib/systemd/system/spectrumd.service")))

	// The VM directories belong to their user, as on a user partition:
	// 0700 directories and 0600 files of uid 65534, which root reads only
	// with CAP_DAC_READ_SEARCH.
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
		p := filepath.Join(env.data, f.path)
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, f.body, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	filepath.Walk(env.data, func(p string, _ os.FileInfo, err error) error {
		if err == nil {
			err = os.Lchown(p, 65534, 65534)
		}
		return err
	})
	return env
}

// serve is one `spectrumd serve` under the sandbox.
type serve struct {
	cmd    *exec.Cmd
	log    string
	run    string
	exited chan error
}

func (s *serve) logTail() string {
	b, _ := os.ReadFile(s.log)
	if len(b) > 60000 {
		b = b[len(b)-60000:]
	}
	return string(b)
}

// errorf is an error of the lifecycle, with spectrumd's log.
func (s *serve) errorf(format string, args ...any) error {
	return fmt.Errorf(format+"\nspectrumd's log (the end):\n%s", append(args, s.logTail())...)
}

func (s *serve) call(req control.Request, wait time.Duration) (control.Response, error) {
	return control.Call(filepath.Join(s.run, "control.sock"), req, wait)
}

// startServe starts spectrumd serve in ns under sb.
func (e *sandboxEnv) startServe(t *testing.T, ns *nstest.NS, sb sandbox, state, run string) (*serve, error) {
	b, err := json.Marshal(sb)
	if err != nil {
		return nil, err
	}
	// Registered first, so it runs last: a QEMU that outlived its
	// spectrumd (the lifecycle without CAP_KILL, whose parent-death signal
	// cannot reach another uid) is killed through its pid file, as the
	// next serve would, instead of running on after the test.
	t.Cleanup(func() { vmm.KillOrphans(run, slog.New(slog.DiscardHandler)) })
	s := &serve{log: filepath.Join(e.root, fmt.Sprintf("serve-%d.log", e.runs)), run: run, exited: make(chan error, 1)}
	e.runs++
	lf, err := os.Create(s.log)
	if err != nil {
		return nil, err
	}
	defer lf.Close()
	s.cmd = ns.Command(context.Background(), os.Args[0])
	s.cmd.Env = testenv.HelperEnv(helperSandbox, "SPECTRUM_SANDBOX="+string(b), "JOURNAL_STREAM=")
	if e.journalStream {
		var st syscall.Stat_t
		if err := syscall.Fstat(int(lf.Fd()), &st); err != nil {
			return nil, err
		}
		s.cmd.Env = append(s.cmd.Env, fmt.Sprintf("JOURNAL_STREAM=%d:%d", st.Dev, st.Ino))
	}
	s.cmd.Stdout, s.cmd.Stderr = lf, lf
	if err := s.cmd.Start(); err != nil {
		return nil, err
	}
	go func() { s.exited <- s.cmd.Wait() }()
	t.Cleanup(func() {
		if s.cmd.ProcessState == nil {
			s.cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-s.exited:
			case <-time.After(30 * time.Second):
				s.cmd.Process.Kill()
			}
		}
	})
	deadline := time.Now().Add(60 * time.Second)
	for {
		if _, err := s.call(control.Request{Op: "list"}, 5*time.Second); err == nil {
			return s, nil
		}
		select {
		case err := <-s.exited:
			return nil, s.errorf("spectrumd serve exited before serving: %v", err)
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return nil, s.errorf("spectrumd serve does not answer")
		}
	}
}

// running waits until every VM of names runs, not with a pid of not, and
// returns their pids.
func (s *serve) running(names []string, not map[string]int) (map[string]int, error) {
	deadline := time.Now().Add(90 * time.Second)
	for {
		pids := map[string]int{}
		for _, n := range names {
			r, err := s.call(control.Request{Op: "status", Name: n}, 10*time.Second)
			if err == nil && len(r.VMs) == 1 && r.VMs[0].State == "running" && r.VMs[0].PID != 0 && r.VMs[0].PID != not[n] {
				pids[n] = r.VMs[0].PID
			}
		}
		if len(pids) == len(names) {
			return pids, nil
		}
		if time.Now().After(deadline) {
			return nil, s.errorf("VMs %v not all running: %v", names, pids)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// procStatus is /proc/PID/status as fields.
func procStatus(pid int) (map[string]string, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, l := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(l, ":"); ok {
			out[k] = strings.TrimSpace(v)
		}
	}
	return out, nil
}

func gone(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return true
	}
	_, after, _ := strings.Cut(string(b), ") ")
	return strings.HasPrefix(after, "Z")
}

func waitGone(pids map[string]int, wait time.Duration) error {
	deadline := time.Now().Add(wait)
	for name, pid := range pids {
		for !gone(pid) {
			if time.Now().After(deadline) {
				return fmt.Errorf("QEMU of %s (pid %d) still runs", name, pid)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	return nil
}

// lifecycle runs, under the unit's sandbox less drop (capability names or
// system calls): serve; start a client, so its provider starts first and
// the link is wired and hot-plugged; SIGKILL of the client's QEMU (a
// crash: relaunched); stop of both, whose guests (the stub kernel) ignore
// the power button, so each QEMU is killed after -stop-timeout; start
// again and SIGKILL spectrumd (its QEMUs die with it); serve again on the
// same state, start, SIGTERM. It returns the first step that failed.
func (e *sandboxEnv) lifecycle(t *testing.T, drop ...string) error {
	ns := nstest.New(t)
	dir, err := os.MkdirTemp(e.root, "life-")
	if err != nil {
		return err
	}
	state, run := filepath.Join(dir, "state"), filepath.Join(dir, "run")
	for _, d := range []string{state, run} {
		if err := os.Mkdir(d, 0o700); err != nil {
			return err
		}
	}
	argv := []string{e.bin, "serve", "-data", e.data, "-state", state, "-run", run, "-accel", "tcg", "-memory", "64",
		"-stop-timeout", "1s", "-nic-timeout", "500ms"}
	sb := unitSandbox(t, e.unit, []string{state, run}, argv, drop...)

	s, err := e.startServe(t, ns, sb, state, run)
	if err != nil {
		return err
	}
	// spectrumd holds exactly the unit's capabilities, under the filter.
	st, err := procStatus(s.cmd.Process.Pid)
	if err != nil {
		return err
	}
	var mask uint64
	for _, c := range sb.Caps {
		mask |= 1 << c
	}
	for k, want := range map[string]string{"CapBnd": fmt.Sprintf("%016x", mask), "CapEff": fmt.Sprintf("%016x", mask),
		"CapPrm": fmt.Sprintf("%016x", mask), "CapInh": "0000000000000000", "CapAmb": "0000000000000000",
		"NoNewPrivs": "1", "Seccomp": "2", "Seccomp_filters": "1", "Uid": "0\t0\t0\t0"} {
		if st[k] != want {
			return s.errorf("spectrumd's %s is %q, want %q", k, st[k], want)
		}
	}

	both := []string{"net", "app"}
	if _, err := s.call(control.Request{Op: "start", Name: "app"}, 2*time.Minute); err != nil {
		return s.errorf("start app: %v", err)
	}
	pids, err := s.running(both, nil)
	if err != nil {
		return err
	}
	// Each QEMU: its own uid, no capabilities, the unit's filter,
	// spectrumd's (host/confine: its tap ioctls) and its own sandbox on
	// top; and its guest boots (the stub kernel's line on
	// the serial console).
	for name, pid := range pids {
		q, err := procStatus(pid)
		if err != nil {
			return err
		}
		if strings.HasPrefix(q["Uid"], "0\t") || q["CapEff"] != "0000000000000000" || q["Seccomp_filters"] != "3" {
			return s.errorf("QEMU of %s: Uid %q, CapEff %q, Seccomp_filters %q; want a uid of its own, none, 3", name, q["Uid"], q["CapEff"], q["Seccomp_filters"])
		}
		t.Logf("QEMU of %s: pid %d, Uid %s, CapEff %s, Seccomp_filters %s", name, pid, strings.Fields(q["Uid"])[0], q["CapEff"], q["Seccomp_filters"])
		deadline := time.Now().Add(60 * time.Second)
		for {
			b, _ := os.ReadFile(filepath.Join(state, "logs", name+".log"))
			if strings.Contains(string(b), stubkernel.Message) {
				break
			}
			if time.Now().After(deadline) {
				return s.errorf("the guest of %s wrote nothing on its serial console:\n%s", name, b)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}

	// A crash: the supervisor relaunches it.
	syscall.Kill(pids["app"], syscall.SIGKILL)
	relaunched, err := s.running([]string{"app"}, map[string]int{"app": pids["app"]})
	if err != nil {
		return fmt.Errorf("after the client's QEMU was killed: %w", err)
	}
	t.Logf("the client's QEMU killed (pid %d), relaunched (pid %d)", pids["app"], relaunched["app"])
	pids["app"] = relaunched["app"]

	// Stops of guests that ignore the power button: QEMU is killed, which
	// takes CAP_KILL (it runs as another uid).
	for _, n := range []string{"app", "net"} {
		began := time.Now()
		if _, err := s.call(control.Request{Op: "stop", Name: n}, 90*time.Second); err != nil {
			return s.errorf("stop %s: %v", n, err)
		}
		t.Logf("stop %s (a guest that ignores the power button): %v", n, time.Since(began).Round(time.Millisecond))
	}
	if err := waitGone(pids, 10*time.Second); err != nil {
		return s.errorf("after stop: %v", err)
	}

	// SIGKILL of spectrumd: its QEMUs go with it.
	if _, err := s.call(control.Request{Op: "start", Name: "app"}, 2*time.Minute); err != nil {
		return s.errorf("start app again: %v", err)
	}
	if pids, err = s.running(both, nil); err != nil {
		return err
	}
	s.cmd.Process.Kill()
	<-s.exited
	if err := waitGone(pids, 10*time.Second); err != nil {
		return s.errorf("after SIGKILL of spectrumd: %v", err)
	}
	t.Logf("SIGKILL of spectrumd: its QEMUs %v are gone", pids)

	// Serve again on the same state: start, then SIGTERM stops it all.
	s, err = e.startServe(t, ns, sb, state, run)
	if err != nil {
		return fmt.Errorf("serve after SIGKILL: %w", err)
	}
	if _, err := s.call(control.Request{Op: "start", Name: "app"}, 2*time.Minute); err != nil {
		return s.errorf("start app after SIGKILL: %v", err)
	}
	if pids, err = s.running(both, nil); err != nil {
		return err
	}
	s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-s.exited:
		if err != nil {
			return s.errorf("spectrumd serve after SIGTERM: %v", err)
		}
	case <-time.After(2 * time.Minute):
		return s.errorf("spectrumd serve still runs 2 minutes after SIGTERM")
	}
	if err := waitGone(pids, 10*time.Second); err != nil {
		return s.errorf("after SIGTERM: %v", err)
	}
	if out := string(ns.IP("-o", "link", "show")); strings.Contains(out, "spbr-") || strings.Contains(out, "spc-") || strings.Contains(out, "spp-") {
		return s.errorf("links left in spectrumd's namespace:\n%s", out)
	}
	t.Logf("serve again, start, SIGTERM: exit status 0, QEMUs %v gone", pids)
	return nil
}

// TestUnitSandbox runs spectrumd's lifecycle under exactly the installed
// unit's sandbox (see sandbox_test.go for what is emulated): it works.
func TestUnitSandbox(t *testing.T) {
	env := newSandboxEnv(t)
	if err := env.lifecycle(t); err != nil {
		t.Fatal(err)
	}
}

// TestUnitSandboxNeedsAll takes away each capability the unit grants, and
// the one system call it adds to @system-service: every time the lifecycle
// fails, so the unit grants nothing spectrumd does not need, and the test
// above would catch a capability or call that goes missing.
//
// The exception is what only a VM with a PCI uplink needs, which no host
// here can run: each is proven needed where it is used instead.
func TestUnitSandboxNeedsAll(t *testing.T) {
	env := newSandboxEnv(t)
	parts := append(strings.Fields(env.unit.last("CapabilityBoundingSet")), "seccomp")
	for _, p := range parts {
		t.Run(p, func(t *testing.T) {
			if why := vfioOnly[p]; why != "" {
				t.Logf("%s: not in this lifecycle; %s", p, why)
				return
			}
			err := env.lifecycle(t, p)
			if err == nil {
				t.Fatalf("the lifecycle works without %s: the unit grants it for nothing", p)
			}
			msg, log, _ := strings.Cut(err.Error(), "\nspectrumd's log (the end):\n")
			lines := strings.Split(strings.TrimSpace(log), "\n")
			t.Logf("without %s: %s\n  spectrumd's last line: %s", p, msg, lines[len(lines)-1])
		})
	}
}

// TestUnitSandboxJournal runs spectrumd under the unit's sandbox as
// systemd starts it (its stderr the journal's stream, the unit's flags: -log
// auto) with a real journald: its records and a guest's serial line reach
// the journal through the native socket, with their fields, and nothing
// falls back to stderr.
func TestUnitSandboxJournal(t *testing.T) {
	j := journaldtest.Get(t)
	env := newSandboxEnv(t)
	env.journalStream = true
	ns := nstest.New(t)
	state, run := filepath.Join(env.root, "journal-state"), filepath.Join(env.root, "journal-run")
	for _, d := range []string{state, run} {
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	argv := []string{env.bin, "serve", "-data", env.data, "-state", state, "-run", run, "-accel", "tcg", "-memory", "64", "-stop-timeout", "1s"}
	s, err := env.startServe(t, ns, unitSandbox(t, env.unit, []string{state, run}, argv), state, run)
	if err != nil {
		t.Fatal(err)
	}
	// What tells a missing entry's cause: where spectrumd's records went
	// instead (its stderr), and whether the guest's line reached it (the
	// VM's log file).
	t.Cleanup(func() {
		if t.Failed() {
			vmLog, err := os.ReadFile(filepath.Join(state, "logs", "app.log"))
			t.Logf("spectrumd (pid %d)'s stderr:\n%s\nthe VM's log file (%v):\n%s", s.cmd.Process.Pid, s.logTail(), err, vmLog)
		}
	})
	// spectrumd says where it logs before it serves: the journal, or
	// stderr and why not the journal.
	if s.logTail() != "" {
		t.Fatalf("spectrumd logs to stderr under systemd with a journal (its stderr below)\n%s", j.Dump())
	}
	if _, err := s.call(control.Request{Op: "start", Name: "app"}, 2*time.Minute); err != nil {
		t.Fatal(s.errorf("start app: %v", err))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	pid := strconv.Itoa(s.cmd.Process.Pid)
	for _, m := range [][]string{
		{"SPECTRUM_VM=app", "SPECTRUM_SOURCE=serial", "MESSAGE=" + stubkernel.Message},
		{"SYSLOG_IDENTIFIER=spectrumd", "MESSAGE=log to=\"journal (stderr is the journal's stream)\""},
	} {
		for _, e := range j.Wait(ctx, t, 1, append(m, "_PID="+pid)...) {
			t.Logf("journal: %s %s: %s", e["SYSLOG_IDENTIFIER"], e["PRIORITY"], e["MESSAGE"])
		}
	}
	s.cmd.Process.Signal(syscall.SIGTERM)
	if err := <-s.exited; err != nil {
		t.Fatal(s.errorf("spectrumd serve: %v", err))
	}
	if log := s.logTail(); log != "" {
		t.Errorf("spectrumd wrote to stderr under systemd with a journal:\n%s", log)
	}
	j.Wait(ctx, t, 1, "_PID="+pid, "MESSAGE=spectrumd stopped")
}

// vfioOnly are the grants only a VM with a PCI uplink (VFIO) uses, and
// where each is shown to be needed.
var vfioOnly = map[string]string{
	"CAP_SYS_RESOURCE": "a QEMU's RLIMIT_MEMLOCK above spectrumd's hard limit (host/qemu TestMemlockLive: refused without it, naming it; vmtest TestVFIONested: the guest's RAM pinned)",
}

// waitLog waits until the VM's serial log in state holds want.
func (s *serve) waitLog(state, name, want string, wait time.Duration) error {
	deadline := time.Now().Add(wait)
	for {
		b, _ := os.ReadFile(filepath.Join(state, "logs", name+".log"))
		if strings.Contains(string(b), want) {
			return nil
		}
		if time.Now().After(deadline) {
			return s.errorf("%s's serial console never showed %q:\n%s", name, want, b)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestUnitSandboxRealGuests boots the documented pair, Linux guests (the
// Debian test kernel and the test init), under the unit's sandbox: their
// agents configure the link, they ping each other through it, the
// client's console answers on hvc0, and stop powers each down by the power
// button. So QEMU's devices (virtio-net, -blk, -console, the serial port,
// ACPI) work under the unit's filter and view, not only the stub kernel's
// boot.
func TestUnitSandboxRealGuests(t *testing.T) {
	env := newSandboxEnv(t)
	a := vm.BuildAssets(t, vm.Require(t))
	data := filepath.Join(env.root, "guests")
	specs := []vm.Spec{{Name: "netvm", Cmdline: "spectrum.watch"}, {Name: "appvm-lynx", Providers: []string{"netvm"}}}
	for _, sp := range specs {
		if _, err := vm.WriteDir(data, sp, a); err != nil {
			t.Fatal(err)
		}
	}
	ns := nstest.New(t)
	state, run := filepath.Join(env.root, "guests-state"), filepath.Join(env.root, "guests-run")
	for _, d := range []string{state, run} {
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	argv := []string{env.bin, "serve", "-data", data, "-state", state, "-run", run, "-accel", "tcg", "-stop-timeout", "60s"}
	s, err := env.startServe(t, ns, unitSandbox(t, env.unit, []string{state, run}, argv), state, run)
	if err != nil {
		t.Fatal(err)
	}
	st, err := s.call(control.Request{Op: "status", Name: "appvm-lynx"}, 10*time.Second)
	if err != nil || len(st.VMs) != 1 || len(st.VMs[0].Links) != 1 {
		t.Fatalf("status appvm-lynx: %+v, %v", st, err)
	}
	id, err := mac.ParseLinkID(st.VMs[0].Links[0].ID)
	if err != nil {
		t.Fatal(err)
	}
	gw, addr := id.Gateway().String(), id.ClientAddr().String()
	specs[0].Test, specs[1].Test = "ping:"+addr+",serve", "ping:"+gw+",serve"
	for _, sp := range specs {
		if err := vm.WriteCmdline(filepath.Join(data, sp.Name), sp); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.call(control.Request{Op: "start", Name: "appvm-lynx"}, 2*time.Minute); err != nil {
		t.Fatal(s.errorf("start appvm-lynx: %v", err))
	}
	for _, w := range []struct{ vm, line string }{
		{"appvm-lynx", "spectrum-netcfg: done: 1 configured, 0 failed, status 0"},
		{"appvm-lynx", "SPECTRUM-TEST: ping " + gw + " icmp ok"},
		{"netvm", "SPECTRUM-TEST: ping " + addr + " icmp ok"},
	} {
		if err := s.waitLog(state, w.vm, w.line, 3*time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("both guests booted, configured the link %s and pinged each other", id)

	// The client's console: a shell on hvc0.
	_, br, c, err := control.Dial(filepath.Join(run, "control.sock"), control.Request{Op: "console", Name: "appvm-lynx"}, 10*time.Second)
	if err != nil {
		t.Fatal(s.errorf("console: %v", err))
	}
	if _, err := c.Write([]byte("\necho hvc0-$((6*7))\n")); err != nil {
		t.Fatal(err)
	}
	got := make(chan string, 1)
	go func() {
		var out []byte
		buf := make([]byte, 4096)
		for !strings.Contains(string(out), "hvc0-42") {
			n, err := br.Read(buf)
			out = append(out, buf[:n]...)
			if err != nil {
				break
			}
		}
		got <- string(out)
	}()
	select {
	case out := <-got:
		if !strings.Contains(out, "hvc0-42") {
			t.Errorf("the console showed %q, no hvc0-42", out)
		}
	case <-time.After(2 * time.Minute):
		t.Error("the console never answered")
	}
	c.Close()

	for _, n := range []string{"appvm-lynx", "netvm"} {
		began := time.Now()
		if _, err := s.call(control.Request{Op: "stop", Name: n}, 2*time.Minute); err != nil {
			t.Fatal(s.errorf("stop %s: %v", n, err))
		}
		if err := s.waitLog(state, n, "SPECTRUM-TEST: power button pressed", 5*time.Second); err != nil {
			t.Fatal(err)
		}
		t.Logf("stop %s: powered down by the power button in %v", n, time.Since(began).Round(time.Millisecond))
	}
}
