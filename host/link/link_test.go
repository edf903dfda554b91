package link

import (
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"

	"spectrum-os.org/netcfg/internal/mac"
	"spectrum-os.org/netcfg/internal/nstest"
)

func TestNames(t *testing.T) {
	for _, tt := range []struct {
		id   mac.LinkID
		kind Kind
		want string
	}{
		{0xa546, Bridge, "spbr-a546"},
		{0xa546, ClientTap, "spc-a546"},
		{0xa546, ProviderTap, "spp-a546"},
		{0x0001, Bridge, "spbr-0001"},
		{0xfffe, ProviderTap, "spp-fffe"},
	} {
		got := Name(tt.id, tt.kind)
		if got != tt.want {
			t.Errorf("Name(%v, %d) = %q, want %q", tt.id, tt.kind, got, tt.want)
		}
		if len(got) > 15 {
			t.Errorf("%q is longer than IFNAMSIZ-1", got)
		}
		id, k, ok := ParseName(got)
		if !ok || id != tt.id || k != tt.kind {
			t.Errorf("ParseName(%q) = %v, %d, %v", got, id, k, ok)
		}
	}
	if TapName(0xa546, mac.Client) != "spc-a546" || TapName(0xa546, mac.Provider) != "spp-a546" {
		t.Error("TapName does not follow Name")
	}
	for _, name := range []string{"spbr-", "spbr-a54", "spbr-a5466", "spbr-A546", "spbr-0000", "spc-ffff", "spx-a546", "eth0", "spbr-zz46"} {
		if id, k, ok := ParseName(name); ok {
			t.Errorf("ParseName(%q) = %v, %d, true; want not ours", name, id, k)
		}
	}
}

// newNet opens a Net in a fresh namespace.
func newNet(t *testing.T) (*Net, *nstest.NS) {
	t.Helper()
	ns := nstest.New(t)
	n, err := OpenPath(ns.Path(), slog.New(slog.NewTextHandler(testWriter{t}, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	return n, ns
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) { w.t.Log(string(p)); return len(p), nil }

var _ io.Writer = testWriter{}

// iface is what the tests compare, read back with iproute2.
type iface struct {
	Name, Kind, Master, TunType string
	Up, PI, VnetHdr, Persist    bool
	Addrs                       int
	MTU                         int
	// IPv6 is "absent" when the interface has no IPv6 at all, else its
	// address generation mode ("none": no address made).
	IPv6       string
	Forwarding bool // IPv4 forwarding, as ip netconf reads it
	// Bridge port flags: each tap learns nothing and is locked to its
	// VM's MAC.
	Learning, Locked bool
	StaticMACs       []string // static forwarding entries on the port
}

// readBack lists every interface but lo in ns, as ip sees it.
func readBack(t *testing.T, ns *nstest.NS) []iface {
	t.Helper()
	var links []struct {
		Ifname   string   `json:"ifname"`
		Flags    []string `json:"flags"`
		Master   string   `json:"master"`
		MTU      int      `json:"mtu"`
		AddrGen  string   `json:"inet6_addr_gen_mode"`
		Linkinfo struct {
			InfoKind string `json:"info_kind"`
			InfoData struct {
				Type    string `json:"type"`
				PI      bool   `json:"pi"`
				VnetHdr bool   `json:"vnet_hdr"`
				Persist bool   `json:"persist"`
			} `json:"info_data"`
			InfoSlaveData struct {
				Learning bool `json:"learning"`
				Locked   bool `json:"locked"`
			} `json:"info_slave_data"`
		} `json:"linkinfo"`
	}
	if err := json.Unmarshal(ns.IP("-j", "-d", "link", "show"), &links); err != nil {
		t.Fatal(err)
	}
	var addrs []struct {
		Ifname   string            `json:"ifname"`
		AddrInfo []json.RawMessage `json:"addr_info"`
	}
	if err := json.Unmarshal(ns.IP("-j", "addr", "show"), &addrs); err != nil {
		t.Fatal(err)
	}
	var out []iface
	for _, l := range links {
		if l.Ifname == "lo" {
			continue
		}
		i := iface{
			Name: l.Ifname, Kind: l.Linkinfo.InfoKind, Master: l.Master,
			TunType: l.Linkinfo.InfoData.Type, PI: l.Linkinfo.InfoData.PI,
			VnetHdr: l.Linkinfo.InfoData.VnetHdr, Persist: l.Linkinfo.InfoData.Persist,
			Up:       slices.Contains(l.Flags, "UP"),
			MTU:      l.MTU,
			IPv6:     "absent",
			Learning: l.Linkinfo.InfoSlaveData.Learning, Locked: l.Linkinfo.InfoSlaveData.Locked,
		}
		var conf []struct {
			Family     string `json:"family"`
			Forwarding bool   `json:"forwarding"`
		}
		if err := json.Unmarshal(ns.IP("-j", "netconf", "show", "dev", l.Ifname), &conf); err != nil {
			t.Fatal(err)
		}
		for _, c := range conf {
			switch c.Family {
			case "inet":
				i.Forwarding = c.Forwarding
			case "inet6":
				i.IPv6 = l.AddrGen
			}
		}
		if l.Master != "" {
			var fdb []struct {
				MAC   string `json:"mac"`
				State string `json:"state"`
			}
			out, err := ns.Command(t.Context(), "bridge", "-j", "fdb", "show", "dev", l.Ifname).Output()
			if err != nil || json.Unmarshal(out, &fdb) != nil {
				t.Fatalf("bridge fdb show dev %s: %v\n%s", l.Ifname, err, out)
			}
			for _, e := range fdb {
				if e.State == "static" {
					i.StaticMACs = append(i.StaticMACs, e.MAC)
				}
			}
		}
		for _, a := range addrs {
			if a.Ifname == l.Ifname {
				i.Addrs = len(a.AddrInfo)
			}
		}
		out = append(out, i)
	}
	slices.SortFunc(out, func(a, b iface) int {
		if a.Name < b.Name {
			return -1
		}
		if a.Name > b.Name {
			return 1
		}
		return 0
	})
	return out
}

func wantLink(id mac.LinkID) []iface {
	br := Name(id, Bridge)
	tap := func(k Kind) iface {
		return iface{Name: Name(id, k), Kind: "tun", Master: br, TunType: "tap", Up: true, VnetHdr: true, Persist: true, MTU: 1500, IPv6: "none"}
	}
	client, provider := tap(ClientTap), tap(ProviderTap)
	client.Locked, client.StaticMACs = true, []string{id.MAC(mac.Client).String()}
	provider.Locked, provider.StaticMACs = true, []string{id.MAC(mac.Provider).String()}
	return []iface{{Name: br, Kind: "bridge", Up: true, MTU: 1279, IPv6: "absent"}, client, provider}
}

func sorted(ifs ...[]iface) []iface {
	var out []iface
	for _, i := range ifs {
		out = append(out, i...)
	}
	slices.SortFunc(out, func(a, b iface) int {
		if a.Name < b.Name {
			return -1
		}
		return 1
	})
	return out
}

func TestCreateDelete(t *testing.T) {
	n, ns := newNet(t)
	for i := range 2 { // applying twice changes nothing
		if err := n.Create(0xa546); err != nil {
			t.Fatalf("Create #%d: %v", i+1, err)
		}
		if diff := cmp.Diff(wantLink(0xa546), readBack(t, ns)); diff != "" {
			t.Fatalf("after Create #%d (-want +got):\n%s", i+1, diff)
		}
	}
	if err := n.Create(0x0001); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(sorted(wantLink(0xa546), wantLink(0x0001)), readBack(t, ns)); diff != "" {
		t.Fatalf("two links (-want +got):\n%s", diff)
	}
	for i := range 2 {
		if err := n.Delete(0xa546); err != nil {
			t.Fatalf("Delete #%d: %v", i+1, err)
		}
		if diff := cmp.Diff(wantLink(0x0001), readBack(t, ns)); diff != "" {
			t.Fatalf("after Delete #%d (-want +got):\n%s", i+1, diff)
		}
	}
}

// Create repairs what drifted: a host address, IPv6 addresses generated
// again, the bridge's MTU back to IPv6's, forwarding on, a tap taken off
// the bridge and down.
func TestCreateRepairs(t *testing.T) {
	n, ns := newNet(t)
	if err := n.Create(0x0102); err != nil {
		t.Fatal(err)
	}
	ns.IP("addr", "add", "192.0.2.1/24", "dev", "spbr-0102")
	ns.IP("link", "set", "spbr-0102", "mtu", "1500")
	ns.IP("link", "set", "spc-0102", "nomaster")
	ns.IP("link", "set", "spp-0102", "down")
	ns.IP("link", "set", "spp-0102", "addrgenmode", "eui64")
	if out, err := ns.Command(t.Context(), "sysctl", "-w", "net.ipv4.conf.spc-0102.forwarding=1").CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if err := n.Create(0x0102); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(wantLink(0x0102), readBack(t, ns)); diff != "" {
		t.Fatalf("after repair (-want +got):\n%s", diff)
	}
}

func TestCreateRefusesForeignType(t *testing.T) {
	n, ns := newNet(t)
	ns.AddTap("spbr-0003", "")
	if err := n.Create(0x0003); err == nil {
		t.Fatal("Create over a tap named like our bridge succeeded")
	}
	if err := n.Create(0); err == nil {
		t.Fatal("Create(0) succeeded")
	}
}

func TestCleanup(t *testing.T) {
	n, ns := newNet(t)
	for _, id := range []mac.LinkID{1, 2, 3} {
		if err := n.Create(id); err != nil {
			t.Fatal(err)
		}
	}
	ns.AddTap("spbr-zzzz", "") // our prefix, not our scheme: kept
	ns.AddTap("other0", "")
	for range 2 {
		if err := n.Cleanup(map[mac.LinkID]bool{2: true}); err != nil {
			t.Fatal(err)
		}
	}
	var names []string
	for _, i := range readBack(t, ns) {
		names = append(names, i.Name)
	}
	if diff := cmp.Diff([]string{"other0", "spbr-0002", "spbr-zzzz", "spc-0002", "spp-0002"}, names); diff != "" {
		t.Errorf("left (-want +got):\n%s", diff)
	}
}

func TestOpenTap(t *testing.T) {
	n, ns := newNet(t)
	if err := n.Create(0xa546); err != nil {
		t.Fatal(err)
	}
	f, err := n.OpenTap(0xa546, mac.Client)
	if err != nil {
		t.Fatal(err)
	}
	// Attached: the tap has carrier now (a tap without a reader has none).
	var l []struct {
		Flags []string `json:"flags"`
	}
	if err := json.Unmarshal(ns.IP("-j", "link", "show", "spc-a546"), &l); err != nil {
		t.Fatal(err)
	}
	if len(l) != 1 || !slices.Contains(l[0].Flags, "LOWER_UP") {
		t.Errorf("spc-a546 after OpenTap: flags %v, want LOWER_UP", l)
	}
	f.Close()
	// A tap that does not exist is not created by accident.
	if _, err := n.OpenTap(0x0777, mac.Client); err == nil {
		t.Error("OpenTap of a missing tap succeeded")
	}
	if diff := cmp.Diff(wantLink(0xa546), readBack(t, ns)); diff != "" {
		t.Errorf("after OpenTap of a missing tap (-want +got):\n%s", diff)
	}
}

// FuzzParseName: whatever ParseName accepts, Name produces again exactly,
// and fits in an interface name.
func FuzzParseName(f *testing.F) {
	for _, s := range []string{"spbr-a546", "spc-0001", "spp-fffe", "spbr-0000", "spc-FFFF", "eth0", "spp-a5:4"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		id, k, ok := ParseName(s)
		if !ok {
			return
		}
		if got := Name(id, k); got != s {
			t.Errorf("ParseName(%q) = %v, %d; Name gives %q", s, id, k, got)
		}
		if len(s) > 15 || id.Valid() != nil {
			t.Errorf("ParseName accepted %q (id %v)", s, id)
		}
	})
}

func TestUplinkTapNames(t *testing.T) {
	for _, m := range []string{"02:a1:b2:c3:d4:e5", "3e:53:19:79:9f:e9", "00:00:00:00:00:01"} {
		hw, _ := mac.Parse(m)
		name := UplinkTapName(hw)
		if len(name) != 15 {
			t.Errorf("%q: %d bytes, want 15", name, len(name))
		}
		back, ok := ParseUplinkTapName(name)
		if !ok || back.String() != m {
			t.Errorf("ParseUplinkTapName(%q) = %v, %v", name, back, ok)
		}
		if _, _, ok := ParseName(name); ok || !IsOurs(name) {
			t.Errorf("%q: taken for a link's name, or not ours", name)
		}
	}
	if got := UplinkTapName(net.HardwareAddr{2, 0xa1, 0xb2, 0xc3, 0xd4, 0xe5}); got != "spu02a1b2c3d4e5" {
		t.Errorf("UplinkTapName = %q", got)
	}
	for _, name := range []string{"spu", "spu02a1b2c3d4e", "spu02a1b2c3d4e5f", "spu02A1B2C3D4E5", "spu-2a1b2c3d4e5", "spuzza1b2c3d4e5", "br0", "eth0", "spbr-zzzz"} {
		if _, ok := ParseUplinkTapName(name); ok || IsOurs(name) {
			t.Errorf("%q taken for ours", name)
		}
	}
	for _, name := range []string{"spbr-a546", "spc-0001", "spp-fffe"} {
		if !IsOurs(name) {
			t.Errorf("%q not taken for ours", name)
		}
	}
}
