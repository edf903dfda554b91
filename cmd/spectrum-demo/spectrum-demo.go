// Binary spectrum-demo is `make run`: the reference documentation's example
// for real. It starts a dual-stack LAN (vmtest/lan: a namespace with a DHCP
// server and router advertisements, a DNS server and a web site,
// www.lan.test, on 203.0.113.0/24 and 2001:db8:1::/64), writes a
// svc/data directory with netvm (an uplink on the LAN's bridge, its DHCP
// client, the router: spectrum-router) providing networking
// to appvm-lynx (Debian's lynx), runs `spectrumd serve` in a network
// namespace of its own in the foreground and starts appvm-lynx (so netvm
// first). spectrumd's log is the stream, every guest's serial console in
// it: at start appvm-lynx shows the LAN's front page with `lynx -dump
// http://www.lan.test/`, fetched by name through netvm (over IPv4, which a
// client prefers by name: RFC 6724), and again by the server's IPv6
// address, each page saying which family reached the server. Then `spectrumd
// console appvm-lynx` in a second terminal gives a shell on its
// virtio-console, where lynx browses interactively. Ctrl-C stops every VM,
// removes every link and deletes the namespaces.
//
// How lynx gets into appvm-lynx: Debian's own binary with its shared
// libraries (ldd's closure), /etc/lynx and a few terminal descriptions,
// appended to the test initramfs (vmtest/initramfs.Lynx), not a Debian root
// file system on blk/root.img. Measured here: the archive takes 0.6 s to
// build from the installed package and adds 11.6 MB, which the kernel
// unpacks with no visible cost (appvm-lynx's init starts at 2.1 s of
// uptime, netvm's without lynx at 2-3 s), so the page comes 8-11 s after
// `make run` starts on a second run; an mmdebstrap root (minbase and lynx)
// alone took 28 s and 169 MiB to build, before an image, a kernel hook and
// a boot of Debian's init under TCG (tens of seconds more each time). The
// browser is the same Debian binary either way; what the initramfs gives
// up is Debian's init and package manager inside the guest, which this
// example does not use.
//
// Everything it writes lives in .cache/run/ of the repository (-dir):
// svc/data (written afresh each run), state (link ids, kept, so addresses
// stay the same from run to run, and the per-VM logs), lan (the DHCP
// server's leases and the LAN's log) and, when a spectrumd already serves
// the default run directory, run. It needs root (namespaces, bridges,
// taps), QEMU, dnsmasq, busybox-static, lynx and the test kernel (`make
// run` installs or fetches them first).
package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"spectrum-os.org/netcfg/host/cli"
	"spectrum-os.org/netcfg/vmtest/kernel"
	"spectrum-os.org/netcfg/vmtest/lan"
	"spectrum-os.org/netcfg/vmtest/vm"
)

// config is the demo's flags.
type config struct {
	spectrumd string // the binary
	dir       string // everything written; "" is .cache/run of the repository
	netns     string // spectrumd's network namespace
	lanNS     string // the LAN's
	run       string // spectrumd's run directory; "" chooses (see chooseRun)
}

func main() {
	var c config
	flag.StringVar(&c.spectrumd, "spectrumd", "bin/spectrumd", "the spectrumd `binary`")
	flag.StringVar(&c.dir, "dir", "", "`directory` for the VM directories, spectrumd's state and the LAN (default .cache/run of the repository)")
	// Fixed names, so a run that was killed leaves namespaces behind
	// that the next run removes.
	flag.StringVar(&c.netns, "netns", "spectrum-run", "spectrumd's network `namespace`")
	flag.StringVar(&c.lanNS, "lan-netns", "spectrum-lan", "the LAN's network `namespace`")
	flag.StringVar(&c.run, "run", "", "spectrumd's run `directory` (default "+cli.DefaultRun+", or DIR/run when another spectrumd serves that)")
	flag.Parse()
	if err := run(c, time.Now()); err != nil {
		fmt.Fprintln(os.Stderr, "make run:", err)
		os.Exit(1)
	}
}

// The demo's names.
const (
	bridge  = "lan0" // the LAN's bridge in spectrumd's namespace: netvm's uplinks/net entry
	pageURL = "http://" + lan.WebName + "/"
)

// page6URL is the front page at the web server's IPv6 address.
var page6URL = "http://[" + lan.First.Web6.String() + "]/"

// pageShown and pageFailed are the test init's markers on appvm-lynx's
// console (vmtest/cmd/testinit) of its lynx:URL step.
func pageShown(url string) string  { return "SPECTRUM-TEST: lynx " + url + " ok" }
func pageFailed(url string) string { return "SPECTRUM-TEST: fail lynx " + url }

// shown is what appvm-lynx's lynx step of a page came to.
type shown struct {
	url string
	ok  bool
}

func run(c config, start time.Time) error {
	if os.Geteuid() != 0 {
		return errors.New("needs root: namespaces, bridges and taps")
	}
	bin, err := filepath.Abs(c.spectrumd)
	if err != nil {
		return err
	}
	if c.dir == "" {
		root, err := kernel.RepoRoot()
		if err != nil {
			return err
		}
		c.dir = filepath.Join(root, ".cache", "run")
	}
	k, err := kernel.Find()
	if err != nil {
		return fmt.Errorf("%w (make kernel fetches it)", err)
	}
	say("building the guest initramfs: the test init, spectrum-netcfg, spectrum-router, busybox, Debian's lynx with its libraries, %s's modules", filepath.Base(k.Vmlinux))
	t0 := time.Now()
	a, err := vm.Build(k)
	if err != nil {
		return err
	}
	say("initramfs ready in %.1fs: %s (appvm-lynx), %s (netvm)", time.Since(t0).Seconds(), relToRepo(a.Lynx), relToRepo(a.Initramfs))

	data, state := filepath.Join(c.dir, "svc", "data"), filepath.Join(c.dir, "state")
	rundir, shared := chooseRun(bin, c)
	if _, err := os.Stat(rundir); shared && errors.Is(err, os.ErrNotExist) {
		// Made by spectrumd for this run: its empty directories go
		// with it.
		defer func() {
			os.Remove(filepath.Join(rundir, "vms"))
			os.Remove(rundir)
		}()
	}
	if err := os.RemoveAll(data); err != nil {
		return err
	}
	// A run killed without its cleanup left its namespace (its bridge,
	// uplink taps) behind: start from nothing. (The LAN removes its own.)
	exec.Command("ip", "netns", "del", c.netns).Run()
	if !shared {
		os.RemoveAll(rundir)
	}
	netvm := vm.Spec{Name: "netvm", Uplinks: []string{bridge}, Cmdline: "quiet spectrum.watch spectrum.route", Test: "dhcp,serve"}
	app := vm.Spec{Name: "appvm-lynx", Providers: []string{"netvm"}, Lynx: true, Cmdline: "quiet", Test: "lynx:" + pageURL + ",lynx:" + page6URL + ",serve"}
	for _, s := range []vm.Spec{netvm, app} {
		if _, err := vm.WriteDir(data, s, a); err != nil {
			return err
		}
	}

	if out, err := exec.Command("ip", "netns", "add", c.netns).CombinedOutput(); err != nil {
		return fmt.Errorf("ip netns add %s: %v: %s", c.netns, err, out)
	}
	defer func() {
		if out, err := exec.Command("ip", "netns", "del", c.netns).CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "make run: ip netns del %s: %v: %s\n", c.netns, err, out)
		} else {
			say("network namespace %s deleted", c.netns)
		}
	}()
	exec.Command("ip", "-n", c.netns, "link", "set", "lo", "up").Run()
	lanDir := filepath.Join(c.dir, "lan")
	if err := os.MkdirAll(lanDir, 0o755); err != nil {
		return err
	}
	lanLog, err := os.Create(filepath.Join(lanDir, "lan.log"))
	if err != nil {
		return err
	}
	defer lanLog.Close()
	l, err := lan.Start(lan.Config{HostNS: c.netns, Bridge: bridge, NS: c.lanNS, Dir: lanDir, Log: lanLog, Mode: lan.DualStack})
	if err != nil {
		return err
	}
	defer func() {
		if err := l.Close(); err != nil {
			fmt.Fprintf(os.Stderr, "make run: LAN: %v\n", err)
		} else {
			say("LAN stopped, namespace %s deleted", c.lanNS)
		}
	}()
	say("LAN up in namespace %s, on bridge %s of %s: DHCP server %v, router advertisements from %v, DNS server %v and %v, %s at %v and %v (%v and %v, no route to the VMs); its log: %s",
		c.lanNS, bridge, c.netns, lan.Router, lan.Router6, lan.First.DNS, lan.First.DNS6, lan.WebName, lan.First.Web, lan.First.Web6,
		lan.Prefix, lan.Prefix6, lanLog.Name())

	args := []string{"netns", "exec", c.netns, bin, "serve", "-data", data, "-state", state, "-run", rundir, "-stop-timeout", "10s"}
	say("ip %s", strings.Join(args, " "))
	serve := exec.Command("ip", args...)
	out, err := serve.StdoutPipe()
	if err != nil {
		return err
	}
	serve.Stderr = serve.Stdout
	// Its own process group: Ctrl-C reaches this program only, which
	// turns it into one SIGTERM for spectrumd; the terminal's SIGINT
	// must not hit the QEMUs before spectrumd powers them down.
	serve.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	if err := serve.Start(); err != nil {
		return err
	}
	pages := []string{pageURL, page6URL}
	page := make(chan shown, len(pages))
	logDone := make(chan struct{})
	go func() { copyLog(os.Stdout, out, pages, page); close(logDone) }()
	exited := make(chan error, 1)
	go func() { <-logDone; exited <- serve.Wait() }()

	started := make(chan error, 1)
	go func() { started <- startApp(bin, rundir) }()

	console := "spectrumd console appvm-lynx"
	if rundir != cli.DefaultRun {
		console = "spectrumd console -run " + rundir + " appvm-lynx"
	}
	interrupted := false
	for {
		select {
		case err := <-started:
			if err != nil {
				fmt.Fprintln(os.Stderr, "make run:", err)
				serve.Process.Signal(syscall.SIGTERM)
			} else {
				say("appvm-lynx started (netvm first); it shows %s and %s with lynx -dump once netvm has its uplink and routes", pageURL, page6URL)
			}
		case p := <-page:
			how := "by name"
			if p.url == page6URL {
				how = "by IPv6 address"
			}
			switch {
			case !p.ok:
				say("appvm-lynx could not show %s: see netvm's and appvm-lynx's lines above (%s, spectrumd logs NAME)", p.url, lanLog.Name())
			default:
				say("appvm-lynx showed %s (%s, through netvm) %.1fs after this program started", p.url, how, time.Since(start).Seconds())
			}
			if p.url != page6URL {
				continue
			}
			say("In a second terminal, as root: %s %s", filepath.Join(filepath.Dir(c.spectrumd), "spectrumd"), strings.TrimPrefix(console, "spectrumd "))
			say("  then Enter for its shell; `lynx %s` browses the LAN site (q quits lynx); Ctrl-] detaches", pageURL)
			say("Ctrl-C here stops everything")
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

// chooseRun picks spectrumd's run directory: the one given, else the
// default (so that `spectrumd console appvm-lynx` needs no flag) unless a
// spectrumd already serves it, else one in dir. shared reports the
// default, which is not removed (spectrumd replaces its stale socket).
func chooseRun(bin string, c config) (dir string, shared bool) {
	if c.run != "" {
		return c.run, false
	}
	if exec.Command(bin, "list", "-run", cli.DefaultRun).Run() != nil {
		return cli.DefaultRun, true
	}
	say("a spectrumd already serves %s: this one uses %s", cli.DefaultRun, filepath.Join(c.dir, "run"))
	return filepath.Join(c.dir, "run"), false
}

// startApp waits for spectrumd's control socket and starts appvm-lynx.
func startApp(bin, rundir string) error {
	cli := func(args ...string) error {
		out, err := exec.Command(bin, append([]string{args[0], "-run", rundir}, args[1:]...)...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("spectrumd %s: %v: %s", strings.Join(args, " "), err, out)
		}
		return nil
	}
	var err error
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if err = cli("status", "appvm-lynx"); err == nil {
			return cli("start", "appvm-lynx")
		}
	}
	return err
}

// copyLog copies spectrumd's log to w line by line and reports on page
// whether appvm-lynx showed each of pages (once each).
func copyLog(w io.Writer, r io.Reader, pages []string, page chan<- shown) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	told := map[string]bool{}
	for sc.Scan() {
		line := sc.Text()
		fmt.Fprintln(w, line)
		if !strings.Contains(line, "vm=appvm-lynx") {
			continue
		}
		for _, u := range pages {
			if told[u] {
				continue
			}
			switch {
			case strings.Contains(line, pageShown(u)):
				told[u] = true
				page <- shown{u, true}
			case strings.Contains(line, pageFailed(u)):
				told[u] = true
				page <- shown{u, false}
			}
		}
	}
}

// relToRepo shortens a path in the repository for the terminal.
func relToRepo(p string) string {
	root, err := kernel.RepoRoot()
	if err != nil {
		return p
	}
	if r, err := filepath.Rel(root, p); err == nil && !strings.HasPrefix(r, "..") {
		return r
	}
	return p
}

func say(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "==> "+format+"\n", args...)
}
