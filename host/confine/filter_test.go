package confine

import (
	"encoding/binary"
	"testing"

	"github.com/elastic/go-seccomp-bpf/arch"
	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// TestProgram runs the filter in x/net/bpf's virtual machine on calls of
// every kind it decides: the tap ioctls QEMU needs and those it must not
// have, the edges of the ranges, a request with its high half set, other
// architectures' ABIs, and calls that are not ioctls.
func TestProgram(t *testing.T) {
	prog, err := Program()
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
	native, _ := arch.GetInfo("")
	run := func(archID uint32, nr int, args ...uint64) uint32 {
		// struct seccomp_data, each 32-bit word big-endian: the virtual
		// machine loads words in network order where the kernel loads
		// them in the CPU's (little-endian here: the low half first).
		data := make([]byte, 64)
		binary.BigEndian.PutUint32(data[0:], uint32(nr))
		binary.BigEndian.PutUint32(data[4:], archID)
		for i, a := range args {
			binary.BigEndian.PutUint32(data[lowHalf(uint32(i)):], uint32(a))
			binary.BigEndian.PutUint32(data[lowHalf(uint32(i))^4:], uint32(a>>32))
		}
		r, err := vm.Run(data)
		if err != nil {
			t.Fatal(err)
		}
		return uint32(r)
	}
	ioctl := func(req uint64) uint32 { return run(uint32(native.ID), unix.SYS_IOCTL, 3, req, 0) }
	allow, eperm := uint32(unix.SECCOMP_RET_ALLOW), errEPERM
	for _, tc := range []struct {
		name      string
		got, want uint32
	}{
		{"read", run(uint32(native.ID), unix.SYS_READ, 3), allow},
		{"seccomp (QEMU's -sandbox)", run(uint32(native.ID), unix.SYS_SECCOMP), allow},
		{"SIOCSIFHWADDR", ioctl(unix.SIOCSIFHWADDR), eperm},
		{"SIOCSIFHWADDR, high half set", ioctl(unix.SIOCSIFHWADDR | 0xffffffff00000000), eperm},
		{"SIOCGIFINDEX (type 0x89, any)", ioctl(unix.SIOCGIFINDEX), eperm},
		{"0x89ff", ioctl(0x89ff), eperm},
		{"SIOCSIFHWADDR with direction bits", ioctl(0xc0008924), eperm},
		{"TUNSETIFF", ioctl(unix.TUNSETIFF), eperm},
		{"TUNSETPERSIST", ioctl(unix.TUNSETPERSIST), eperm},
		{"TUNSETPERSIST, high half set", ioctl(unix.TUNSETPERSIST | 1<<32), eperm},
		{"TUNSETCARRIER", ioctl(unix.TUNSETCARRIER), eperm},
		{"TUNGETDEVNETNS", ioctl(unix.TUNGETDEVNETNS), eperm},
		{"a tun request if_tun.h does not have yet ('T' 0xff)", ioctl(0x400454ff), eperm},
		{"TUNSETOFFLOAD", ioctl(unix.TUNSETOFFLOAD), allow},
		{"TUNSETOFFLOAD, high half set", ioctl(unix.TUNSETOFFLOAD | 1<<32), allow},
		{"TUNSETVNETHDRSZ", ioctl(unix.TUNSETVNETHDRSZ), allow},
		{"TUNGETIFF", ioctl(unix.TUNGETIFF), allow},
		{"TUNSETVNETBE", ioctl(unix.TUNSETVNETBE), allow},
		{"TCGETS ('T' 0x01)", ioctl(unix.TCGETS), allow},
		{"'T' 0xbf", ioctl(0x54bf), allow},
		{"KVM_RUN", ioctl(0xae80), allow},
		{"VHOST_NET_SET_BACKEND", ioctl(0x4008af30), allow},
		{"an i386 call (int 0x80)", run(0x40000003, 54, 3, unix.TUNSETOFFLOAD), eperm},
	} {
		if tc.got != tc.want {
			t.Errorf("%s: %#x, want %#x", tc.name, tc.got, tc.want)
		}
	}
	if native.SeccompMask != 0 {
		if got, want := run(uint32(native.ID), native.SeccompMask|unix.SYS_IOCTL, 3, unix.TUNSETOFFLOAD), unix.SECCOMP_RET_ERRNO|uint32(unix.ENOSYS); got != want {
			t.Errorf("an x32 ioctl: %#x, want %#x", got, want)
		}
	}
	for name, req := range TapAllowed {
		if got := ioctl(uint64(req)); got != allow {
			t.Errorf("%s (TapAllowed): %#x, want allowed", name, got)
		}
	}
}
