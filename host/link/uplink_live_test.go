package link

import (
	"crypto/rand"
	"encoding/json"
	"errors"
	"net"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"spectrum-os.org/netcfg/internal/mac"
	"spectrum-os.org/netcfg/internal/nstest"
)

// The user's LAN in these tests: a bridge br-lan in the test's namespace
// with the host's address on it and one port, lan0, a tap standing for the
// host's NIC (a tap with no reader never has carrier, so nothing is sent).

// hostView is everything of the namespace an uplink must not change: each
// interface but the uplink's tap as ip -d shows it (timers and carrier left
// out), every address, and every forwarding entry but the tap's own.
type hostView struct {
	Links []map[string]any
	Addrs []string
	FDB   []string
}

func viewHost(t *testing.T, ns *nstest.NS, tap string) hostView {
	t.Helper()
	var links []map[string]any
	if err := json.Unmarshal(ns.IP("-j", "-d", "link", "show"), &links); err != nil {
		t.Fatal(err)
	}
	var v hostView
	keep := func(m any, keys ...string) map[string]any {
		out := map[string]any{}
		mm, _ := m.(map[string]any)
		for _, k := range keys {
			if x, ok := mm[k]; ok {
				out[k] = x
			}
		}
		return out
	}
	for _, l := range links {
		if l["ifname"] == tap {
			continue
		}
		info, _ := l["linkinfo"].(map[string]any)
		// Carrier left out: the bridge has it while any port has (the
		// uplink's, while QEMU holds the tap), and the kernel updates it
		// a moment later.
		e := keep(l, "ifname", "address", "mtu", "master", "inet6_addr_gen_mode")
		var flags []string
		for _, f := range l["flags"].([]any) {
			if f != "NO-CARRIER" && f != "LOWER_UP" {
				flags = append(flags, f.(string))
			}
		}
		e["flags"] = flags
		e["data"] = keep(info["info_data"], "bridge_id", "root_id", "stp_state", "vlan_filtering")
		e["port"] = keep(info["info_slave_data"], "state", "learning", "locked", "flood", "bridge_id", "root_id")
		v.Links = append(v.Links, e)
	}
	var addrs []struct {
		Ifname   string `json:"ifname"`
		AddrInfo []struct {
			Local     string `json:"local"`
			Prefixlen int    `json:"prefixlen"`
		} `json:"addr_info"`
	}
	if err := json.Unmarshal(ns.IP("-j", "addr", "show"), &addrs); err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		for _, i := range a.AddrInfo {
			v.Addrs = append(v.Addrs, a.Ifname+" "+i.Local)
		}
	}
	for _, e := range bridgeFDB(t, ns, "br-lan") {
		if e.Ifname != tap {
			v.FDB = append(v.FDB, e.Ifname+" "+e.MAC+" "+e.State)
		}
	}
	slices.Sort(v.FDB)
	return v
}

type fdbEntry struct {
	MAC    string `json:"mac"`
	Ifname string `json:"ifname"`
	State  string `json:"state"`
}

func bridgeFDB(t *testing.T, ns *nstest.NS, br string) []fdbEntry {
	t.Helper()
	out, err := ns.Command(t.Context(), "bridge", "-j", "fdb", "show", "br", br).Output()
	if err != nil {
		t.Fatalf("bridge fdb show br %s: %v", br, err)
	}
	var fdb []fdbEntry
	if err := json.Unmarshal(out, &fdb); err != nil {
		t.Fatal(err)
	}
	return fdb
}

// lanBridge makes br-lan with the host's address 192.0.2.1/24 and port
// lan0 (MAC 02:00:00:00:00:10), both with the given MTU. lan0 is held open,
// as a NIC with its cable in: the bridge has carrier, and the link-local
// address that comes with it, before the test looks (so the uplink's own
// carrier changes nothing). The returned file reads what reaches the LAN.
func lanBridge(t *testing.T, n *Net, ns *nstest.NS, mtu string) *os.File {
	t.Helper()
	ns.IP("link", "add", "br-lan", "type", "bridge")
	// No duplicate address detection: the link-local address is final
	// at once. (Not under TestReadOnlyProcSys, which cannot write it;
	// there the test waits out the detection's second.)
	if out, err := ns.Command(t.Context(), "sysctl", "-w", "net.ipv6.conf.br-lan.accept_dad=0").CombinedOutput(); err != nil && os.Getenv(envReadOnly) == "" {
		t.Fatalf("%v: %s", err, out)
	}
	ns.AddTap("lan0", "02:00:00:00:00:10")
	ns.IP("link", "set", "lan0", "mtu", mtu, "master", "br-lan", "up")
	ns.IP("link", "set", "br-lan", "up")
	ns.IP("addr", "add", "192.0.2.1/24", "dev", "br-lan")
	lan, err := n.openTap("lan0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lan.Close() })
	deadline := time.Now().Add(10 * time.Second)
	for a := ""; !strings.Contains(a, "fe80::") || strings.Contains(a, "tentative"); a = string(ns.IP("-6", "addr", "show", "dev", "br-lan")) {
		if time.Now().After(deadline) {
			t.Fatal("br-lan has no link-local address 10 s after its port has carrier")
		}
		time.Sleep(20 * time.Millisecond)
	}
	return lan
}

// tapView is the uplink's tap as ip and bridge show it.
type tapView struct {
	Iface   iface
	Address string
}

func viewTap(t *testing.T, ns *nstest.NS, name string) []tapView {
	t.Helper()
	var out []tapView
	for _, i := range readBack(t, ns) {
		if i.Name != name {
			continue
		}
		var l []struct {
			Address string `json:"address"`
		}
		if err := json.Unmarshal(ns.IP("-j", "link", "show", name), &l); err != nil || len(l) != 1 {
			t.Fatalf("ip link show %s: %v", name, err)
		}
		out = append(out, tapView{Iface: i, Address: l[0].Address})
	}
	return out
}

func wantUplinkTap(m net.HardwareAddr, mtu int) []tapView {
	return []tapView{{
		Iface: iface{
			Name: UplinkTapName(m), Kind: "tun", Master: "br-lan", TunType: "tap",
			Up: true, VnetHdr: true, Persist: true, MTU: mtu, IPv6: "none",
			Locked: true, StaticMACs: []string{m.String()},
		},
		Address: uplinkTapMAC(m).String(),
	}}
}

// TestUplink: the tap joins the user's bridge as it should (applied twice),
// leaves it on delete (twice), and the bridge, its address, its other port
// and their forwarding entries are the same throughout. lan0's MTU 9000 is
// the bridge's: a tap joining with the default 1500 would lower it.
func TestUplink(t *testing.T) {
	n, ns := newNet(t)
	lanBridge(t, n, ns, "9000")
	m := mac.DeriveUplink("netvm", "br-lan")
	tap := UplinkTapName(m)
	before := viewHost(t, ns, tap)
	for i := range 2 {
		if err := n.CreateUplink("br-lan", m); err != nil {
			t.Fatalf("CreateUplink #%d: %v", i+1, err)
		}
		if diff := cmp.Diff(wantUplinkTap(m, 9000), viewTap(t, ns, tap)); diff != "" {
			t.Errorf("tap after CreateUplink #%d (-want +got):\n%s", i+1, diff)
		}
		if diff := cmp.Diff(before, viewHost(t, ns, tap)); diff != "" {
			t.Errorf("the host's bridge after CreateUplink #%d (-want +got):\n%s", i+1, diff)
		}
	}
	f, err := n.OpenUplink(m)
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	for i := range 2 {
		if err := n.DeleteUplink(m); err != nil {
			t.Fatalf("DeleteUplink #%d: %v", i+1, err)
		}
		if got := viewTap(t, ns, tap); len(got) != 0 {
			t.Errorf("tap after DeleteUplink #%d: %+v", i+1, got)
		}
		if diff := cmp.Diff(before, viewHost(t, ns, tap)); diff != "" {
			t.Errorf("the host's bridge after DeleteUplink #%d (-want +got):\n%s", i+1, diff)
		}
	}
	if _, err := n.OpenUplink(m); err == nil {
		t.Error("OpenUplink of a deleted uplink succeeded")
	}
}

// TestUplinkKeepsBridgeMAC: a bridge with no port of its own takes the
// lowest port's address; the uplink's tap must not give it its own (nor,
// leaving, all zeros).
func TestUplinkKeepsBridgeMAC(t *testing.T) {
	n, ns := newNet(t)
	ns.IP("link", "add", "br-lan", "type", "bridge")
	ns.IP("link", "set", "br-lan", "up")
	// And one whose port has a higher address than the tap's: the
	// kernel's choice would follow the tap.
	ns.IP("link", "add", "br-hi", "type", "bridge")
	ns.AddTap("lanhi", "fe:ff:ff:ff:ff:ff")
	ns.IP("link", "set", "lanhi", "master", "br-hi")
	brMAC := func(br string) string {
		var l []struct {
			Address string `json:"address"`
		}
		if err := json.Unmarshal(ns.IP("-j", "link", "show", br), &l); err != nil || len(l) != 1 {
			t.Fatalf("ip link show %s: %v", br, err)
		}
		return l[0].Address
	}
	for _, br := range []string{"br-lan", "br-hi"} {
		want := brMAC(br)
		m := mac.DeriveUplink("netvm", br)
		if err := n.CreateUplink(br, m); err != nil {
			t.Fatal(err)
		}
		if got := brMAC(br); got != want {
			t.Errorf("%s's MAC with the uplink %s, want %s", br, got, want)
		}
		if err := n.DeleteUplink(m); err != nil {
			t.Fatal(err)
		}
		if got := brMAC(br); got != want {
			t.Errorf("%s's MAC after the uplink left %s, want %s", br, got, want)
		}
	}
}

// TestUplinkRefuses: a missing interface, one that is not a bridge, one of
// spectrumd's own link bridges, and a MAC an uplink cannot have: each an
// error naming it, and no tap left behind.
func TestUplinkRefuses(t *testing.T) {
	n, ns := newNet(t)
	lanBridge(t, n, ns, "1500")
	ns.AddTap("eth1", "02:00:00:00:00:30")
	if err := n.Create(0x0001); err != nil {
		t.Fatal(err)
	}
	m := mac.DeriveUplink("netvm", "x")
	oui := mac.LinkID(0x0002).MAC(mac.Client)
	for _, tt := range []struct {
		name, br string
		mac      net.HardwareAddr
		msg      string
		is       error
	}{
		{"missing interface", "br-gone", m, "host bridge br-gone: no such interface", nil},
		{"not a bridge", "eth1", m, "host interface eth1 is a tuntap", ErrNotBridge},
		{"spectrumd's link bridge", "spbr-0001", m, "spbr-0001 is spectrumd's own interface", nil},
		{"a link MAC", "br-lan", oui, "0a:b3:ec:00:00:02: carries the inter-guest OUI", mac.ErrOUI},
		{"a multicast MAC", "br-lan", net.HardwareAddr{1, 0, 0x5e, 0, 0, 1}, "multicast", mac.ErrMulticast},
	} {
		t.Run(tt.name, func(t *testing.T) {
			before := readBack(t, ns)
			err := n.CreateUplink(tt.br, tt.mac)
			if err == nil || !strings.Contains(err.Error(), tt.msg) || tt.is != nil && !errors.Is(err, tt.is) {
				t.Fatalf("CreateUplink(%s, %s) = %v, want an error with %q", tt.br, tt.mac, err, tt.msg)
			}
			t.Log(err)
			if diff := cmp.Diff(before, readBack(t, ns)); diff != "" {
				t.Errorf("interfaces changed (-before +after):\n%s", diff)
			}
		})
	}
}

// TestUplinkRepairs: a tap taken off the bridge, learning again, unlocked,
// down, with another MTU: CreateUplink puts it back.
func TestUplinkRepairs(t *testing.T) {
	n, ns := newNet(t)
	lanBridge(t, n, ns, "1500")
	m := mac.DeriveUplink("netvm", "br-lan")
	if err := n.CreateUplink("br-lan", m); err != nil {
		t.Fatal(err)
	}
	tap := UplinkTapName(m)
	ns.IP("link", "set", tap, "type", "bridge_slave", "learning", "on", "locked", "off")
	ns.IP("link", "set", tap, "nomaster", "down", "mtu", "1400")
	if err := n.CreateUplink("br-lan", m); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(wantUplinkTap(m, 1500), viewTap(t, ns, tap)); diff != "" {
		t.Errorf("tap after repair (-want +got):\n%s", diff)
	}
}

// TestUplinkCannotForgeMAC writes frames into the uplink's tap, as the VM's
// QEMU would: with the VM's own MAC they reach the LAN (lan0), with another
// host's or a link's MAC they do not, and 20,000 frames with random source
// MACs leave the bridge's forwarding table as it was.
func TestUplinkCannotForgeMAC(t *testing.T) {
	n, ns := newNet(t)
	lan := lanBridge(t, n, ns, "1500")
	m := mac.DeriveUplink("netvm", "br-lan")
	if err := n.CreateUplink("br-lan", m); err != nil {
		t.Fatal(err)
	}
	vm, err := n.OpenUplink(m)
	if err != nil {
		t.Fatal(err)
	}
	defer vm.Close()
	deadline := time.Now().Add(5 * time.Second)
	for !received(t, lan, "warm-up", 100*time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("a frame with the VM's own MAC never reaches the LAN")
		}
		sendFrame(t, vm, m, "warm-up")
	}
	fdb := len(bridgeFDB(t, ns, "br-lan"))
	for _, tt := range []struct {
		name string
		src  net.HardwareAddr
		pass bool
	}{
		{"own MAC", m, true},
		{"the host NIC's MAC", net.HardwareAddr{2, 0, 0, 0, 0, 0x10}, false},
		{"another LAN host's MAC", net.HardwareAddr{2, 0, 0, 0, 0, 0x99}, false},
		{"a link's MAC", mac.LinkID(0xa546).MAC(mac.Client), false},
		{"the tap's own address", uplinkTapMAC(m), false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			payload := "spectrum-uplink-forge " + tt.src.String()
			sendFrame(t, vm, tt.src, payload)
			if got := received(t, lan, payload, 300*time.Millisecond); got != tt.pass {
				t.Errorf("frame from %s reached the LAN: %v, want %v", tt.src, got, tt.pass)
			}
		})
	}
	src := make(net.HardwareAddr, 6)
	for range 20000 {
		rand.Read(src)
		src[0] &^= 1
		sendFrame(t, vm, src, "flood")
	}
	if got := len(bridgeFDB(t, ns, "br-lan")); got != fdb {
		t.Errorf("%d forwarding entries after 20,000 frames with random source MACs, want %d as before", got, fdb)
	}
}

func TestCleanupUplinks(t *testing.T) {
	n, ns := newNet(t)
	lanBridge(t, n, ns, "1500")
	m := mac.DeriveUplink("netvm", "br-lan")
	if err := n.CreateUplink("br-lan", m); err != nil {
		t.Fatal(err)
	}
	ns.AddTap("spu0123", "") // our prefix, not our scheme: kept
	if err := n.Cleanup(nil); err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, i := range readBack(t, ns) {
		names = append(names, i.Name)
	}
	if diff := cmp.Diff([]string{"br-lan", "lan0", "spu0123"}, names); diff != "" {
		t.Errorf("left (-want +got):\n%s", diff)
	}
}
