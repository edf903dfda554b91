// Binary spectrum-demo is `make run`: it prepares a svc/data directory with the
// documented example — netvm providing networking to appvm-lynx — booting
// the test kernel and the test initramfs, runs `spectrumd serve` in a
// private network namespace in the foreground, starts appvm-lynx (and so
// netvm first), and leaves spectrumd's log on the terminal: its lines carry
// every guest's serial console, tagged vm=NAME. Ctrl-C stops every VM,
// removes every link and deletes the namespace.
//
// Everything lives in .cache/run/ of the repository: svc/data (written
// afresh each run), state (link ids, kept, so the addresses stay the same
// from run to run, and the per-VM logs) and run (sockets). It needs root
// (namespaces and taps), QEMU and the test kernel (`make kernel`).
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"spectrum-os.org/netcfg/host/control"
	"spectrum-os.org/netcfg/internal/mac"
	"spectrum-os.org/netcfg/vmtest/kernel"
	"spectrum-os.org/netcfg/vmtest/vm"
)

// netns is the namespace's name: fixed, so a run that was killed leaves
// one behind that the next run removes.
const netns = "spectrum-run"

func main() {
	bin := flag.String("spectrumd", "bin/spectrumd", "the spectrumd `binary`")
	flag.Parse()
	if err := run(*bin); err != nil {
		fmt.Fprintln(os.Stderr, "make run:", err)
		os.Exit(1)
	}
}

func run(bin string) error {
	if os.Geteuid() != 0 {
		return errors.New("needs root: spectrumd creates bridges and taps in a network namespace")
	}
	bin, err := filepath.Abs(bin)
	if err != nil {
		return err
	}
	root, err := kernel.RepoRoot()
	if err != nil {
		return err
	}
	k, err := kernel.Find()
	if err != nil {
		return fmt.Errorf("%w (make kernel fetches it)", err)
	}
	say("building the guest initramfs (test init, spectrum-netcfg, %s's modules)", filepath.Base(k.Vmlinux))
	a, err := vm.Build(k)
	if err != nil {
		return err
	}
	base := filepath.Join(root, ".cache", "run")
	data, state, rundir := filepath.Join(base, "svc", "data"), filepath.Join(base, "state"), filepath.Join(base, "run")
	if err := os.RemoveAll(data); err != nil {
		return err
	}
	// A run killed without its cleanup left its namespace (and links and
	// sockets): start from nothing.
	exec.Command("ip", "netns", "del", netns).Run()
	os.RemoveAll(rundir)
	if err := os.MkdirAll(data, 0o755); err != nil {
		return err
	}
	netvm := vm.Spec{Name: "netvm", Cmdline: "quiet spectrum.watch", Test: "serve"}
	app := vm.Spec{Name: "appvm-lynx", Providers: []string{"netvm"}, Cmdline: "quiet", Test: "serve"}
	for _, s := range []vm.Spec{netvm, app} {
		if _, err := vm.WriteDir(data, s, a); err != nil {
			return err
		}
	}
	if out, err := exec.Command("ip", "netns", "add", netns).CombinedOutput(); err != nil {
		return fmt.Errorf("ip netns add %s: %v: %s", netns, err, out)
	}
	defer func() {
		if out, err := exec.Command("ip", "netns", "del", netns).CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "make run: ip netns del %s: %v: %s\n", netns, err, out)
		} else {
			say("network namespace %s deleted", netns)
		}
	}()
	exec.Command("ip", "-n", netns, "link", "set", "lo", "up").Run()

	args := []string{"netns", "exec", netns, bin, "serve", "-data", data, "-state", state, "-run", rundir, "-stop-timeout", "10s"}
	say("ip %s", strings.Join(args, " "))
	serve := exec.Command("ip", args...)
	serve.Stdout, serve.Stderr = os.Stdout, os.Stderr
	// Its own process group: Ctrl-C reaches this program only, which
	// turns it into one SIGTERM for spectrumd; the terminal's SIGINT
	// must not hit the QEMUs before spectrumd powers them down.
	serve.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	if err := serve.Start(); err != nil {
		return err
	}
	exited := make(chan error, 1)
	go func() { exited <- serve.Wait() }()

	cli := func(args ...string) ([]byte, error) {
		out, err := exec.Command(bin, append([]string{args[0], "-run", rundir}, args[1:]...)...).CombinedOutput()
		if err != nil {
			return out, fmt.Errorf("spectrumd %s: %v: %s", strings.Join(args, " "), err, out)
		}
		return out, nil
	}
	started := make(chan error, 1)
	go func() { started <- startExample(cli, data, netvm, app) }()

	interrupted := false
	for {
		select {
		case err := <-started:
			if err != nil {
				fmt.Fprintln(os.Stderr, "make run:", err)
				serve.Process.Signal(syscall.SIGTERM)
			} else {
				say("appvm-lynx and netvm started; Ctrl-C stops them (`spectrumd status -run %s appvm-lynx` in another terminal)", rundir)
			}
		case <-sigs:
			if interrupted {
				say("killing spectrumd (its QEMUs die with it)")
				serve.Process.Kill()
				continue
			}
			interrupted = true
			say("stopping: spectrumd powers the VMs down and removes the links (Ctrl-C again kills)")
			serve.Process.Signal(syscall.SIGTERM)
		case err := <-exited:
			if err != nil && !interrupted {
				return fmt.Errorf("spectrumd serve: %w", err)
			}
			return nil
		}
	}
}

// startExample waits for spectrumd's control socket, writes the guests'
// test steps with the link's addresses (spectrumd gives the link id and
// reads each cmdline at start), and starts appvm-lynx.
func startExample(cli func(...string) ([]byte, error), data string, netvm, app vm.Spec) error {
	var out []byte
	var err error
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if out, err = cli("status", "-json", "appvm-lynx"); err == nil {
			break
		}
		if time.Now().After(deadline) {
			return err
		}
	}
	var st control.VMStatus
	if err := json.Unmarshal(out, &st); err != nil || len(st.Links) != 1 {
		return fmt.Errorf("spectrumd status -json appvm-lynx: %v: %s", err, out)
	}
	id, err := mac.ParseLinkID(st.Links[0].ID)
	if err != nil {
		return err
	}
	// netvm pings its client and appvm-lynx its gateway (ICMP and UDP
	// echo, both answer the other's), then each keeps checking the path
	// every second and logs when it goes down or comes back.
	netvm.Test = "ping:" + id.ClientAddr().String() + ",pingwatch:" + id.ClientAddr().String() + ",serve"
	app.Test = "ping:" + id.Gateway().String() + ",pingwatch:" + id.Gateway().String() + ",serve"
	for _, s := range []vm.Spec{netvm, app} {
		if err := vm.WriteCmdline(filepath.Join(data, s.Name), s); err != nil {
			return err
		}
	}
	_, err = cli("start", "appvm-lynx")
	return err
}

func say(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "==> "+format+"\n", args...)
}
