package confine

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"

	"spectrum-os.org/netcfg/host/link"
	"spectrum-os.org/netcfg/internal/nstest"
	"spectrum-os.org/netcfg/internal/testenv"
)

func TestMain(m *testing.M) {
	testenv.RunHelper(map[string]func() int{helperIoctls: ioctlsHelper, helperStatus: statusHelper, helperShow: showHelper, helperNoSeccomp: noSeccompHelper})
	os.Exit(m.Run())
}

// victim is the MAC of a LAN peer the attacker wants the frames of.
var victim = net.HardwareAddr{0x02, 0x00, 0x00, 0x00, 0x00, 0x99}

// attempt is one ioctl the attacker's helper tries on its tap.
type attempt struct {
	name   string
	req    uint64                  // the request as passed, high half included
	arg    func(tap string) []byte // what the argument points to; nil: val itself
	val    uintptr
	denied bool // the filter must refuse it with EPERM; else QEMU needs it
}

// attempts are the calls the helper makes.
func attempts() []attempt {
	ifreq := func(fill func(b []byte)) func(string) []byte {
		return func(tap string) []byte {
			b := make([]byte, unix.IFNAMSIZ+24)
			copy(b, tap)
			if fill != nil {
				fill(b[unix.IFNAMSIZ:])
			}
			return b
		}
	}
	hwaddr := ifreq(func(b []byte) {
		binary.NativeEndian.PutUint16(b, unix.ARPHRD_ETHER)
		copy(b[2:], victim)
	})
	flags := func(f uint16) func(string) []byte {
		return ifreq(func(b []byte) { binary.NativeEndian.PutUint16(b, f) })
	}
	out := func(string) []byte { return make([]byte, 64) }
	in := func(v int32) func(string) []byte {
		return func(string) []byte {
			b := make([]byte, 64)
			binary.NativeEndian.PutUint32(b, uint32(v))
			return b
		}
	}
	return []attempt{
		// The attack, and the same request with the high half set
		// (the kernel reads only the low 32 bits).
		{name: "SIOCSIFHWADDR", req: unix.SIOCSIFHWADDR, arg: hwaddr, denied: true},
		{name: "SIOCSIFHWADDR|1<<32", req: unix.SIOCSIFHWADDR | 1<<32, arg: hwaddr, denied: true},
		{name: "SIOCGIFHWADDR", req: unix.SIOCGIFHWADDR, arg: ifreq(nil), denied: true},
		{name: "SIOCSIFNAME", req: unix.SIOCSIFNAME, arg: ifreq(func(b []byte) { copy(b, "eth7") }), denied: true},
		{name: "SIOCSIFFLAGS", req: unix.SIOCSIFFLAGS, arg: ifreq(nil), denied: true},
		{name: "SIOCSIFMTU", req: unix.SIOCSIFMTU, arg: in(1280), denied: true},
		{name: "SIOCSIFADDR", req: unix.SIOCSIFADDR, arg: ifreq(nil), denied: true},
		{name: "SIOCSIFTXQLEN", req: unix.SIOCSIFTXQLEN, arg: ifreq(nil), denied: true},
		{name: "SIOCBRADDIF", req: unix.SIOCBRADDIF, arg: ifreq(nil), denied: true},
		{name: "SIOCETHTOOL", req: unix.SIOCETHTOOL, arg: ifreq(nil), denied: true},
		{name: "TUNSETIFF", req: unix.TUNSETIFF, arg: flags(unix.IFF_TAP | unix.IFF_NO_PI), denied: true},
		{name: "TUNSETPERSIST", req: unix.TUNSETPERSIST, val: 0, denied: true},
		{name: "TUNSETOWNER", req: unix.TUNSETOWNER, val: 1000, denied: true},
		{name: "TUNSETGROUP", req: unix.TUNSETGROUP, val: 1000, denied: true},
		{name: "TUNSETLINK", req: unix.TUNSETLINK, val: unix.ARPHRD_ETHER, denied: true},
		{name: "TUNSETCARRIER", req: unix.TUNSETCARRIER, arg: in(0), denied: true},
		{name: "TUNSETQUEUE", req: unix.TUNSETQUEUE, arg: flags(unix.IFF_DETACH_QUEUE), denied: true},
		{name: "TUNSETTXFILTER", req: unix.TUNSETTXFILTER, arg: out, denied: true},
		{name: "TUNSETDEBUG", req: unix.TUNSETDEBUG, val: 1, denied: true},
		{name: "TUNSETNOCSUM", req: unix.TUNSETNOCSUM, val: 1, denied: true},
		{name: "TUNGETDEVNETNS", req: unix.TUNGETDEVNETNS, denied: true},
		{name: "TUNSETIFINDEX", req: unix.TUNSETIFINDEX, arg: in(99), denied: true},
		{name: "TUNSETFILTEREBPF", req: unix.TUNSETFILTEREBPF, arg: in(-1), denied: true},
		{name: "TUNSETSTEERINGEBPF", req: unix.TUNSETSTEERINGEBPF, arg: in(-1), denied: true},
		{name: "TUNDETACHFILTER", req: unix.TUNDETACHFILTER, arg: out, denied: true},
		// What QEMU calls on a tap it is handed, and a terminal ioctl
		// of the same type byte ('T').
		{name: "TUNGETFEATURES", req: unix.TUNGETFEATURES, arg: out},
		{name: "TUNGETIFF", req: unix.TUNGETIFF, arg: out},
		{name: "TUNSETOFFLOAD", req: unix.TUNSETOFFLOAD, val: unix.TUN_F_CSUM},
		{name: "TUNGETSNDBUF", req: unix.TUNGETSNDBUF, arg: out},
		{name: "TUNSETSNDBUF", req: unix.TUNSETSNDBUF, arg: in(1 << 20)},
		{name: "TUNGETVNETHDRSZ", req: unix.TUNGETVNETHDRSZ, arg: out},
		{name: "TUNSETVNETHDRSZ", req: unix.TUNSETVNETHDRSZ, arg: in(12)},
		{name: "TUNGETVNETLE", req: unix.TUNGETVNETLE, arg: out},
		{name: "TUNSETVNETLE", req: unix.TUNSETVNETLE, arg: in(0)},
		{name: "TUNGETVNETBE", req: unix.TUNGETVNETBE, arg: out},
		{name: "TUNSETVNETBE", req: unix.TUNSETVNETBE, arg: in(0)},
		{name: "TCGETS", req: unix.TCGETS, arg: out},
	}
}

// helperIoctls is the attacker: an unprivileged process holding a tap as
// descriptor 3 (SPECTRUM_TAP names it) that tries every attempt and prints
// each result as JSON: "ok" or the error.
const helperIoctls = "confine-ioctls"

func ioctlsHelper() int {
	tap, only := os.Getenv("SPECTRUM_TAP"), os.Getenv("SPECTRUM_ONLY")
	got := map[string]string{}
	for _, a := range attempts() {
		if only != "" && a.name != only {
			continue
		}
		arg := a.val
		var buf []byte
		if a.arg != nil {
			buf = a.arg(tap)
			arg = uintptr(unsafe.Pointer(&buf[0]))
		}
		_, _, errno := unix.Syscall(unix.SYS_IOCTL, 3, uintptr(a.req), arg)
		runtime.KeepAlive(buf)
		got[a.name] = "ok"
		if errno != 0 {
			got[a.name] = errno.Error()
		}
	}
	// The uid and what the kernel says of this process's confinement.
	st, _ := os.ReadFile("/proc/self/status")
	for _, l := range strings.Split(string(st), "\n") {
		if k, v, ok := strings.Cut(l, ":"); ok && (k == "NoNewPrivs" || k == "Seccomp" || k == "CapEff") {
			got[k] = strings.TrimSpace(v)
		}
	}
	got["uid"] = strconv.Itoa(os.Getuid())
	json.NewEncoder(os.Stdout).Encode(got)
	return 0
}

// TestTapIoctls is the attacker's test: a process holding an uplink tap's
// descriptor, as QEMU does (its own uid, no capabilities, an empty network
// namespace), tries the ioctls that would change the tap on the host.
// Unconfined, it sets the tap's MAC to a LAN peer's, and the user's bridge
// takes that MAC as its own on the tap's port (the frames for the peer
// would go to the attacker); confined (Wrap), each denied call fails with
// EPERM and changes nothing, and the calls QEMU makes still work.
func TestTapIoctls(t *testing.T) {
	ns := nstest.New(t)
	ns.IP("link", "add", "lan0", "type", "bridge")
	ns.IP("link", "set", "lan0", "up")
	n, err := link.OpenPath(ns.Path(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	uid := 400000 + uint32(os.Getpid()%1000)*100 + 99

	run := func(t *testing.T, m net.HardwareAddr, confined bool, env ...string) map[string]string {
		t.Helper()
		if err := n.CreateUplink("lan0", m); err != nil {
			t.Fatal(err)
		}
		tap, err := n.OpenUplink(m)
		if err != nil {
			t.Fatal(err)
		}
		defer tap.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		// The helper is this binary, run through /proc/self/exe: its
		// build directory is private to root.
		cmd := exec.CommandContext(ctx, Self)
		cmd.Env = testenv.HelperEnv(helperIoctls, append(env, "SPECTRUM_TAP="+link.UplinkTapName(m))...)
		cmd.ExtraFiles = []*os.File{tap}
		cmd.SysProcAttr = &syscall.SysProcAttr{
			Credential: &syscall.Credential{Uid: uid, Gid: uid},
			Cloneflags: syscall.CLONE_NEWNET,
		}
		var l *Launch
		if confined {
			if l, err = Wrap(cmd); err != nil {
				t.Fatal(err)
			}
		}
		var stderr strings.Builder
		cmd.Stderr = &stderr
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		if l != nil {
			if err := l.Started(time.Now().Add(10 * time.Second)); err != nil {
				t.Errorf("Started: %v", err)
			}
		}
		got := map[string]string{}
		if err := json.NewDecoder(bufio.NewReader(stdout)).Decode(&got); err != nil {
			t.Errorf("helper's output: %v", err)
		}
		if err := cmd.Wait(); err != nil {
			t.Fatalf("helper: %v\n%s", err, stderr.String())
		}
		return got
	}

	// The attack, unconfined: it works.
	free := net.HardwareAddr{0x02, 0x00, 0x00, 0x00, 0x00, 0x01}
	got := run(t, free, false, "SPECTRUM_ONLY=SIOCSIFHWADDR")
	if got["SIOCSIFHWADDR"] != "ok" || got["uid"] != strconv.Itoa(int(uid)) || got["CapEff"] != "0000000000000000" {
		t.Fatalf("unconfined as uid %d: SIOCSIFHWADDR %q, uid %s, CapEff %s: want the attack to work from an unprivileged uid, else this test proves nothing",
			uid, got["SIOCSIFHWADDR"], got["uid"], got["CapEff"])
	}
	if tapMAC(t, ns, link.UplinkTapName(free)) != victim.String() || !bridgeLocal(t, ns, victim) {
		t.Fatalf("unconfined: the tap's MAC is %s and the bridge has no local entry for %s: the attack did not reproduce",
			tapMAC(t, ns, link.UplinkTapName(free)), victim)
	}
	ns.IP("link", "del", link.UplinkTapName(free))

	// Confined.
	m := net.HardwareAddr{0x02, 0x00, 0x00, 0x00, 0x00, 0x02}
	name := link.UplinkTapName(m)
	if err := n.CreateUplink("lan0", m); err != nil {
		t.Fatal(err)
	}
	owner := tapOwner(t, ns, name)
	got = run(t, m, true)
	want := map[string]string{"uid": strconv.Itoa(int(uid)), "CapEff": "0000000000000000", "NoNewPrivs": "1", "Seccomp": "2"}
	for _, a := range attempts() {
		if a.denied {
			want[a.name] = unix.EPERM.Error()
		} else {
			want[a.name] = got[a.name]
			if got[a.name] == unix.EPERM.Error() {
				want[a.name] = "anything but EPERM (QEMU needs it)"
			}
		}
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("confined as uid %d (-want +got):\n%s", uid, diff)
	}
	for _, allowed := range []string{"TUNGETIFF", "TUNSETOFFLOAD", "TUNSETSNDBUF", "TUNGETVNETHDRSZ", "TUNSETVNETHDRSZ"} {
		if got[allowed] != "ok" {
			t.Errorf("confined: %s = %s, want ok (QEMU calls it on every tap)", allowed, got[allowed])
		}
	}
	if mac := tapMAC(t, ns, name); mac == victim.String() || bridgeLocal(t, ns, victim) {
		t.Errorf("confined: the tap's MAC is %s, bridge has a local entry for %s: %v", mac, victim, bridgeLocal(t, ns, victim))
	}
	if diff := cmp.Diff(owner, tapOwner(t, ns, name)); diff != "" {
		t.Errorf("confined: the tap's owner and group changed (-before +after):\n%s", diff)
	}
}

// tapOwner is what ip says of the owner and group of tap name in ns.
func tapOwner(t *testing.T, ns *nstest.NS, name string) string {
	t.Helper()
	var info []struct {
		Linkinfo struct {
			InfoData struct {
				User  string `json:"user"`
				Group string `json:"group"`
			} `json:"info_data"`
		} `json:"linkinfo"`
	}
	if err := json.Unmarshal(ns.IP("-d", "-j", "link", "show", name), &info); err != nil || len(info) != 1 {
		t.Fatalf("ip -d -j link show %s: %v", name, err)
	}
	d := info[0].Linkinfo.InfoData
	return "user " + d.User + ", group " + d.Group
}

// tapMAC is the MAC of the interface name in ns, read with ip; "" if it is
// missing.
func tapMAC(t *testing.T, ns *nstest.NS, name string) string {
	t.Helper()
	out, err := ns.TryIP("-j", "link", "show", name)
	if err != nil {
		return ""
	}
	var links []struct {
		Address string `json:"address"`
	}
	if err := json.Unmarshal(out, &links); err != nil || len(links) != 1 {
		t.Fatalf("ip -j link show %s: %v", name, err)
	}
	return links[0].Address
}

// bridgeLocal tells whether ns's bridge lan0 holds m as a local (its own)
// address: frames for m then stop at the host's side of the port.
func bridgeLocal(t *testing.T, ns *nstest.NS, m net.HardwareAddr) bool {
	t.Helper()
	var fdb []struct {
		Mac   string   `json:"mac"`
		State string   `json:"state"`
		Flags []string `json:"flags"`
	}
	out, err := ns.Command(context.Background(), "bridge", "-j", "fdb", "show", "br", "lan0").Output()
	if err != nil {
		t.Fatalf("bridge fdb show: %v", err)
	}
	if err := json.Unmarshal(out, &fdb); err != nil {
		t.Fatal(err)
	}
	for _, e := range fdb {
		if e.Mac == m.String() && e.State == "permanent" {
			return true
		}
	}
	return false
}

// helperStatus is a program that must never run: TestFailClosed execs it
// through a trampoline that cannot install the filter.
const helperStatus = "confine-must-not-run"

func statusHelper() int {
	fmt.Println("ran unconfined")
	return 0
}
