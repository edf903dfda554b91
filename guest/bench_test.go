package guest_test

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"spectrum-os.org/netcfg/internal/nstest"
)

// benchSizes are the numbers of client NICs the benchmarks configure.
var benchSizes = []int{1, 16, 256}

// baselineScript is the busybox script the agent is compared with.
var baselineScript = filepath.Join("..", "scripts", "bench-guest-baseline.sh")

// BenchmarkAgent times the agent as a whole process, exec to exit,
// configuring n client NICs in a namespace where they are unconfigured.
// Besides ns/op (the mean) it reports the median and the peak RSS of one
// more run.
func BenchmarkAgent(b *testing.B) {
	console := filepath.Join(b.TempDir(), "console")
	if err := os.WriteFile(console, nil, 0o600); err != nil {
		b.Fatal(err)
	}
	for _, n := range benchSizes {
		b.Run(fmt.Sprintf("links=%d", n), func(b *testing.B) {
			benchConfigure(b, n, agentBin, "-console", console)
		})
	}
}

// BenchmarkKernelFloor is not a contender: it times one iproute2 process
// making the same 6n changes from a prepared batch without reading any
// state, to show how much of the agent's time is the kernel's own work:
// per NIC the link up, the IPv4 address, default route and host route to
// the gateway, and the IPv6 address and default route.
func BenchmarkKernelFloor(b *testing.B) { benchFloor(b, true) }

// BenchmarkKernelFloorIPv4 is BenchmarkKernelFloor without the IPv6
// changes (4n), as the agent was before IPv6: the difference between the
// two is the kernel's own IPv6 work.
func BenchmarkKernelFloorIPv4(b *testing.B) { benchFloor(b, false) }

func benchFloor(b *testing.B, ipv6 bool) {
	for _, n := range benchSizes {
		b.Run(fmt.Sprintf("links=%d", n), func(b *testing.B) {
			var batch strings.Builder
			for i := 1; i <= n; i++ {
				// The ifindex of t<i> is i+1: lo is 1.
				fmt.Fprintf(&batch, "link set t%d up\naddress add 100.64.%d.%d/16 dev t%d\n"+
					"route add default via 169.254.%d.%d dev t%d metric %d onlink\n"+
					"route add 169.254.%d.%d/32 dev t%d scope link\n",
					i, i>>8, i&0xff, i, i>>8, i&0xff, i, i+1, i>>8, i&0xff, i)
				if ipv6 {
					fmt.Fprintf(&batch, "address add fd9f:2b8:5010:%x::2/64 dev t%d nodad\n"+
						"route add default via fe80::1 dev t%d metric %d\n", i, i, i, i+1)
				}
			}
			f := filepath.Join(b.TempDir(), "batch")
			if err := os.WriteFile(f, []byte(batch.String()), 0o600); err != nil {
				b.Fatal(err)
			}
			ip, err := exec.LookPath("ip")
			if err != nil {
				b.Fatal(err)
			}
			benchConfigure(b, n, ip, "-batch", f)
		})
	}
}

// BenchmarkBaselineScript times scripts/bench-guest-baseline.sh the same
// way: busybox sh, busybox awk per NIC, busybox ip three times per NIC.
func BenchmarkBaselineScript(b *testing.B) {
	if _, err := os.Stat("/bin/busybox"); err != nil {
		b.Fatalf("the baseline needs busybox-static (make deps installs it): %v", err)
	}
	for _, n := range benchSizes {
		b.Run(fmt.Sprintf("links=%d", n), func(b *testing.B) {
			benchConfigure(b, n, "/bin/busybox", "sh", baselineScript)
		})
	}
}

func benchConfigure(b *testing.B, n int, path string, args ...string) {
	ns := nstest.New(b)
	var add, reset strings.Builder
	for i := 1; i <= n; i++ {
		fmt.Fprintf(&add, "tuntap add mode tap name t%d\nlink set t%d address 0a:b3:ec:00:%02x:%02x\n", i, i, i>>8, i&0xff)
		// Down drops the routes through the link; flush the addresses.
		fmt.Fprintf(&reset, "link set t%d down\naddress flush dev t%d\n", i, i)
	}
	ipBatch(b, ns, add.String())
	nsFD, err := unix.Open(ns.Path(), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		b.Fatal(err)
	}
	defer unix.Close(nsFD)

	var times []time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		ipBatch(b, ns, reset.String())
		b.StartTimer()
		d := runIn(b, nsFD, path, args...)
		b.StopTimer()
		times = append(times, d)
		if i == 0 {
			checkConfigured(b, ns, n)
		}
		b.StartTimer()
	}
	b.StopTimer()
	slices.Sort(times)
	b.ReportMetric(float64(times[len(times)/2].Microseconds())/1000, "median-ms")
	ipBatch(b, ns, reset.String())
	b.ReportMetric(float64(peakRSS(b, nsFD, path, args...))/1024, "peak-RSS-MiB")
}

// runIn runs path inside the namespace nsFD and returns how long it took
// from exec to exit. The child inherits the network namespace of the thread
// that starts it, so this thread enters the namespace for the start and
// leaves it after; no `ip netns exec` (which remounts /sys) is timed.
func runIn(b *testing.B, nsFD int, path string, args ...string) time.Duration {
	var d time.Duration
	inNS(b, nsFD, func() {
		cmd := exec.Command(path, args...)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		start := time.Now()
		err := cmd.Start()
		if err == nil {
			err = cmd.Wait()
		}
		d = time.Since(start)
		if err != nil {
			b.Errorf("%s %v: %v\n%s", path, args, err, out.Bytes())
		}
	})
	if b.Failed() {
		b.FailNow()
	}
	return d
}

// inNS calls fn on a thread that is in the network namespace nsFD.
func inNS(b *testing.B, nsFD int, fn func()) {
	runtime.LockOSThread()
	self, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		runtime.UnlockOSThread()
		b.Fatal(err)
	}
	defer unix.Close(self)
	if err := unix.Setns(nsFD, unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		b.Fatal(err)
	}
	fn()
	if err := unix.Setns(self, unix.CLONE_NEWNET); err != nil {
		// This thread stays locked and dies with the goroutine.
		b.Fatalf("leave the test namespace: %v", err)
	}
	runtime.UnlockOSThread()
}

// peakRSS runs path once in the namespace and returns the peak resident set
// size of the program itself, in KiB. It does not use wait4's ru_maxrss: a
// child vforked by this (large) test binary inherits the parent's
// high-water mark at exec, which would hide the child's own. Instead the
// child is stopped by ptrace at PTRACE_EVENT_EXIT, when its memory is still
// there, and its VmHWM is read from /proc.
func peakRSS(b *testing.B, nsFD int, path string, args ...string) int64 {
	var hwm int64 = -1
	inNS(b, nsFD, func() {
		cmd := exec.Command(path, args...)
		cmd.SysProcAttr = &syscall.SysProcAttr{Ptrace: true}
		if err := cmd.Start(); err != nil {
			b.Errorf("start %s: %v", path, err)
			return
		}
		pid := cmd.Process.Pid
		var ws syscall.WaitStatus
		if _, err := syscall.Wait4(pid, &ws, 0, nil); err != nil || !ws.Stopped() {
			b.Errorf("%s did not stop at exec: %v %v", path, ws, err)
			return
		}
		if err := syscall.PtraceSetOptions(pid, syscall.PTRACE_O_TRACEEXIT); err != nil {
			b.Errorf("ptrace: %v", err)
		}
		sig := 0
		for {
			if err := syscall.PtraceCont(pid, sig); err != nil {
				b.Errorf("ptrace cont: %v", err)
				return
			}
			if _, err := syscall.Wait4(pid, &ws, 0, nil); err != nil {
				b.Errorf("wait4: %v", err)
				return
			}
			sig = 0
			switch {
			case ws.Exited() || ws.Signaled():
				if ws.ExitStatus() != 0 {
					b.Errorf("%s %v: %v", path, args, ws)
				}
				return
			case ws.Stopped() && ws.TrapCause() == syscall.PTRACE_EVENT_EXIT:
				hwm = vmHWM(b, pid)
			case ws.Stopped():
				sig = int(ws.StopSignal()) // deliver what stopped it (SIGURG, ...)
			}
		}
	})
	if hwm < 0 {
		b.Fatalf("no peak RSS for %s", path)
	}
	return hwm
}

func vmHWM(b *testing.B, pid int) int64 {
	st, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(string(st), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(v, "kB")), 10, 64)
			if err != nil {
				b.Fatal(err)
			}
			return kb
		}
	}
	b.Fatalf("no VmHWM in /proc/%d/status", pid)
	return 0
}

func ipBatch(b *testing.B, ns *nstest.NS, batch string) {
	cmd := exec.Command("ip", "-n", ns.Name, "-batch", "-")
	cmd.Stdin = strings.NewReader(batch)
	if out, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("ip -n %s -batch: %v\n%s", ns.Name, err, out)
	}
}

// checkConfigured makes sure a run did the work being timed: every NIC up
// with its default route.
func checkConfigured(b *testing.B, ns *nstest.NS, n int) {
	out := ns.IP("-4", "route", "show", "default")
	if got := bytes.Count(out, []byte("onlink")); got != n {
		b.Fatalf("%d default routes after the run, want %d:\n%s", got, n, out)
	}
}
