package qemu

import (
	"encoding/json"
	"fmt"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"spectrum-os.org/netcfg/host/confine"
	"spectrum-os.org/netcfg/host/link"
	"spectrum-os.org/netcfg/internal/mac"
	"spectrum-os.org/netcfg/internal/nstest"
	"spectrum-os.org/netcfg/internal/testenv"
)

// TestConfined: a QEMU that Start launches runs under host/confine's
// filter, read back from the kernel: QEMU's status says no_new_privs and
// filter mode, it has two filters more than this test process (ours, then
// QEMU's own -sandbox), and the first of the two, fetched with
// PTRACE_SECCOMP_GET_FILTER, is confine.Program instruction for
// instruction. Under it QEMU boots, takes a real tap at start and another
// by hot-plug (both get carrier).
func TestConfined(t *testing.T) {
	requireQEMU(t)
	ns := nstest.New(t)
	n, err := link.OpenPath(ns.Path(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	const id = mac.LinkID(0x0c01)
	if err := n.Create(id); err != nil {
		t.Fatal(err)
	}
	clientTap, err := n.OpenTap(id, mac.Client)
	if err != nil {
		t.Fatal(err)
	}
	defer clientTap.Close()
	ctx := testContext(t, 60*time.Second)
	c := testConfig(t)
	c.NICs = []NIC{{ID: "client", MAC: id.MAC(mac.Client), Tap: clientTap}}
	p, stderr := start(t, ctx, c)
	seen, serial := serialLines(p, smokeMessage)
	select {
	case <-seen:
	case <-ctx.Done():
		t.Fatalf("no %q on the serial port\nserial:\n%s\nstderr: %s\nreproduce: %s", smokeMessage, serial, stderr, Quote(p.Argv))
	}
	providerTap, err := n.OpenTap(id, mac.Provider)
	if err != nil {
		t.Fatal(err)
	}
	defer providerTap.Close()
	if err := p.HotplugNIC(ctx, NIC{ID: "provider", MAC: id.MAC(mac.Provider), Tap: providerTap}); err != nil {
		t.Fatalf("hot-plug under the filter: %v\nstderr: %s", err, stderr)
	}
	clientTap.Close()
	providerTap.Close()
	if got := carrier(t, ns); !slices.Equal(got, []string{"spc-0c01", "spp-0c01"}) {
		t.Errorf("taps with carrier = %v, want both", got)
	}

	st := procStatus(t, p.Pid())
	own := procStatus(t, unix.Getpid())
	ownFilters, _ := strconv.Atoi(own["Seccomp_filters"])
	if st["NoNewPrivs"] != "1" || st["Seccomp"] != "2" || st["Seccomp_filters"] != strconv.Itoa(ownFilters+2) {
		t.Errorf("QEMU's status: NoNewPrivs %s, Seccomp %s, Seccomp_filters %s; want 1, 2, %d (this process's %d, ours, QEMU's own)",
			st["NoNewPrivs"], st["Seccomp"], st["Seccomp_filters"], ownFilters+2, ownFilters)
	}
	want, err := confine.Program()
	if err != nil {
		t.Fatal(err)
	}
	// From another process: a ptrace stop of QEMU would also be reported
	// to this one's wait for QEMU's exit (Process.Wait).
	out, err := testenv.HelperCommand(ctx, helperFilter, fmt.Sprintf("SPECTRUM_FILTER=%d %d", p.Pid(), ownFilters)).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", helperFilter, err, out)
	}
	var got []unix.SockFilter
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatalf("%s: %v\n%s", helperFilter, err, out)
	}
	if !slices.Equal(want, got) {
		t.Errorf("QEMU's filter %d (the first after this process's) has %d instructions, confine.Program %d, and they differ", ownFilters, len(got), len(want))
	}
}

// helperFilter prints filter N of process PID (SPECTRUM_FILTER="PID N")
// as JSON.
const helperFilter = "qemu-filter"

func filterHelper() int {
	var pid, index int
	fmt.Sscanf(os.Getenv("SPECTRUM_FILTER"), "%d %d", &pid, &index)
	f, err := seccompFilter(pid, index)
	if err != nil {
		fmt.Println(err)
		return 1
	}
	json.NewEncoder(os.Stdout).Encode(f)
	return 0
}

// seccompFilter returns filter index (0: the oldest) of process pid,
// which it attaches to with ptrace for the time it takes (root only).
func seccompFilter(pid, index int) ([]unix.SockFilter, error) {
	runtime.LockOSThread() // ptrace's tracer is a thread
	defer runtime.UnlockOSThread()
	if err := unix.PtraceSeize(pid); err != nil {
		return nil, fmt.Errorf("ptrace seize %d: %w", pid, err)
	}
	defer unix.PtraceDetach(pid)
	if err := unix.PtraceInterrupt(pid); err != nil {
		return nil, fmt.Errorf("ptrace interrupt %d: %w", pid, err)
	}
	var ws unix.WaitStatus
	if _, err := unix.Wait4(pid, &ws, unix.WALL, nil); err != nil {
		return nil, fmt.Errorf("wait for %d: %w", pid, err)
	}
	n, _, errno := unix.Syscall6(unix.SYS_PTRACE, unix.PTRACE_SECCOMP_GET_FILTER, uintptr(pid), uintptr(index), 0, 0, 0)
	if errno != 0 {
		return nil, fmt.Errorf("PTRACE_SECCOMP_GET_FILTER %d of %d: %w", index, pid, errno)
	}
	out := make([]unix.SockFilter, n)
	if n > 0 {
		if _, _, errno := unix.Syscall6(unix.SYS_PTRACE, unix.PTRACE_SECCOMP_GET_FILTER, uintptr(pid), uintptr(index), uintptr(unsafe.Pointer(&out[0])), 0, 0); errno != 0 {
			return nil, fmt.Errorf("PTRACE_SECCOMP_GET_FILTER %d of %d: %w", index, pid, errno)
		}
	}
	return out, nil
}

// TestStartBinaryNotExecutable: spectrumd's binary, which QEMU starts
// through, must be executable by QEMU's uid; one that is not (mode 0700)
// fails the start with an error that says so, and QEMU never runs.
func TestStartBinaryNotExecutable(t *testing.T) {
	requireQEMU(t)
	ctx := testContext(t, 30*time.Second)
	c := testConfig(t)
	bin := testenv.SharedBinary(t)
	if err := os.Chmod(bin, 0o700); err != nil {
		t.Fatal(err)
	}
	dir := testDir(c)
	c.Kernel, c.Initramfs, c.Images = nil, nil, nil
	cfg, _ := json.Marshal(c)
	cmd := testenv.HelperCommandOf(ctx, bin, helperStart, "SPECTRUM_QEMU_CONFIG="+string(cfg), "SPECTRUM_QEMU_DIR="+dir)
	out, err := cmd.CombinedOutput()
	if err == nil {
		t.Fatalf("QEMU started from a binary its uid may not run:\n%s", out)
	}
	if !strings.Contains(string(out), "permission denied") || !strings.Contains(string(out), "must be executable by all") {
		t.Errorf("the error does not say what is wrong:\n%s", out)
	}
}
