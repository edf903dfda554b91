package vmtest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"spectrum-os.org/netcfg/host/control"
	"spectrum-os.org/netcfg/internal/syncbuf"
	"spectrum-os.org/netcfg/vmtest/kernel"
	"spectrum-os.org/netcfg/vmtest/lan"
	"spectrum-os.org/netcfg/vmtest/vm"
)

// TestDemo runs `make run`'s program (cmd/spectrum-demo) as a user would,
// with namespaces and directories of its own: it waits for appvm-lynx's
// `lynx -dump` of the LAN's page by name in the log, and of the page by
// IPv6 address (the LAN is dual-stack), each saying its family; then, in a real
// terminal (tmux), `spectrumd console appvm-lynx`: Enter gives the shell on
// hvc0, `lynx -dump` of the page by name shows its text, interactive lynx
// draws it and quits, Ctrl-] detaches, and the terminal's settings (stty
// -g) are what they were before; then SIGINT, and no namespace, link,
// QEMU or dnsmasq of the run is left.
func TestDemo(t *testing.T) {
	vm.Require(t)
	if _, err := exec.LookPath("tmux"); err != nil {
		t.Fatalf("%v (scripts/deps.sh installs tmux)", err)
	}
	ctx := vm.Context(t, 6*time.Minute)
	root, err := kernel.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	demo := filepath.Join(dir, "spectrum-demo")
	if out, err := exec.Command("go", "build", "-C", root, "-o", demo, "./cmd/spectrum-demo").CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/spectrum-demo: %v\n%s", err, out)
	}
	var b [4]byte
	rand.Read(b[:])
	tag := hex.EncodeToString(b[:])
	netns, lanNS, run := "spt-run-"+tag, "spt-lan-"+tag, filepath.Join(dir, "run")

	cmd := exec.Command(demo, "-spectrumd", spectrumdBin, "-dir", dir, "-netns", netns, "-lan-netns", lanNS, "-run", run)
	out := &syncbuf.Buffer{}
	cmd.Stdout, cmd.Stderr = out, out
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			cmd.Process.Signal(syscall.SIGINT)
			select {
			case <-exited:
			case <-time.After(time.Minute):
				cmd.Process.Kill()
			}
		}
		if t.Failed() {
			t.Logf("spectrum-demo's output:\n%s", out)
		}
	})
	waitOutput(t, ctx, out, exited, "==> appvm-lynx showed "+webByName)
	t.Logf("page shown %.1fs after spectrum-demo started", time.Since(start).Seconds())
	if !strings.Contains(out.String(), "msg=\"                            "+lan.PageHeading+"\" vm=appvm-lynx source=serial") {
		t.Errorf("no %q from appvm-lynx's lynx -dump in the log", lan.PageHeading)
	}
	// The LAN is dual-stack: the page by name came over IPv4 (RFC 6724),
	// the one by IPv6 address over IPv6, each saying so.
	waitOutput(t, ctx, out, exited, "==> appvm-lynx showed "+web6)
	for _, f := range []string{"IPv4", "IPv6"} {
		if !strings.Contains(out.String(), "msg=\"   "+lan.PageFamily(f)+"\" vm=appvm-lynx source=serial") {
			t.Errorf("no %q from appvm-lynx's lynx -dump in the log", lan.PageFamily(f))
		}
	}
	var pids []int
	vms, err := exec.Command(spectrumdBin, "list", "-json", "-run", run).Output()
	var st []control.VMStatus
	if err != nil || json.Unmarshal(vms, &st) != nil || len(st) != 2 {
		t.Fatalf("spectrumd list -json: %v: %s", err, vms)
	}
	for _, v := range st {
		pids = append(pids, v.PID)
	}

	t.Run("console", func(t *testing.T) { consoleInTmux(t, ctx, dir, run) })

	cmd.Process.Signal(syscall.SIGINT)
	select {
	case err := <-exited:
		stopped = true
		if err != nil {
			t.Errorf("spectrum-demo after SIGINT: %v", err)
		}
	case <-ctx.Done():
		t.Fatalf("spectrum-demo still running after SIGINT")
	}
	if out, _ := exec.Command("ip", "netns", "list").Output(); bytes.Contains(out, []byte(netns)) || bytes.Contains(out, []byte(lanNS)) {
		t.Errorf("namespaces left: %s", out)
	}
	for _, pid := range pids {
		if err := syscall.Kill(pid, 0); err == nil {
			t.Errorf("QEMU pid %d still running", pid)
		}
	}
	if got, _ := exec.Command("pgrep", "-f", dir).Output(); len(got) != 0 {
		t.Errorf("processes of the run left (dnsmasq?): %s", got)
	}
	// The demo makes no link outside its namespaces: none of its names
	// (the LAN's bridge and port, uplink and link taps and bridges) is in
	// the host's.
	for _, l := range links(t) {
		if strings.HasPrefix(l, "lan0") || strings.HasPrefix(l, "spu") || strings.HasPrefix(l, "spbr-") || strings.HasPrefix(l, "spc-") || strings.HasPrefix(l, "spp-") {
			t.Errorf("link %s in the host's namespace", l)
		}
	}
	for _, want := range []string{"==> LAN stopped", "==> network namespace " + netns + " deleted"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("no %q in spectrum-demo's output", want)
		}
	}
}

// consoleInTmux drives `spectrumd console appvm-lynx` in a tmux session.
func consoleInTmux(t *testing.T, ctx context.Context, dir, run string) {
	sock := filepath.Join(dir, "tmux.sock")
	before, after := filepath.Join(dir, "stty.before"), filepath.Join(dir, "stty.after")
	script := filepath.Join(dir, "console.sh")
	// The settings after come before the exit status is shown: the test
	// reads them once it sees the status.
	body := fmt.Sprintf("#!/bin/sh\nstty -g >%s\n%s console -run %s appvm-lynx\ns=$?\nstty -g >%s\necho \"console exit=$s\"\nexec sleep 600\n",
		before, spectrumdBin, run, after)
	if err := os.WriteFile(script, []byte(body), 0o755); err != nil {
		t.Fatal(err)
	}
	tmux := func(args ...string) string {
		t.Helper()
		out, err := exec.Command("tmux", append([]string{"-S", sock}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("tmux %s: %v: %s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	tmux("new-session", "-d", "-s", "demo", "-x", "100", "-y", "32", script)
	t.Cleanup(func() { exec.Command("tmux", "-S", sock, "kill-server").Run() })
	// paneWithout waits until the visible screen holds every want and
	// not gone.
	paneWithout := func(gone string, wants ...string) string {
		t.Helper()
		for {
			s := tmux("capture-pane", "-p", "-t", "demo")
			ok := gone == "" || !strings.Contains(s, gone)
			for _, w := range wants {
				ok = ok && strings.Contains(s, w)
			}
			if ok {
				return s
			}
			select {
			case <-ctx.Done():
				t.Fatalf("terminal never showed %q; it shows:\n%s", wants, s)
			case <-time.After(200 * time.Millisecond):
			}
		}
	}
	pane := func(wants ...string) string { t.Helper(); return paneWithout("", wants...) }
	pane("connected to appvm-lynx's console")
	tmux("send-keys", "-t", "demo", "Enter")
	pane("appvm-lynx:")
	tmux("send-keys", "-t", "demo", "-l", "lynx -dump "+webByName)
	tmux("send-keys", "-t", "demo", "Enter")
	pane(lan.PageHeading, "References", "http://www.lan.test/whoami")
	tmux("send-keys", "-t", "demo", "-l", "clear; lynx "+webByName)
	tmux("send-keys", "-t", "demo", "Enter")
	// Interactive lynx draws the page and its help line at the bottom.
	pane(lan.PageHeading, "Arrow keys: Up and Down to move.")
	tmux("send-keys", "-t", "demo", "q")
	pane("Are you sure you want to quit?")
	tmux("send-keys", "-t", "demo", "y")
	// Typed only once lynx has left the screen: it may discard input
	// that arrives while it exits.
	paneWithout("Arrow keys", "appvm-lynx:")
	tmux("send-keys", "-t", "demo", "-l", "echo lynx-exit=$?")
	tmux("send-keys", "-t", "demo", "Enter")
	pane("lynx-exit=0")
	tmux("send-keys", "-t", "demo", "C-]")
	pane("detached from appvm-lynx", "console exit=0")
	b, err1 := os.ReadFile(before)
	a, err2 := os.ReadFile(after)
	if err1 != nil || err2 != nil || len(b) == 0 {
		t.Fatalf("stty state: %v, %v", err1, err2)
	}
	if !bytes.Equal(a, b) {
		t.Errorf("terminal settings after detaching %q, before %q", a, b)
	}
}

func waitOutput(t *testing.T, ctx context.Context, out *syncbuf.Buffer, exited <-chan error, want string) {
	t.Helper()
	for !strings.Contains(out.String(), want) {
		select {
		case err := <-exited:
			t.Fatalf("spectrum-demo exited (%v) before %q", err, want)
		case <-ctx.Done():
			t.Fatalf("no %q in spectrum-demo's output: %v", want, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// links returns the names of the links in this process's namespace.
func links(t *testing.T) []string {
	t.Helper()
	out, err := exec.Command("ip", "-j", "link", "show").Output()
	if err != nil {
		t.Fatal(err)
	}
	var ls []struct{ Ifname string }
	if err := json.Unmarshal(out, &ls); err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, l := range ls {
		names = append(names, l.Ifname)
	}
	return names
}
