// Binary testinit is the /init of the VM tests' guests. It mounts the
// pseudo file systems, loads the kernel modules the initramfs carries (in the
// order listed in /lib/modules/order), runs /bin/spectrum-netcfg as an init
// hook, checks its disks, reports the network state the agent left, and runs
// the test steps the kernel command line asks for. It reports only through
// sentinel lines on its standard output, the kernel console (the serial
// port), which it never reads.
//
// Kernel command line:
//
//	spectrum.test=STEP[,STEP...]  steps, in order (default: poweroff)
//	    (addresses are written in by the test, which reads the link ids
//	    spectrumd gave from `spectrumd status -json` before starting the VM;
//	    spectrumd reads the cmdline file at every start)
//	    ping:ADDR   ICMP echo and UDP echo (port 7) to ADDR, retried until
//	                both answer or spectrum.timeout passes
//	    pingwatch:ADDR  in the background, for as long as the VM runs,
//	                ICMP and UDP echo to ADDR every second, reporting
//	                "reach ADDR up n=N" each time it starts answering and
//	                "reach ADDR down n=N" when it stops (3 rounds missed):
//	                a path coming back after a peer's restart
//	    noping:ADDR ADDR must answer neither ICMP nor UDP echo for
//	                spectrum.notimeout seconds (default 5)
//	    spoof:SRC>DST  send UDP datagrams to DST's echo port with the forged
//	                source SRC (raw socket), then a genuine UDP echo to DST
//	                as a barrier
//	    noreach:ADDR  as noping, after adding a host route to ADDR via the
//	                default route's gateway (of ADDR's family): ADDR stays
//	                unreachable even when the provider is asked to forward
//	                to it
//	    (ping, pingwatch, noping, spoof and noreach take IPv4 or IPv6
//	    addresses, ICMPv6 echo for IPv6)
//	    sysctl:KEY=VALUE  write a sysctl, e.g.
//	                net.ipv4.ip_forward=1 for a provider that routes
//	    dhcp        run the network manager (vmtest/dhcpc) on every NIC
//	                without the OUI (uplinks), for as long as the VM runs,
//	                in both families, and wait for each one's first
//	                configuration of either: IPv4 by DHCP (address, default
//	                route, renewals and new leases followed: "dhcp IFACE
//	                lease ..."), IPv6 by router advertisements (SLAAC, with
//	                accept_ra=2 so that forwarding does not stop them) and
//	                DHCPv6 as they ask ("dhcp6 IFACE lease addrs=...
//	                router=... dns=..."); /etc/resolv.conf names the
//	                resolvers of both, IPv4's first ("dhcp ok n=N")
//	    dhcp:FAMILIES  dhcp, waiting for each uplink's configuration of
//	                each family in FAMILIES (4, 6 or 46) instead of either
//	    resolve:NAME  look NAME up (A and AAAA) through /etc/resolv.conf
//	                until it answers ("resolve NAME ok addrs=...")
//	    resolve:NAME@SERVER  the same, asking SERVER alone (an IPv4 or
//	                IPv6 address)
//	    resolve:NAME[@SERVER]/N  the same, until it answers with N
//	                addresses or more
//	    resolvconf  report /etc/resolv.conf's nameservers
//	                ("resolvconf nameservers=A,B")
//	    fetch:URL   HTTP GET until it answers 200 ("fetch URL ok status=200
//	                addr=IP bytes=N sha256=HEX title=...")
//	    fetchwatch:URL  in the background, GET every second for as long as
//	                the VM runs, reporting "fetchwatch URL up n=N addr=IP
//	                ..." when it answers again or from another address and
//	                "fetchwatch URL down n=N" after 3 misses
//	    lynx:URL    `lynx -dump URL` (archives with lynx) until it works: the
//	                page as lynx renders it on the console between "lynx
//	                -dump URL" and "lynx URL ok lines=N"
//	    tput:ADDR[/SECONDS]  TCP throughput to a receiver (vmtest/tput) at
//	                ADDR (port 5001 unless given), default 5 s
//	    tputback:ADDR[/SECONDS]  tput the other way round: wait for a
//	                receiver to connect to port 5002 over ADDR's family
//	                (ADDR names it) and send to it
//	    tputdial:HOST  connect to HOST's port 5002 and receive, again and
//	                again (in the background)
//	    pmtu:ADDR/SIZE  UDP datagrams of SIZE bytes to ADDR's echo port,
//	                fragmentation forbidden, until the path MTU the kernel
//	                learnt (ICMP fragmentation needed, ICMPv6 packet too
//	                big) is below SIZE ("pmtu ADDR/SIZE ok mtu=N")
//	    rtt:ADDR[/N]  N UDP echo round trips to ADDR (default 20): min,
//	                median and max
//	    rtticmp:ADDR[/N]  the same with ICMP echo
//	    listen:PORT  bring lo up and serve TCP on [::]:PORT (both
//	                families) in the background: "listen PORT ok" once it
//	                answers itself on 127.0.0.1 and ::1, "accept PORT from
//	                ADDR" for each connection (a provider's service a client
//	                must not reach)
//	    noconnect:ADDR/PORT  a TCP connection to ADDR (an IPv6 link-local
//	                one without a zone: on the default route's NIC) must
//	                fail: "noconnect ADDR/PORT ok err=ERRNO|timeout ms=N"
//	    ra:PREFIX   send three IPv6 Router Advertisements (preference
//	                high, PREFIX a /64 with L and A) to ff02::1 on the
//	                default route's NIC, as a hostile client ("ra sent ...")
//	    ip6watch    in the background, report the IPv6 addresses and
//	                main-table routes ("ip6 addr ...", "ip6 route ...",
//	                "ip6 done n=N") now and whenever they change
//	    serve       stay up (the UDP echo server keeps answering) until killed
//	    poweroff    power the VM off (also done after the last step)
//	spectrum.timeout=SECONDS      per ping, resolve, fetch, lynx or dhcp
//	                              step (default 120)
//	spectrum.disks=N              disks expected as /dev/vd* (default 1)
//	spectrum.agent=ARG[,ARG...]   arguments for spectrum-netcfg (default none)
//	spectrum.watch                after the agent's run as an init hook, keep
//	                              `spectrum-netcfg -watch` running for
//	                              hot-plugged NICs
//	spectrum.route                run spectrum-router instead: the provider's
//	                              router (forwarding, NAT, isolation, DNS)
//	spectrum.hostname=NAME        the guest's host name (the shell's prompt)
//	spectrum.term=TERM            TERM of the console shell (default
//	                              xterm-256color)
//	spectrum.baseline             before the agent's run and again after
//	                              it ("agent baseline warm ..."), time a
//	                              run that exits at once (an unknown flag):
//	                              the cost of starting the binary, to
//	                              subtract; and run the agent a second
//	                              time ("agent again ..."), which must
//	                              change nothing
//
// The ACPI power button (spectrumd's stop) powers the VM off at any time,
// reported as "power button pressed", when the kernel has the button and
// evdev drivers.
//
// After the checks the init reports the network state (links, IPv4
// addresses and routes) as a dump ending in "state done n=1", and reports it
// again (n=2, ...) whenever it changes.
//
// The UDP echo server (port 7, both families) runs from the state report
// on, and reports the first datagram from each source as "echo from ADDR"
// and every barrier datagram as "barrier TOKEN from ADDR"; a TCP
// throughput receiver (vmtest/tput, port 5001) runs beside it.
//
// A shell (busybox sh) runs on the virtio-console (hvc0) from the start,
// for `spectrumd console NAME`; /etc/resolv.conf names the provider's
// virtual resolvers (vmtest/vm.GuestFiles).
//
// Every report is one line "SPECTRUM-TEST: <event> [fields] t=<uptime>",
// where t is the kernel's uptime in seconds; see package vmtest/vm.
package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Prefix starts every line the init reports.
const Prefix = "SPECTRUM-TEST: "

const (
	agentPath  = "/bin/spectrum-netcfg"
	routerPath = "/bin/spectrum-router"
)

func main() {
	mounts()
	// The kernel writes its messages to the same console, and one can land
	// in the middle of a report line (a hot-plugged NIC's PCI lines did, in
	// rootinit), so that the test never sees the line. From here on only
	// errors and worse reach the console (console_loglevel 4); the rest
	// stays in dmesg.
	if err := os.WriteFile("/proc/sys/kernel/printk", []byte("4"), 0); err != nil {
		report("fail quiet the kernel console: %v", err)
	}
	report("init pid=%d", os.Getpid())
	cmdline, err := os.ReadFile("/proc/cmdline")
	if err != nil {
		report("fail read /proc/cmdline: %v", err)
	}
	p := parseCmdline(string(cmdline))

	if p.hostname != "" {
		unix.Sethostname([]byte(p.hostname))
	}
	loadModules()
	go powerButton()
	go consoleShell(p.term)
	if p.baseline {
		agentBaseline("")
	}
	runAgent("", p.agentArgs)
	if p.baseline {
		// Timed again once its code has been run (and, under TCG,
		// translated) once: the agent's steady cost, and a second apply
		// that must change nothing.
		runAgent("again ", p.agentArgs)
		agentBaseline("warm ")
	}
	if p.watch {
		watchAgent(p.route)
	}
	checkDisks(p.disks)
	var st stateReporter
	st.check()
	go st.follow(time.Second)
	go serveUDPEcho()
	go serveTput()

	for _, step := range p.steps {
		switch {
		case strings.HasPrefix(step, "ping:"):
			ping(strings.TrimPrefix(step, "ping:"), p.timeout)
		case strings.HasPrefix(step, "pingwatch:"):
			go pingWatch(strings.TrimPrefix(step, "pingwatch:"))
		case strings.HasPrefix(step, "noping:"):
			noping(strings.TrimPrefix(step, "noping:"), p.notimeout)
		case strings.HasPrefix(step, "noreach:"):
			noreach(strings.TrimPrefix(step, "noreach:"), p.notimeout)
		case step == "dhcp" || strings.HasPrefix(step, "dhcp:"):
			dhcp(p.timeout, strings.TrimPrefix(strings.TrimPrefix(step, "dhcp"), ":"))
		case step == "resolvconf":
			resolvConfStep()
		case strings.HasPrefix(step, "resolve:"):
			resolve(strings.TrimPrefix(step, "resolve:"), p.timeout)
		case strings.HasPrefix(step, "fetch:") && validURL(strings.TrimPrefix(step, "fetch:")):
			fetch(strings.TrimPrefix(step, "fetch:"), p.timeout)
		case strings.HasPrefix(step, "fetchwatch:") && validURL(strings.TrimPrefix(step, "fetchwatch:")):
			go fetchWatch(strings.TrimPrefix(step, "fetchwatch:"))
		case strings.HasPrefix(step, "lynx:") && validURL(strings.TrimPrefix(step, "lynx:")):
			lynxDump(strings.TrimPrefix(step, "lynx:"), p.timeout)
		case strings.HasPrefix(step, "tput:"):
			throughput(strings.TrimPrefix(step, "tput:"))
		case strings.HasPrefix(step, "tputback:"):
			throughputBack(strings.TrimPrefix(step, "tputback:"))
		case strings.HasPrefix(step, "tputdial:"):
			go throughputDial(strings.TrimPrefix(step, "tputdial:"))
		case strings.HasPrefix(step, "pmtu:"):
			pathMTU(strings.TrimPrefix(step, "pmtu:"), p.timeout)
		case strings.HasPrefix(step, "rtt:"):
			rtt(strings.TrimPrefix(step, "rtt:"), udpEcho)
		case strings.HasPrefix(step, "rtticmp:"):
			rtt(strings.TrimPrefix(step, "rtticmp:"), icmpEcho)
		case strings.HasPrefix(step, "spoof:"):
			src, dst, _ := strings.Cut(strings.TrimPrefix(step, "spoof:"), ">")
			spoof(src, dst, p.timeout)
		case strings.HasPrefix(step, "sysctl:"):
			sysctl(strings.TrimPrefix(step, "sysctl:"))
		case strings.HasPrefix(step, "listen:"):
			listenTCP(strings.TrimPrefix(step, "listen:"))
		case strings.HasPrefix(step, "noconnect:"):
			noconnect(strings.TrimPrefix(step, "noconnect:"))
		case strings.HasPrefix(step, "ra:"):
			sendRA(strings.TrimPrefix(step, "ra:"))
		case step == "ip6watch":
			go ip6Watch()
		case step == "serve":
			report("serving")
			select {}
		case step == "poweroff":
			poweroff()
		default:
			report("fail unknown step %q", step)
		}
	}
	poweroff()
}

type params struct {
	steps     []string
	timeout   time.Duration
	notimeout time.Duration
	disks     int
	agentArgs []string
	watch     bool
	route     bool
	baseline  bool
	hostname  string
	term      string
}

func parseCmdline(s string) params {
	p := params{timeout: 120 * time.Second, notimeout: 5 * time.Second, disks: 1, term: "xterm-256color"}
	for _, f := range strings.Fields(s) {
		k, v, _ := strings.Cut(f, "=")
		switch k {
		case "spectrum.test":
			p.steps = strings.Split(v, ",")
		case "spectrum.timeout":
			if n, err := strconv.Atoi(v); err == nil {
				p.timeout = time.Duration(n) * time.Second
			}
		case "spectrum.notimeout":
			if n, err := strconv.Atoi(v); err == nil {
				p.notimeout = time.Duration(n) * time.Second
			}
		case "spectrum.disks":
			if n, err := strconv.Atoi(v); err == nil {
				p.disks = n
			}
		case "spectrum.agent":
			p.agentArgs = strings.Split(v, ",")
		case "spectrum.watch":
			p.watch = v == "" || v == "1"
		case "spectrum.baseline":
			p.baseline = v == "" || v == "1"
		case "spectrum.route":
			p.route = v == "" || v == "1"
		case "spectrum.hostname":
			p.hostname = v
		case "spectrum.term":
			p.term = v
		}
	}
	return p
}

// report writes one sentinel line in a single write, so kernel messages on
// the same console cannot split it.
func report(format string, args ...any) {
	line := Prefix + fmt.Sprintf(format, args...) + " t=" + uptime() + "\n"
	os.Stdout.WriteString(line)
}

// uptime is the kernel's CLOCK_BOOTTIME in seconds, the clock of the
// kernel's own log timestamps.
func uptime() string {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts); err != nil {
		return "?"
	}
	return fmt.Sprintf("%d.%06d", ts.Sec, ts.Nsec/1000)
}

func mounts() {
	for _, m := range []struct{ src, dst, fstype string }{
		{"proc", "/proc", "proc"},
		{"sysfs", "/sys", "sysfs"},
		{"devtmpfs", "/dev", "devtmpfs"},
	} {
		os.MkdirAll(m.dst, 0o755)
		if err := unix.Mount(m.src, m.dst, m.fstype, 0, ""); err != nil && !errors.Is(err, unix.EBUSY) {
			report("fail mount %s: %v", m.dst, err)
		}
	}
	// Without /dev/console in the archive the kernel starts init with no
	// output; devtmpfs has it now.
	var st unix.Stat_t
	if unix.Fstat(1, &st) != nil {
		if fd, err := unix.Open("/dev/console", unix.O_RDWR, 0); err == nil {
			for i := 0; i < 3; i++ {
				unix.Dup2(fd, i)
			}
		}
	}
}

func loadModules() {
	order, err := os.ReadFile("/lib/modules/order")
	if errors.Is(err, os.ErrNotExist) {
		report("modules loaded=0")
		return
	}
	n := 0
	for _, name := range strings.Fields(string(order)) {
		if err := loadModule("/lib/modules/" + name + ".ko"); err != nil {
			report("fail module %s: %v", name, err)
			continue
		}
		n++
	}
	report("modules loaded=%d", n)
}

func loadModule(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := unix.FinitModule(int(f.Fd()), "", 0); err != nil && !errors.Is(err, unix.EEXIST) {
		return err
	}
	return nil
}

func runAgent(which string, args []string) {
	if _, err := os.Stat(agentPath); err != nil {
		report("agent missing")
		return
	}
	report("agent %sstart args=%q", which, strings.Join(args, " "))
	start := time.Now()
	cmd := exec.Command(agentPath, args...)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	err := cmd.Run()
	took := time.Since(start)
	code := 0
	if err != nil {
		var ee *exec.ExitError
		if !errors.As(err, &ee) {
			report("agent %sfail: %v", which, err)
			return
		}
		code = ee.ExitCode()
	}
	report("agent %sexit=%d took=%.1fms cpu=%.1fms", which, code, ms(took), ms(cmd.ProcessState.UserTime()+cmd.ProcessState.SystemTime()))
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// agentBaseline runs the agent with an unknown flag, which makes it exit
// at once: what starting the static binary costs before it does any work,
// to subtract from the agent's time. It runs before the agent and again
// after it ("agent baseline warm"): under TCG the first run of a binary
// also pays for translating its code, which later runs reuse.
func agentBaseline(which string) {
	start := time.Now()
	cmd := exec.Command(agentPath, "-spectrum-test-baseline")
	if err := cmd.Run(); err != nil && cmd.ProcessState == nil {
		report("fail agent baseline: %v", err)
		return
	}
	report("agent baseline %sexit=%d took=%.1fms cpu=%.1fms", which, cmd.ProcessState.ExitCode(),
		ms(time.Since(start)), ms(cmd.ProcessState.UserTime()+cmd.ProcessState.SystemTime()))
}

// sysctl writes key=value under /proc/sys and reports "sysctl KEY=VALUE".
func sysctl(kv string) {
	k, v, ok := strings.Cut(kv, "=")
	if !ok {
		report("fail sysctl %q: want KEY=VALUE", kv)
		return
	}
	if err := os.WriteFile("/proc/sys/"+strings.ReplaceAll(k, ".", "/"), []byte(v), 0o644); err != nil {
		report("fail sysctl %s: %v", kv, err)
		return
	}
	report("sysctl %s", kv)
}

// watchAgent keeps `spectrum-netcfg -watch` (with route: spectrum-router)
// running in the background.
func watchAgent(route bool) {
	path, args := agentPath, []string{"-watch"}
	if route {
		path, args = routerPath, nil
	}
	cmd := exec.Command(path, args...)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	if err := cmd.Start(); err != nil {
		report("fail agent watch: %v", err)
		return
	}
	report("agent watch pid=%d exe=%s args=%q", cmd.Process.Pid, path, strings.Join(args, " "))
	go func() {
		err := cmd.Wait()
		report("fail agent watch exited: %v", err)
	}()
}

// checkDisks waits briefly for the expected virtio disks and reports each
// one's marker (the first line of its image).
func checkDisks(want int) {
	deadline := time.Now().Add(10 * time.Second)
	var disks []string
	for {
		disks = disks[:0]
		for c := 'a'; c <= 'z'; c++ {
			d := "/dev/vd" + string(c)
			if _, err := os.Stat(d); err == nil {
				disks = append(disks, d)
			}
		}
		if len(disks) >= want || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	for _, d := range disks {
		report("disk %s marker=%q", strings.TrimPrefix(d, "/dev/"), marker(d))
	}
	if len(disks) < want {
		report("fail disks want=%d got=%d", want, len(disks))
		return
	}
	report("disks ok n=%d", len(disks))
}

func marker(dev string) string {
	f, err := os.Open(dev)
	if err != nil {
		return "error: " + err.Error()
	}
	defer f.Close()
	b := make([]byte, 512)
	n, _ := f.Read(b)
	line, _, _ := bytes.Cut(b[:n], []byte("\n"))
	return string(bytes.TrimRight(line, "\x00"))
}

func poweroff() {
	report("poweroff")
	unix.Sync()
	unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
	select {}
}
