package dist

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
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
	"unsafe"

	"github.com/elastic/go-seccomp-bpf/arch"
	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"

	"spectrum-os.org/netcfg/internal/journaldtest"
	"spectrum-os.org/netcfg/internal/testenv"
)

// This file runs a program under a systemd unit's sandbox where systemd
// does not run (no systemd as PID 1 here): the unit's capability bounding
// set, no ambient or inheritable capabilities, no_new_privs, its system
// call filter (the groups expanded by systemd-analyze itself) with
// SystemCallErrorNumber, RestrictAddressFamilies, RestrictNamespaces,
// LockPersonality and RestrictSUIDSGID as seccomp rules, and its mount
// namespace: ProtectSystem=strict with the state and runtime directories
// writable, PrivateTmp, ProtectHome, PrivateDevices with BindPaths,
// ProtectProc, ProtectKernelTunables, plus LimitNOFILE and UMask. Each is
// built the way systemd documents it; what is not emulated is listed in
// notEmulated, and a key the unit has that neither list names fails the
// test, so a new setting is never silently left out.

func TestMain(m *testing.M) {
	testenv.RunHelper(map[string]func() int{helperSandbox: sandboxHelper})
	// As root, in a mount namespace of their own with a journald
	// (TestUnitSandboxJournal).
	os.Exit(journaldtest.Main(m))
}

// unitKeys is a unit's [Service] section: every value of every key, in
// order.
type unitKeys map[string][]string

func parseUnit(text string) unitKeys {
	keys := unitKeys{}
	section := ""
	for _, l := range strings.Split(text, "\n") {
		l = strings.TrimSpace(l)
		switch {
		case l == "" || l[0] == '#' || l[0] == ';':
		case l[0] == '[':
			section = l
		case section == "[Service]":
			k, v, ok := strings.Cut(l, "=")
			if ok {
				keys[k] = append(keys[k], v)
			}
		}
	}
	return keys
}

// last is the value that counts for a key set once.
func (u unitKeys) last(k string) string {
	if v := u[k]; len(v) > 0 {
		return v[len(v)-1]
	}
	return ""
}

// emulated are the sandbox keys runSandboxed applies; notEmulated are
// those it does not, and why that is honest.
var (
	emulated = []string{"CapabilityBoundingSet", "AmbientCapabilities", "NoNewPrivileges", "SystemCallFilter",
		"SystemCallErrorNumber", "SystemCallArchitectures", "RestrictAddressFamilies", "RestrictNamespaces",
		"LockPersonality", "RestrictSUIDSGID", "ProtectSystem", "ReadOnlyPaths", "ProtectHome", "PrivateTmp",
		"PrivateMounts", "PrivateDevices", "BindPaths", "ProtectProc", "ProtectKernelTunables", "LimitNOFILE",
		"UMask", "StateDirectory", "RuntimeDirectory", "ProtectKernelModules", "ProtectClock", "ProtectHostname",
		"ProtectKernelLogs", "ProtectControlGroups", "ReadWritePaths"}
	notEmulated = map[string]string{
		"DeviceAllow":          "the cgroup device controller; the private /dev holds only these nodes anyway",
		"IPAddressDeny":        "a cgroup filter on IP sockets; neither spectrumd nor QEMU may open one (RestrictAddressFamilies)",
		"TasksMax":             "a cgroup limit; the lifecycle runs about 30 tasks",
		"OOMPolicy":            "what systemd does after an OOM kill",
		"RestrictRealtime":     "sched_setscheduler is denied whole with @resources",
		"StateDirectoryMode":   "the test's state directory has mode 0700 as systemd makes it",
		"RuntimeDirectoryMode": "the test's run directory has mode 0700 as systemd makes it",
	}
	// Not sandbox settings.
	serviceKeys = []string{"Type", "ExecStart", "KillMode", "TimeoutStopSec", "Restart", "RestartSec"}
)

// checkCovered fails t for a key of the unit the emulation neither applies
// nor explains.
func checkCovered(t *testing.T, u unitKeys) {
	t.Helper()
	for k := range u {
		if !slices.Contains(emulated, k) && notEmulated[k] == "" && !slices.Contains(serviceKeys, k) {
			t.Errorf("the unit sets %s, which the sandbox test neither emulates nor says why not", k)
		}
	}
}

// capNames are the capabilities by their names in units.
var capNames = map[string]int{
	"CAP_CHOWN": unix.CAP_CHOWN, "CAP_DAC_OVERRIDE": unix.CAP_DAC_OVERRIDE, "CAP_DAC_READ_SEARCH": unix.CAP_DAC_READ_SEARCH,
	"CAP_FOWNER": unix.CAP_FOWNER, "CAP_FSETID": unix.CAP_FSETID, "CAP_KILL": unix.CAP_KILL, "CAP_SETGID": unix.CAP_SETGID,
	"CAP_SETUID": unix.CAP_SETUID, "CAP_SETPCAP": unix.CAP_SETPCAP, "CAP_LINUX_IMMUTABLE": unix.CAP_LINUX_IMMUTABLE,
	"CAP_NET_BIND_SERVICE": unix.CAP_NET_BIND_SERVICE, "CAP_NET_BROADCAST": unix.CAP_NET_BROADCAST,
	"CAP_NET_ADMIN": unix.CAP_NET_ADMIN, "CAP_NET_RAW": unix.CAP_NET_RAW, "CAP_IPC_LOCK": unix.CAP_IPC_LOCK,
	"CAP_IPC_OWNER": unix.CAP_IPC_OWNER, "CAP_SYS_MODULE": unix.CAP_SYS_MODULE, "CAP_SYS_RAWIO": unix.CAP_SYS_RAWIO,
	"CAP_SYS_CHROOT": unix.CAP_SYS_CHROOT, "CAP_SYS_PTRACE": unix.CAP_SYS_PTRACE, "CAP_SYS_PACCT": unix.CAP_SYS_PACCT,
	"CAP_SYS_ADMIN": unix.CAP_SYS_ADMIN, "CAP_SYS_BOOT": unix.CAP_SYS_BOOT, "CAP_SYS_NICE": unix.CAP_SYS_NICE,
	"CAP_SYS_RESOURCE": unix.CAP_SYS_RESOURCE, "CAP_SYS_TIME": unix.CAP_SYS_TIME, "CAP_SYS_TTY_CONFIG": unix.CAP_SYS_TTY_CONFIG,
	"CAP_MKNOD": unix.CAP_MKNOD, "CAP_LEASE": unix.CAP_LEASE, "CAP_AUDIT_WRITE": unix.CAP_AUDIT_WRITE,
	"CAP_AUDIT_CONTROL": unix.CAP_AUDIT_CONTROL, "CAP_SETFCAP": unix.CAP_SETFCAP, "CAP_MAC_OVERRIDE": unix.CAP_MAC_OVERRIDE,
	"CAP_MAC_ADMIN": unix.CAP_MAC_ADMIN, "CAP_SYSLOG": unix.CAP_SYSLOG, "CAP_WAKE_ALARM": unix.CAP_WAKE_ALARM,
	"CAP_BLOCK_SUSPEND": unix.CAP_BLOCK_SUSPEND, "CAP_AUDIT_READ": unix.CAP_AUDIT_READ, "CAP_PERFMON": unix.CAP_PERFMON,
	"CAP_BPF": unix.CAP_BPF, "CAP_CHECKPOINT_RESTORE": unix.CAP_CHECKPOINT_RESTORE,
}

// sandbox is what the helper applies before it execs the program, all
// resolved by the test (the helper runs no systemd-analyze).
type sandbox struct {
	Caps      []int    // the bounding set
	Allowed   []string // system calls allowed, resolved for this architecture
	Errno     int      // SystemCallErrorNumber
	Families  []int    // RestrictAddressFamilies
	NSAllowed int      // RestrictNamespaces: the CLONE_NEW* flags allowed
	NoFile    uint64   // LimitNOFILE
	Umask     int
	Writable  []string // the state and runtime directories
	Devices   []string // BindPaths under /dev that exist here
	Argv      []string // the program and its arguments
}

// unitSandbox resolves u's settings into a sandbox for argv. drop names
// capabilities to leave out of the unit's set, and syscalls to deny on top
// of its filter (to show each is needed).
func unitSandbox(t *testing.T, u unitKeys, writable []string, argv []string, drop ...string) sandbox {
	t.Helper()
	checkCovered(t, u)
	s := sandbox{Writable: writable, Argv: argv, Umask: 0o022}
	for _, c := range strings.Fields(u.last("CapabilityBoundingSet")) {
		n, ok := capNames[c]
		if !ok {
			t.Fatalf("CapabilityBoundingSet: unknown capability %s", c)
		}
		if slices.Contains(drop, c) {
			continue
		}
		// A capability this machine's own bounding set lacks cannot be
		// granted: only one that no lifecycle here uses may be missing
		// (vfioOnly), and that is said.
		if have, err := unix.PrctlRetInt(unix.PR_CAPBSET_READ, uintptr(n), 0, 0, 0); err != nil || have != 1 {
			if vfioOnly[c] == "" {
				t.Fatalf("CapabilityBoundingSet: %s is not in this machine's bounding set", c)
			}
			t.Logf("%s: not in this machine's bounding set, so not granted here (%s)", c, vfioOnly[c])
			continue
		}
		s.Caps = append(s.Caps, n)
	}
	if u.last("AmbientCapabilities") != "" || u.last("NoNewPrivileges") != "yes" {
		t.Fatalf("the emulation assumes AmbientCapabilities= empty and NoNewPrivileges=yes")
	}
	s.Allowed = expandFilter(t, u["SystemCallFilter"], drop)
	switch e := u.last("SystemCallErrorNumber"); e {
	case "EPERM":
		s.Errno = int(unix.EPERM)
	default:
		t.Fatalf("SystemCallErrorNumber=%s: the emulation knows EPERM", e)
	}
	if u.last("SystemCallArchitectures") != "native" {
		t.Fatal("the emulation assumes SystemCallArchitectures=native")
	}
	for _, f := range strings.Fields(u.last("RestrictAddressFamilies")) {
		n, ok := map[string]int{"AF_UNIX": unix.AF_UNIX, "AF_NETLINK": unix.AF_NETLINK, "AF_INET": unix.AF_INET, "AF_INET6": unix.AF_INET6, "AF_PACKET": unix.AF_PACKET}[f]
		if !ok {
			t.Fatalf("RestrictAddressFamilies: unknown %s", f)
		}
		s.Families = append(s.Families, n)
	}
	for _, n := range strings.Fields(u.last("RestrictNamespaces")) {
		f, ok := map[string]int{"net": unix.CLONE_NEWNET, "user": unix.CLONE_NEWUSER, "mnt": unix.CLONE_NEWNS, "uts": unix.CLONE_NEWUTS,
			"ipc": unix.CLONE_NEWIPC, "pid": unix.CLONE_NEWPID, "cgroup": unix.CLONE_NEWCGROUP}[n]
		if !ok {
			t.Fatalf("RestrictNamespaces: the emulation knows a list of namespace types, not %q", n)
		}
		s.NSAllowed |= f
	}
	for k, want := range map[string]string{"ProtectSystem": "strict", "ProtectHome": "yes", "PrivateTmp": "yes", "PrivateDevices": "yes",
		"ProtectProc": "invisible", "ProtectKernelTunables": "yes", "LockPersonality": "yes", "RestrictSUIDSGID": "yes"} {
		if got := u.last(k); got != want {
			t.Fatalf("%s=%s: the emulation does %s=%s", k, got, k, want)
		}
	}
	for _, p := range strings.Fields(strings.Join(u["BindPaths"], " ")) {
		p = strings.TrimPrefix(p, "-")
		if !strings.HasPrefix(p, "/dev/") {
			t.Fatalf("BindPaths=%s: the emulation binds device nodes only", p)
		}
		if _, err := os.Stat(p); err == nil {
			s.Devices = append(s.Devices, p)
		} else if !strings.Contains(strings.Join(u["BindPaths"], " "), "-"+p) {
			t.Fatalf("BindPaths=%s: %v (and not optional)", p, err)
		}
	}
	// ReadWritePaths: writable again under the read-only /sys (a PCI
	// uplink's bind to vfio-pci), where they exist.
	for _, p := range strings.Fields(strings.Join(u["ReadWritePaths"], " ")) {
		p = strings.TrimPrefix(p, "-")
		if !strings.HasPrefix(p, "/sys/") {
			t.Fatalf("ReadWritePaths=%s: the emulation makes paths under /sys writable only", p)
		}
		if _, err := os.Stat(p); err == nil {
			s.Writable = append(s.Writable, p)
		}
	}
	n, err := strconv.ParseUint(u.last("LimitNOFILE"), 10, 64)
	if err != nil {
		t.Fatalf("LimitNOFILE: %v", err)
	}
	s.NoFile = n
	m, err := strconv.ParseUint(u.last("UMask"), 8, 32)
	if err != nil {
		t.Fatalf("UMask: %v", err)
	}
	s.Umask = int(m)
	return s
}

// syscallGroups returns systemd's groups as this systemd-analyze knows
// them: each group's entries, system calls and other groups.
func syscallGroups(t *testing.T) map[string][]string {
	t.Helper()
	testenv.Tool(t, "systemd-analyze", "make deps installs systemd")
	out, err := exec.Command("systemd-analyze", "syscall-filter", "--no-pager").Output()
	if err != nil {
		t.Fatalf("systemd-analyze syscall-filter: %v", err)
	}
	groups := map[string][]string{}
	cur := ""
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	for sc.Scan() {
		l := sc.Text()
		switch {
		case strings.HasPrefix(l, "@"):
			cur = strings.TrimSpace(l)
		case cur != "" && strings.TrimSpace(l) != "" && !strings.HasPrefix(strings.TrimSpace(l), "#"):
			groups[cur] = append(groups[cur], strings.TrimSpace(l))
		}
	}
	if len(groups["@system-service"]) == 0 {
		t.Fatalf("systemd-analyze syscall-filter lists no @system-service:\n%s", out)
	}
	return groups
}

// expandFilter applies SystemCallFilter lines as systemd does: the first
// line without ~ makes an allow list, later lines add to it, lines with ~
// take away; groups are expanded. deny is taken away too (names of system
// calls among the capabilities to drop are ignored). The result keeps only
// the names this architecture has.
func expandFilter(t *testing.T, lines []string, deny []string) []string {
	t.Helper()
	groups := syscallGroups(t)
	var expand func(name string, seen map[string]bool) []string
	expand = func(name string, seen map[string]bool) []string {
		if !strings.HasPrefix(name, "@") {
			return []string{name}
		}
		if seen[name] {
			return nil
		}
		seen[name] = true
		entries, ok := groups[name]
		if !ok {
			t.Fatalf("SystemCallFilter: no group %s", name)
		}
		var out []string
		for _, e := range entries {
			out = append(out, expand(e, seen)...)
		}
		return out
	}
	allowed := map[string]bool{}
	for i, l := range lines {
		remove := strings.HasPrefix(l, "~")
		if i == 0 && remove {
			t.Fatal("SystemCallFilter: the emulation builds allow lists; the unit's first line is a deny list")
		}
		for _, n := range strings.Fields(strings.TrimPrefix(l, "~")) {
			for _, sc := range expand(n, map[string]bool{}) {
				allowed[sc] = !remove
			}
		}
	}
	for _, d := range deny {
		if !strings.HasPrefix(d, "CAP_") {
			allowed[d] = false
		}
	}
	table := arch.X86_64.SyscallNames
	var out, unknown []string
	for n, ok := range allowed {
		if !ok {
			continue
		}
		if _, known := table[n]; known {
			out = append(out, n)
		} else {
			unknown = append(unknown, n)
		}
	}
	slices.Sort(out)
	slices.Sort(unknown)
	t.Logf("system call filter: %d calls allowed; not on x86_64 (or unknown to the seccomp library, so denied here): %v", len(out), unknown)
	return out
}

// nsFlags are every CLONE_NEW* flag RestrictNamespaces speaks of.
const nsFlags = unix.CLONE_NEWNS | unix.CLONE_NEWCGROUP | unix.CLONE_NEWUTS | unix.CLONE_NEWIPC | unix.CLONE_NEWUSER | unix.CLONE_NEWPID | unix.CLONE_NEWNET

// rule is one seccomp rule: system call nr, whose arguments meet every
// condition, gets ret.
type rule struct {
	nr    uint32
	conds []condition
	ret   uint32
}

// condition tests the low 32 bits of an argument (the kernel reads these
// arguments as int or umode_t): op is "bits set", "not equal" or "equal".
type condition struct {
	arg int
	op  string
	val uint32
}

const auditArchX86_64 = 0xc000003e

// program assembles s's seccomp filter. The first matching rule decides:
// RestrictNamespaces (clone3, whose flags a filter cannot read, fails with
// ENOSYS as under systemd, so libraries fall back to clone),
// LockPersonality, RestrictSUIDSGID, RestrictAddressFamilies, then the
// allow list; anything else, and every other architecture's and x32's
// calls, fail with s.Errno (x32: ENOSYS). (The program is assembled here,
// each rule reloading the call's number: go-seccomp-bpf v1.6.0's
// assembler leaves an argument in the accumulator after a rule's
// conditions fail, and compares the next rule's number against it.)
func (s sandbox) program() ([]unix.SockFilter, error) {
	table := arch.X86_64.SyscallNames
	num := func(name string) uint32 {
		n, ok := table[name]
		if !ok {
			panic("no system call " + name)
		}
		return uint32(n)
	}
	errno := func(e syscall.Errno) uint32 { return unix.SECCOMP_RET_ERRNO | uint32(e) }
	deniedNS := uint32(nsFlags &^ s.NSAllowed)
	suid := uint32(unix.S_ISUID | unix.S_ISGID)
	var families []condition
	for _, f := range s.Families {
		families = append(families, condition{0, "not equal", uint32(f)})
	}
	eperm := errno(unix.EPERM)
	rules := []rule{
		{num("clone3"), nil, errno(unix.ENOSYS)},
		{num("unshare"), []condition{{0, "bits set", deniedNS}}, eperm},
		{num("clone"), []condition{{0, "bits set", deniedNS}}, eperm},
		{num("setns"), []condition{{1, "bits set", deniedNS}}, eperm},
		{num("setns"), []condition{{1, "equal", 0}}, eperm},
		{num("personality"), []condition{{0, "not equal", 0}, {0, "not equal", 0xffffffff}}, eperm},
		{num("chmod"), []condition{{1, "bits set", suid}}, eperm},
		{num("fchmod"), []condition{{1, "bits set", suid}}, eperm},
		{num("fchmodat"), []condition{{2, "bits set", suid}}, eperm},
		{num("socket"), families, errno(unix.EAFNOSUPPORT)},
	}
	deny := errno(syscall.Errno(s.Errno))
	ins := []bpf.Instruction{
		bpf.LoadAbsolute{Off: 4, Size: 4}, // arch
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: auditArchX86_64, SkipTrue: 1},
		bpf.RetConstant{Val: deny},
		bpf.LoadAbsolute{Off: 0, Size: 4}, // nr
		bpf.JumpIf{Cond: bpf.JumpGreaterOrEqual, Val: 0x40000000, SkipFalse: 1},
		bpf.RetConstant{Val: errno(unix.ENOSYS)}, // x32
	}
	for _, r := range rules {
		// Each rule reloads the number; a failed test skips to the next
		// rule: fail is filled in once the block's length is known.
		block := []bpf.Instruction{bpf.LoadAbsolute{Off: 0, Size: 4}, bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: r.nr}}
		for _, c := range r.conds {
			block = append(block, bpf.LoadAbsolute{Off: uint32(16 + 8*c.arg), Size: 4}) // the low half (little-endian)
			switch c.op {
			case "bits set":
				block = append(block, bpf.JumpIf{Cond: bpf.JumpBitsNotSet, Val: c.val})
			case "not equal":
				block = append(block, bpf.JumpIf{Cond: bpf.JumpEqual, Val: c.val})
			case "equal":
				block = append(block, bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: c.val})
			default:
				return nil, fmt.Errorf("condition %q", c.op)
			}
		}
		block = append(block, bpf.RetConstant{Val: r.ret})
		for i, in := range block {
			if j, ok := in.(bpf.JumpIf); ok {
				j.SkipTrue = uint8(len(block) - 1 - i) // past the block's end
				block[i] = j
			}
		}
		ins = append(ins, block...)
	}
	ins = append(ins, bpf.LoadAbsolute{Off: 0, Size: 4})
	for _, name := range s.Allowed {
		ins = append(ins, bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: num(name), SkipTrue: 1}, bpf.RetConstant{Val: unix.SECCOMP_RET_ALLOW})
	}
	ins = append(ins, bpf.RetConstant{Val: deny})
	raw, err := bpf.Assemble(ins)
	if err != nil {
		return nil, err
	}
	out := make([]unix.SockFilter, len(raw))
	for i, r := range raw {
		out[i] = unix.SockFilter{Code: r.Op, Jt: r.Jt, Jf: r.Jf, K: r.K}
	}
	return out, nil
}

// helperSandbox runs SPECTRUM_SANDBOX (a sandbox in JSON) in its own mount
// namespace: `ip netns exec` starts it in one, private to it.
const helperSandbox = "sandbox"

func sandboxHelper() int {
	var s sandbox
	if err := json.Unmarshal([]byte(os.Getenv("SPECTRUM_SANDBOX")), &s); err != nil {
		fmt.Fprintln(os.Stderr, "sandbox:", err)
		return 2
	}
	if err := s.enter(); err != nil {
		fmt.Fprintln(os.Stderr, "sandbox:", err)
		return 2
	}
	return 0 // not reached: enter execs
}

// enter builds the file system view, drops the capabilities, loads the
// filter and execs s.Argv: the order systemd follows (mounts need
// CAP_SYS_ADMIN, the filter comes last, just before exec).
func (s sandbox) enter() error {
	if err := s.mounts(); err != nil {
		return fmt.Errorf("mounts: %w", err)
	}
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &unix.Rlimit{Cur: s.NoFile, Max: s.NoFile}); err != nil {
		return fmt.Errorf("LimitNOFILE: %w", err)
	}
	unix.Umask(s.Umask)
	prog, err := s.program()
	if err != nil {
		return fmt.Errorf("seccomp: %w", err)
	}
	// Capabilities, no_new_privs and the filter are per thread: all on
	// this one, which then execs.
	runtime.LockOSThread()
	last, err := os.ReadFile("/proc/sys/kernel/cap_last_cap")
	if err != nil {
		return err
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(last)))
	if err != nil {
		return err
	}
	for c := 0; c <= n; c++ {
		if slices.Contains(s.Caps, c) {
			continue
		}
		if err := unix.Prctl(unix.PR_CAPBSET_DROP, uintptr(c), 0, 0, 0); err != nil {
			return fmt.Errorf("drop capability %d from the bounding set: %w", c, err)
		}
	}
	if err := unix.Prctl(unix.PR_CAP_AMBIENT, unix.PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0); err != nil {
		return fmt.Errorf("clear ambient capabilities: %w", err)
	}
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return err
	}
	data[0].Inheritable, data[1].Inheritable = 0, 0
	if err := unix.Capset(&hdr, &data[0]); err != nil {
		return fmt.Errorf("clear inheritable capabilities: %w", err)
	}
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("no_new_privs: %w", err)
	}
	fprog := unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]}
	if _, _, e := unix.RawSyscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, 0, uintptr(unsafe.Pointer(&fprog))); e != 0 {
		return fmt.Errorf("load the filter: %w", e)
	}
	// As root, execve gives the program the bounding set as its permitted
	// and effective capabilities: what systemd gives a root service.
	return unix.Exec(s.Argv[0], s.Argv, os.Environ())
}

// mounts builds what ProtectSystem=strict (and ReadOnlyPaths) with the
// state and runtime directories writable, PrivateTmp, ProtectHome,
// PrivateDevices with BindPaths, ProtectProc=invisible and
// ProtectKernelTunables make of the file system.
func (s sandbox) mounts() error {
	// Nothing done here reaches the host's mounts.
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_SLAVE, ""); err != nil {
		return err
	}
	// The host's device nodes, before /dev is replaced.
	hostDev, err := os.MkdirTemp(filepath.Dir(s.Writable[0]), "hostdev")
	if err != nil {
		return err
	}
	if err := unix.Mount("/dev", hostDev, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return err
	}
	// ProtectSystem=strict: everything read-only...
	if err := unix.MountSetattr(unix.AT_FDCWD, "/", unix.AT_RECURSIVE, &unix.MountAttr{Attr_set: unix.MOUNT_ATTR_RDONLY}); err != nil {
		return fmt.Errorf("read-only /: %w", err)
	}
	// ...but the state and runtime directories.
	for _, w := range s.Writable {
		if err := unix.Mount(w, w, "", unix.MS_BIND, ""); err != nil {
			return err
		}
		if err := unix.Mount("", w, "", unix.MS_REMOUNT|unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("writable %s: %w", w, err)
		}
	}
	// PrivateTmp, ProtectHome.
	for _, d := range []string{"/tmp", "/var/tmp"} {
		if err := unix.Mount("tmpfs", d, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=1777"); err != nil {
			return fmt.Errorf("PrivateTmp %s: %w", d, err)
		}
	}
	for _, d := range []string{"/home", "/root", "/run/user"} {
		if _, err := os.Stat(d); err == nil {
			if err := unix.Mount("tmpfs", d, "tmpfs", unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "mode=000"); err != nil {
				return fmt.Errorf("ProtectHome %s: %w", d, err)
			}
		}
	}
	// ProtectProc=invisible; ProtectKernelTunables: /proc/sys read-only
	// (and /sys, read-only with the rest).
	if err := unix.Mount("proc", "/proc", "proc", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "hidepid=invisible"); err != nil {
		return fmt.Errorf("ProtectProc: %w", err)
	}
	if err := unix.Mount("/proc/sys", "/proc/sys", "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return err
	}
	if err := unix.Mount("", "/proc/sys", "", unix.MS_REMOUNT|unix.MS_BIND|unix.MS_RDONLY, ""); err != nil {
		return fmt.Errorf("ProtectKernelTunables: %w", err)
	}
	// PrivateDevices: the pseudo devices, a pty subsystem, and BindPaths.
	if err := unix.Mount("tmpfs", "/dev", "tmpfs", unix.MS_NOSUID, "mode=755"); err != nil {
		return fmt.Errorf("PrivateDevices: %w", err)
	}
	nodes := append([]string{"/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom", "/dev/tty", "/dev/ptmx"}, s.Devices...)
	for _, n := range nodes {
		if err := os.MkdirAll(filepath.Dir(n), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(n, nil, 0o600); err != nil {
			return err
		}
		if err := unix.Mount(filepath.Join(hostDev, strings.TrimPrefix(n, "/dev/")), n, "", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("PrivateDevices %s: %w", n, err)
		}
	}
	for _, d := range []string{"/dev/pts", "/dev/shm"} {
		os.Mkdir(d, 0o755)
	}
	if err := unix.Mount(filepath.Join(hostDev, "pts"), "/dev/pts", "", unix.MS_BIND, ""); err != nil {
		return err
	}
	if err := unix.Mount("tmpfs", "/dev/shm", "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=1777"); err != nil {
		return err
	}
	for l, target := range map[string]string{"/dev/fd": "/proc/self/fd", "/dev/stdin": "/proc/self/fd/0", "/dev/stdout": "/proc/self/fd/1", "/dev/stderr": "/proc/self/fd/2"} {
		if err := os.Symlink(target, l); err != nil {
			return err
		}
	}
	if err := unix.Mount("", "/dev", "", unix.MS_REMOUNT|unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NOEXEC, "mode=755"); err != nil {
		return fmt.Errorf("read-only /dev: %w", err)
	}
	if err := unix.Unmount(hostDev, unix.MNT_DETACH); err != nil {
		return err
	}
	return nil
}

// TestSandboxFilter runs the emulated filter of the repository's unit in
// x/net/bpf's virtual machine on calls whose fate the unit decides.
func TestSandboxFilter(t *testing.T) {
	u := parseUnit(readFile(t, filepath.Join(repoRoot(t), "dist/spectrumd.service")))
	sb := unitSandbox(t, u, []string{"/nonexistent"}, []string{"/bin/true"})
	prog, err := sb.program()
	if err != nil {
		t.Fatal(err)
	}
	raw := make([]bpf.RawInstruction, len(prog))
	for i, f := range prog {
		raw[i] = bpf.RawInstruction{Op: f.Code, Jt: f.Jt, Jf: f.Jf, K: f.K}
	}
	ins, _ := bpf.Disassemble(raw)
	vm, err := bpf.NewVM(ins)
	if err != nil {
		t.Fatal(err)
	}
	call := func(archID uint32, name string, args ...uint64) uint32 {
		// struct seccomp_data as the kernel lays it out on x86_64, each
		// 32-bit word big-endian: the virtual machine loads words in
		// network order where the kernel loads them in the CPU's.
		data := make([]byte, 64)
		binary.BigEndian.PutUint32(data[0:], uint32(arch.X86_64.SyscallNames[name]))
		binary.BigEndian.PutUint32(data[4:], archID)
		for i, a := range args {
			binary.BigEndian.PutUint32(data[16+8*i:], uint32(a))     // the low half comes first
			binary.BigEndian.PutUint32(data[20+8*i:], uint32(a>>32)) // in memory
		}
		r, err := vm.Run(data)
		if err != nil {
			t.Fatal(err)
		}
		return uint32(r)
	}
	allow, eperm := uint32(unix.SECCOMP_RET_ALLOW), unix.SECCOMP_RET_ERRNO|uint32(unix.EPERM)
	thread := uint64(unix.CLONE_VM | unix.CLONE_FS | unix.CLONE_FILES | unix.CLONE_SIGHAND | unix.CLONE_THREAD | unix.CLONE_SYSVSEM | unix.CLONE_SETTLS)
	for _, tc := range []struct {
		name string
		got  uint32
		want uint32
	}{
		{"read", call(auditArchX86_64, "read"), allow},
		{"seccomp (QEMU's own sandbox)", call(auditArchX86_64, "seccomp"), allow},
		{"setuid", call(auditArchX86_64, "setuid", 327680), allow},
		{"a thread", call(auditArchX86_64, "clone", thread), allow},
		{"clone into a network namespace", call(auditArchX86_64, "clone", unix.CLONE_NEWNET|uint64(unix.SIGCHLD)), allow},
		{"clone into a user namespace", call(auditArchX86_64, "clone", unix.CLONE_NEWUSER|uint64(unix.SIGCHLD)), eperm},
		{"unshare a network namespace", call(auditArchX86_64, "unshare", unix.CLONE_NEWNET), allow},
		{"unshare a mount namespace", call(auditArchX86_64, "unshare", unix.CLONE_NEWNS), eperm},
		{"setns a network namespace", call(auditArchX86_64, "setns", 5, unix.CLONE_NEWNET), allow},
		{"setns of any type", call(auditArchX86_64, "setns", 5, 0), eperm},
		{"clone3", call(auditArchX86_64, "clone3"), unix.SECCOMP_RET_ERRNO | uint32(unix.ENOSYS)},
		{"a netlink socket", call(auditArchX86_64, "socket", unix.AF_NETLINK), allow},
		{"a unix socket", call(auditArchX86_64, "socket", unix.AF_UNIX), allow},
		{"an IPv4 socket", call(auditArchX86_64, "socket", unix.AF_INET), unix.SECCOMP_RET_ERRNO | uint32(unix.EAFNOSUPPORT)},
		{"a packet socket", call(auditArchX86_64, "socket", unix.AF_PACKET), unix.SECCOMP_RET_ERRNO | uint32(unix.EAFNOSUPPORT)},
		{"mount", call(auditArchX86_64, "mount"), eperm},
		{"setpriority (@resources)", call(auditArchX86_64, "setpriority"), eperm},
		{"ptrace", call(auditArchX86_64, "ptrace"), eperm},
		{"io_uring_setup", call(auditArchX86_64, "io_uring_setup"), eperm},
		{"userfaultfd", call(auditArchX86_64, "userfaultfd"), eperm},
		{"add_key (@keyring)", call(auditArchX86_64, "add_key"), eperm},
		{"mlock (@memlock)", call(auditArchX86_64, "mlock"), eperm},
		{"chmod u+s", call(auditArchX86_64, "chmod", 0, 0o4755), eperm},
		{"chmod 0600", call(auditArchX86_64, "chmod", 0, 0o600), allow},
		{"personality(PER_LINUX)", call(auditArchX86_64, "personality", 0), allow},
		{"personality(READ_IMPLIES_EXEC)", call(auditArchX86_64, "personality", 0x400000), eperm},
		{"an i386 call", call(0x40000003, "read"), eperm},
	} {
		if tc.got != tc.want {
			t.Errorf("%s: %#x, want %#x", tc.name, tc.got, tc.want)
		}
	}
}
