package confine

import (
	"fmt"
	"maps"
	"slices"
	"unsafe"

	"github.com/elastic/go-seccomp-bpf/arch"
	"golang.org/x/net/bpf"
	"golang.org/x/sys/cpu"
	"golang.org/x/sys/unix"
)

// TapAllowed are the tap ioctls QEMU may call on a tap it was handed, all
// that QEMU 7.2 calls on one (-netdev tap,fd=N, cold-plugged or hot-plugged
// through getfd; read in its net/tap-linux.c and seen with strace): it
// reads the tap's flags and the size of its vnet header, sets the header's
// size and byte order (VNETLE/VNETBE: a guest of the other endianness), the
// offloads the guest's virtio-net takes, and the send buffer. None of them
// changes what the tap is on the host: its name, MAC, owner, persistence,
// link type or carrier.
var TapAllowed = map[string]uint32{
	"TUNGETFEATURES":  unix.TUNGETFEATURES,
	"TUNGETIFF":       unix.TUNGETIFF,
	"TUNSETOFFLOAD":   unix.TUNSETOFFLOAD,
	"TUNGETSNDBUF":    unix.TUNGETSNDBUF,
	"TUNSETSNDBUF":    unix.TUNSETSNDBUF,
	"TUNGETVNETHDRSZ": unix.TUNGETVNETHDRSZ,
	"TUNSETVNETHDRSZ": unix.TUNSETVNETHDRSZ,
	"TUNGETVNETLE":    unix.TUNGETVNETLE,
	"TUNSETVNETLE":    unix.TUNSETVNETLE,
	"TUNGETVNETBE":    unix.TUNGETVNETBE,
	"TUNSETVNETBE":    unix.TUNSETVNETBE,
}

// The ioctl ranges the filter decides on, by the request's type byte and
// number (asm-generic/ioctl.h: type in bits 8-15, number in bits 0-7;
// Documentation/userspace-api/ioctl/ioctl-number.rst assigns them):
//
//   - tun: type 'T', numbers 0xC0-0xFF (if_tun.h; ioctl-number.rst says
//     C0-DF, but TUNSETSTEERINGEBPF and later took 0xE0 on). 'T' numbers
//     below that are the terminal ioctls (TCGETS, FIONBIO, FIONREAD),
//     which are left alone. Denied but for TapAllowed: a request added to
//     if_tun.h later is denied until it is read and listed here.
//   - netdev: type 0x89, SOCK_IOC_TYPE (sockios.h): SIOCSIFHWADDR and
//     every other request on a network device, route or bridge, which tun
//     also answers on a tap's descriptor. All denied: QEMU, with nothing
//     but descriptors and an empty network namespace, calls none.
const (
	tunMask, tunType = 0xffc0, 'T'<<8 | 0xc0
	netMask, netType = 0xff00, 0x89 << 8
)

// errEPERM is the filter's answer to a denied call: EPERM, what a caller
// without the permission gets, so QEMU reports it as such.
const errEPERM = unix.SECCOMP_RET_ERRNO | uint32(unix.EPERM)

// Program returns the filter, assembled for the machine it runs on:
//
//   - a call of another architecture's ABI (i386's int 0x80, x32 on
//     x86_64), which would reach the same tap ioctls by other numbers
//     (compat_ioctl), fails: EPERM, ENOSYS for x32 as systemd does;
//   - ioctl with a denied request (above) fails with EPERM;
//   - everything else is allowed: what else QEMU may do is its -sandbox's
//     and the systemd unit's to decide.
//
// The kernel reads ioctl's request as a 32-bit unsigned int, so the
// filter compares only the argument's low half: setting the high half
// cannot slip a request past it.
func Program() ([]unix.SockFilter, error) {
	native, err := arch.GetInfo("")
	if err != nil {
		return nil, fmt.Errorf("system-call filter: %w", err)
	}
	req := lowHalf(1)
	allow := bpf.RetConstant{Val: unix.SECCOMP_RET_ALLOW}
	deny := bpf.RetConstant{Val: errEPERM}

	ins := []bpf.Instruction{
		bpf.LoadAbsolute{Off: 4, Size: 4}, // arch
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: uint32(native.ID), SkipTrue: 1},
		deny,
		bpf.LoadAbsolute{Off: 0, Size: 4}, // nr
	}
	if native.SeccompMask != 0 { // x86_64: x32's numbers carry this bit
		ins = append(ins,
			bpf.JumpIf{Cond: bpf.JumpBitsSet, Val: uint32(native.SeccompMask), SkipFalse: 1},
			bpf.RetConstant{Val: unix.SECCOMP_RET_ERRNO | uint32(unix.ENOSYS)},
		)
	}
	ins = append(ins,
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: unix.SYS_IOCTL, SkipTrue: 1},
		allow,
		bpf.LoadAbsolute{Off: req, Size: 4},
		bpf.ALUOpConstant{Op: bpf.ALUOpAnd, Val: netMask},
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: netType, SkipTrue: 0, SkipFalse: 1},
		deny,
		bpf.LoadAbsolute{Off: req, Size: 4},
		bpf.ALUOpConstant{Op: bpf.ALUOpAnd, Val: tunMask},
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: tunType, SkipTrue: 1},
		allow,
		bpf.LoadAbsolute{Off: req, Size: 4},
	)
	for _, r := range sortedAllowed() {
		ins = append(ins, bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: r, SkipTrue: 1}, allow)
	}
	ins = append(ins, deny)

	raw, err := bpf.Assemble(ins)
	if err != nil {
		return nil, fmt.Errorf("system-call filter: %w", err)
	}
	out := make([]unix.SockFilter, len(raw))
	for i, r := range raw {
		out[i] = unix.SockFilter{Code: r.Op, Jt: r.Jt, Jf: r.Jf, K: r.K}
	}
	return out, nil
}

// lowHalf is the offset in struct seccomp_data of the low 32 bits of
// system-call argument i (args start at 16, 8 bytes each, in the CPU's
// byte order).
func lowHalf(i uint32) uint32 {
	off := 16 + 8*i
	if cpu.IsBigEndian {
		off += 4
	}
	return off
}

// sortedAllowed is TapAllowed's requests in ascending order, so the same
// binary always assembles the same program.
func sortedAllowed() []uint32 {
	return slices.Sorted(maps.Values(TapAllowed))
}

// Install sets no_new_privs on the calling process (a filter needs it
// without CAP_SYS_ADMIN, and no exec may gain privileges past it) and
// installs Program for every one of its threads (TSYNC), which an exec
// keeps: the filter stays for the rest of the process's life.
func Install() error {
	prog, err := Program()
	if err != nil {
		return err
	}
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("set no_new_privs: %w", err)
	}
	fprog := unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]}
	tid, _, errno := unix.Syscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, unix.SECCOMP_FILTER_FLAG_TSYNC, uintptr(unsafe.Pointer(&fprog)))
	switch {
	case errno != 0:
		return fmt.Errorf("install the system-call filter: seccomp: %w", errno)
	case tid != 0: // TSYNC: this thread could not take the filter
		return fmt.Errorf("install the system-call filter: seccomp: thread %d cannot take it", tid)
	}
	return nil
}
