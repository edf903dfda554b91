package router_test

import (
	"fmt"
	"os"
	"runtime"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The test binary doubles as a wrapper that starts the agent in a changed
// world: with wrapEnv set, it sets that world up and execs wrapExecEnv's
// program with its own arguments.
const (
	wrapEnv     = "SPECTRUM_ROUTER_TEST_WRAP"
	wrapExecEnv = "SPECTRUM_ROUTER_TEST_WRAP_EXEC"
)

// withoutNfnetlink, as wrapEnv: a kernel without nfnetlink (nf_tables'
// transport), as one built without CONFIG_NETFILTER_NETLINK or whose
// module is missing answers: socket(AF_NETLINK, SOCK_RAW,
// NETLINK_NETFILTER) fails with EPROTONOSUPPORT. A seccomp filter, which
// the program exec'd inherits, gives that answer.
const withoutNfnetlink = "no-nfnetlink"

// withoutIPv6, as wrapEnv: a kernel without IPv6 (ipv6.disable=1,
// CONFIG_IPV6=n) answers socket(AF_INET6, ...) with EAFNOSUPPORT; the
// seccomp filter gives that answer. /proc/sys/net/ipv6 is still there.
const withoutIPv6 = "no-ipv6"

// wrapped does the wrapper's job and never returns when wrapEnv is set.
func wrapped() {
	mode := os.Getenv(wrapEnv)
	if mode == "" {
		return
	}
	prog := os.Getenv(wrapExecEnv)
	err := fmt.Errorf("unknown %s %q", wrapEnv, mode)
	// The filter is the calling thread's, and execve keeps it: stay on
	// this thread until then.
	switch mode {
	case withoutNfnetlink:
		runtime.LockOSThread()
		err = denySocket(unix.AF_NETLINK, unix.NETLINK_NETFILTER, unix.EPROTONOSUPPORT)
	case withoutIPv6:
		runtime.LockOSThread()
		err = denySocket(unix.AF_INET6, anyProto, unix.EAFNOSUPPORT)
	}
	if err == nil {
		env := make([]string, 0, len(os.Environ()))
		for _, e := range os.Environ() {
			if len(e) < len(wrapEnv) || e[:len(wrapEnv)] != wrapEnv {
				env = append(env, e)
			}
		}
		err = syscall.Exec(prog, append([]string{prog}, os.Args[1:]...), env)
	}
	fmt.Fprintln(os.Stderr, "wrapper:", err)
	os.Exit(3)
}

// anyProto, as denySocket's proto: sockets of any protocol.
const anyProto = -1

// denySocket installs a seccomp filter under which socket(family, type,
// proto) fails with errno (proto anyProto: any protocol).
func denySocket(family, proto int, errno unix.Errno) error {
	var arch uint32
	switch runtime.GOARCH {
	case "amd64":
		arch = unix.AUDIT_ARCH_X86_64
	case "arm64":
		arch = unix.AUDIT_ARCH_AARCH64
	default:
		return fmt.Errorf("no seccomp filter written for %s", runtime.GOARCH)
	}
	const (
		ld  = unix.BPF_LD | unix.BPF_W | unix.BPF_ABS
		jeq = unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K
		ret = unix.BPF_RET | unix.BPF_K
		// struct seccomp_data: nr, arch, instruction_pointer, args[6]
		// (the low 32 bits of each first, little-endian).
		offNr, offArch, offArg0, offArg2 = 0, 4, 16, 32
	)
	filter := []unix.SockFilter{
		{Code: ld, K: offArch},
		{Code: jeq, K: arch, Jt: 1},
		{Code: ret, K: unix.SECCOMP_RET_KILL_PROCESS},
		{Code: ld, K: offNr},
		{Code: jeq, K: unix.SYS_SOCKET, Jf: 5},
		{Code: ld, K: offArg0},
		{Code: jeq, K: uint32(family), Jf: 3},
		{Code: ld, K: offArg2},
		{Code: jeq, K: uint32(proto), Jf: 1},
		{Code: ret, K: unix.SECCOMP_RET_ERRNO | uint32(errno)},
		{Code: ret, K: unix.SECCOMP_RET_ALLOW},
	}
	if proto == anyProto {
		// The protocol's test always matches.
		filter[7] = unix.SockFilter{Code: unix.BPF_JMP | unix.BPF_JA, K: 0}
		filter[8] = unix.SockFilter{Code: unix.BPF_JMP | unix.BPF_JA, K: 0}
	}
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("PR_SET_NO_NEW_PRIVS: %w", err)
	}
	prog := unix.SockFprog{Len: uint16(len(filter)), Filter: &filter[0]}
	if err := unix.Prctl(unix.PR_SET_SECCOMP, unix.SECCOMP_MODE_FILTER, uintptr(unsafe.Pointer(&prog)), 0, 0); err != nil {
		return fmt.Errorf("PR_SET_SECCOMP: %w", err)
	}
	return nil
}
