package cli

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"spectrum-os.org/netcfg/host/control"
	"spectrum-os.org/netcfg/host/link"
	"spectrum-os.org/netcfg/internal/mac"
	"spectrum-os.org/netcfg/internal/nstest"
)

// uplinkPort is the uplink's tap as ip and bridge show it.
type uplinkPort struct {
	Ifindex int
	Master  string
	Carrier bool   // QEMU holds the tap open
	State   string // the bridge port's STP state
}

func readUplinkPort(t *testing.T, ns *nstest.NS, tap string) (uplinkPort, bool) {
	t.Helper()
	out, err := ns.TryIP("-j", "link", "show", tap)
	if err != nil {
		return uplinkPort{}, false
	}
	var l []struct {
		Ifindex int      `json:"ifindex"`
		Master  string   `json:"master"`
		Flags   []string `json:"flags"`
	}
	if err := json.Unmarshal(out, &l); err != nil || len(l) != 1 {
		t.Fatalf("ip link show %s: %v %s", tap, err, out)
	}
	p := uplinkPort{Ifindex: l[0].Ifindex, Master: l[0].Master}
	for _, f := range l[0].Flags {
		p.Carrier = p.Carrier || f == "LOWER_UP"
	}
	b, err := ns.Command(t.Context(), "bridge", "-j", "link", "show", "dev", tap).Output()
	if err != nil {
		t.Fatalf("bridge link show dev %s: %v", tap, err)
	}
	var ports []struct {
		State string `json:"state"`
	}
	if err := json.Unmarshal(b, &ports); err != nil {
		t.Fatal(err)
	}
	if len(ports) == 1 {
		p.State = ports[0].State
	}
	return p, true
}

// qemuNetDevices lists the -device virtio-net-pci values of a QEMU's
// command line, as the kernel has it.
func qemuNetDevices(t *testing.T, pid int) []string {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	if err != nil {
		t.Fatal(err)
	}
	args := strings.Split(strings.TrimSuffix(string(b), "\x00"), "\x00")
	var out []string
	for i, a := range args {
		if a == "-device" && i+1 < len(args) && strings.HasPrefix(args[i+1], "virtio-net-pci,") {
			out = append(out, args[i+1])
		}
	}
	return out
}

// TestUplinkQEMU runs a provider with an uplink and its client under a real
// spectrumd and QEMU (the stub kernel), in a fresh namespace whose br-lan
// (with a port, lan0) is the user's LAN bridge: QEMU gets a virtio-net NIC
// with the uplink's MAC after the link's, on the tap spectrumd put in
// br-lan; a kill -9 of that QEMU brings it back on the same tap (same
// ifindex) and MAC; a stop removes the tap and leaves br-lan and lan0 as
// they were.
func TestUplinkQEMU(t *testing.T) {
	requireQEMU(t)
	ns := nstest.New(t)
	ns.IP("link", "add", "br-lan", "type", "bridge")
	ns.AddTap("lan0", "02:00:00:00:00:10")
	ns.IP("link", "set", "lan0", "master", "br-lan", "up")
	ns.IP("link", "set", "br-lan", "up")
	ns.IP("addr", "add", "192.0.2.1/24", "dev", "br-lan")
	lanBefore := ns.IP("-j", "-d", "addr", "show", "dev", "lan0")

	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	writeStubData(t, data)
	p := filepath.Join(data, "net", "uplinks", "net", "br-lan")
	os.MkdirAll(filepath.Dir(p), 0o755)
	if err := os.WriteFile(p, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	m := mac.DeriveUplink("net", "br-lan")
	tap := link.UplinkTapName(m)
	state, run, logPath := filepath.Join(dir, "state"), filepath.Join(dir, "run"), filepath.Join(dir, "spectrumd.log")
	srv := startServe(t, ns, logPath, "-data", data, "-state", state, "-run", run, "-accel", "tcg", "-memory", "64",
		"-stop-timeout", "500ms", "-start", "app")
	st := srv.waitRunning(t, "net", "app")
	if diff := cmp.Diff([]control.UplinkStatus{{Iface: "br-lan", MAC: m.String()}}, st["net"].Uplinks); diff != "" {
		srv.fail(t, "status of net: uplinks (-want +got):\n%s", diff)
	}
	// net started before app: its link NIC was hot-plugged, so its
	// command line has the uplink only.
	want := []string{"virtio-net-pci,netdev=uplink0,id=uplink0,mac=" + m.String() + ",romfile=,bus=nics0,addr=0x0"}
	if diff := cmp.Diff(want, qemuNetDevices(t, st["net"].PID)); diff != "" {
		srv.fail(t, "net's QEMU NICs (-want +got):\n%s", diff)
	}
	port := waitPort(t, srv, ns, tap)
	// br-lan carries the host's 192.0.2.1: serve says net is its LAN peer.
	if b, _ := os.ReadFile(logPath); !strings.Contains(string(b), "level=WARN msg=\"uplink: host bridge br-lan has the host's address 192.0.2.1/24") {
		srv.fail(t, "no warning that br-lan carries the host's address")
	}

	// kill -9: relaunched on the same tap, now with app's link NIC
	// cold-plugged before the uplink.
	if err := syscall.Kill(st["net"].PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(60 * time.Second)
	var again control.VMStatus
	for {
		again = srv.waitRunning(t, "net")["net"]
		if again.PID != st["net"].PID {
			break
		}
		if time.Now().After(deadline) {
			srv.fail(t, "net was not relaunched after kill -9")
		}
		time.Sleep(50 * time.Millisecond)
	}
	linkMAC := st["net"].Links[0].MAC
	want = []string{
		"virtio-net-pci,netdev=" + "net" + strings.ReplaceAll(st["net"].Links[0].ID, ":", "") + ",id=net" + strings.ReplaceAll(st["net"].Links[0].ID, ":", "") + ",mac=" + linkMAC + ",romfile=,bus=nics0,addr=0x0",
		"virtio-net-pci,netdev=uplink0,id=uplink0,mac=" + m.String() + ",romfile=,bus=nics0,addr=0x1",
	}
	if diff := cmp.Diff(want, qemuNetDevices(t, again.PID)); diff != "" {
		srv.fail(t, "relaunched QEMU's NICs (-want +got):\n%s", diff)
	}
	if got := waitPort(t, srv, ns, tap); got.Ifindex != port.Ifindex {
		srv.fail(t, "tap %s is ifindex %d after the restart, %d before: not the same tap", tap, got.Ifindex, port.Ifindex)
	}

	if r, err := srv.ask(control.Request{Op: "stop", Name: "net"}); err != nil || !r.OK {
		srv.fail(t, "stop net: %+v, %v", r, err)
	}
	if _, ok := readUplinkPort(t, ns, tap); ok {
		srv.fail(t, "tap %s still there after net stopped", tap)
	}
	if got := ns.IP("-j", "-d", "addr", "show", "dev", "lan0"); string(got) != string(lanBefore) {
		t.Errorf("lan0 changed:\nbefore %s\nafter  %s", lanBefore, got)
	}
	var addrs []struct {
		AddrInfo []struct {
			Local string `json:"local"`
		} `json:"addr_info"`
	}
	json.Unmarshal(ns.IP("-j", "-4", "addr", "show", "dev", "br-lan"), &addrs)
	if len(addrs) != 1 || len(addrs[0].AddrInfo) != 1 || addrs[0].AddrInfo[0].Local != "192.0.2.1" {
		t.Errorf("br-lan's addresses after: %+v", addrs)
	}
	srv.cmd.Process.Signal(syscall.SIGTERM)
	if err := srv.cmd.Wait(); err != nil {
		srv.fail(t, "spectrumd exit: %v", err)
	}
}

// waitPort waits until tap is a forwarding port of br-lan with QEMU on it.
func waitPort(t *testing.T, srv *serveProc, ns *nstest.NS, tap string) uplinkPort {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		p, ok := readUplinkPort(t, ns, tap)
		if ok && p.Master == "br-lan" && p.Carrier && p.State == "forwarding" {
			return p
		}
		if time.Now().After(deadline) {
			srv.fail(t, "tap %s: %+v (present %v), want a forwarding port of br-lan with carrier", tap, p, ok)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
