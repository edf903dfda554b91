package config

import (
	"errors"
	"io/fs"
	"net"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"spectrum-os.org/netcfg/host/vfio"
	"spectrum-os.org/netcfg/internal/mac"
	"spectrum-os.org/netcfg/internal/printable"
)

func hw(s string) net.HardwareAddr {
	m, err := mac.Parse(s)
	if err != nil {
		panic(err)
	}
	return m
}

func TestLoadUplinks(t *testing.T) {
	for _, tt := range []struct {
		name string
		tree tree
		want map[string][]Uplink
	}{
		{
			name: "derived and given MACs sorted by interface",
			tree: tree{
				"netvm/uplinks/net/br0":    "",
				"netvm/uplinks/net/br-lan": "52:54:00:12:34:56\n",
				"netvm/uplinks/net/wlan0":  " 02-00-00-00-00-01 \n",
				"netvm/uplinks/net/eth1":   "\n",
			}.vm("netvm"),
			want: map[string][]Uplink{"netvm": {
				{Iface: "br-lan", MAC: hw("52:54:00:12:34:56")},
				{Iface: "br0", MAC: hw("3e:53:19:79:9f:e9"), Derived: true},
				{Iface: "eth1", MAC: mac.DeriveUplink("netvm", "eth1"), Derived: true},
				{Iface: "wlan0", MAC: hw("02:00:00:00:00:01")},
			}},
		},
		{
			name: "two VMs on one bridge get MACs of their own",
			tree: tree{"a/uplinks/net/br0": "", "b/uplinks/net/br0": ""}.vm("a").vm("b"),
			want: map[string][]Uplink{
				"a": {{Iface: "br0", MAC: mac.DeriveUplink("a", "br0"), Derived: true}},
				"b": {{Iface: "br0", MAC: mac.DeriveUplink("b", "br0"), Derived: true}},
			},
		},
		{
			name: "symlinks inside the VM directory and uplinks without net",
			tree: tree{
				"a/macs/lan":          "52:54:00:00:00:0a",
				"a/up/net/br0":        "-> ../../macs/lan",
				"a/uplinks":           "-> up",
				"b/uplinks/README":    "no net here",
				"c/uplinks/net/ünï=0": "",
			}.vm("a").vm("b").vm("c"),
			want: map[string][]Uplink{
				"a": {{Iface: "br0", MAC: hw("52:54:00:00:00:0a")}},
				"b": nil,
				"c": {{Iface: "ünï=0", MAC: mac.DeriveUplink("c", "ünï=0"), Derived: true}},
			},
		},
		{
			name: "a globally administered MAC and the longest name",
			tree: tree{"a/uplinks/net/abcdefghijklmno": "3c:ec:ef:01:02:03"}.vm("a"),
			want: map[string][]Uplink{"a": {{Iface: "abcdefghijklmno", MAC: hw("3c:ec:ef:01:02:03")}}},
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "data")
			tt.tree.build(t, dir)
			l := NewLoader(dir)
			for i, load := range []func() *Config{func() *Config { return Load(dir) }, l.Load, l.Load} {
				cfg := load()
				if len(cfg.Errors) != 0 {
					t.Fatalf("load #%d: errors %v", i+1, cfg.Errors)
				}
				got := map[string][]Uplink{}
				for n, vm := range cfg.VMs {
					got[n] = vm.Uplinks
				}
				if diff := cmp.Diff(tt.want, got); diff != "" {
					t.Errorf("load #%d: uplinks (-want +got):\n%s", i+1, diff)
				}
			}
		})
	}
}

// rejectCase is a data directory in which one VM is rejected.
type rejectCase struct {
	name    string
	tree    tree
	vm      string // the rejected VM
	path    string // the path at fault, relative to the data directory
	wantErr []error
	msg     string // a substring of the message
	valid   []string
}

// run loads the case's tree three times (Load, a Loader twice) and checks
// the rejection each time.
func (tt rejectCase) run(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	tt.tree.build(t, dir)
	l := NewLoader(dir)
	for i, cfg := range []*Config{Load(dir), l.Load(), l.Load()} {
		var got *VMError
		for _, err := range cfg.Errors {
			if e := err.(*VMError); e.VM == tt.vm {
				got = e
			}
		}
		if got == nil {
			t.Fatalf("load #%d: no error for VM %q; errors: %v", i+1, tt.vm, cfg.Errors)
		}
		for _, want := range tt.wantErr {
			if !errors.Is(got, want) {
				t.Errorf("load #%d: error %v, want %v", i+1, got, want)
			}
		}
		if want := filepath.Join(dir, filepath.FromSlash(tt.path)); got.Path != want {
			t.Errorf("load #%d: error %v names %q, want %q", i+1, got, got.Path, want)
		}
		if !strings.Contains(got.Error(), tt.msg) || !strings.Contains(got.Error(), printable.String(got.Path)) {
			t.Errorf("load #%d: message %q does not name %q and the path", i+1, got.Error(), tt.msg)
		}
		if strings.ContainsAny(got.Err.Error(), "\x1b\n") {
			t.Errorf("load #%d: message %q echoes a control character", i+1, got.Err.Error())
		}
		if diff := cmp.Diff(tt.valid, cfg.Order); diff != "" {
			t.Errorf("load #%d: valid VMs (-want +got):\n%s", i+1, diff)
		}
	}
}

func TestLoadUplinksRejects(t *testing.T) {
	for _, tt := range []rejectCase{
		{name: "colon in the name", tree: tree{"v/uplinks/net/br:0": ""}.vm("v"), vm: "v", path: "v/uplinks/net/br:0", wantErr: []error{ErrIface}, msg: `holds ':'`},
		{name: "comma in the name", tree: tree{"v/uplinks/net/br,0": ""}.vm("v"), vm: "v", path: "v/uplinks/net/br,0", wantErr: []error{ErrIface}},
		{name: "space in the name", tree: tree{"v/uplinks/net/br 0": ""}.vm("v"), vm: "v", path: "v/uplinks/net/br 0", wantErr: []error{ErrIface}},
		{name: "name over 15 bytes", tree: tree{"v/uplinks/net/abcdefghijklmnop": ""}.vm("v"), vm: "v", path: "v/uplinks/net/abcdefghijklmnop", wantErr: []error{ErrIface}, msg: "16 bytes, at most 15"},
		{name: "leading dot", tree: tree{"v/uplinks/net/.br": ""}.vm("v"), vm: "v", path: "v/uplinks/net/.br", wantErr: []error{ErrIface}},
		{name: "leading dash", tree: tree{"v/uplinks/net/-br": ""}.vm("v"), vm: "v", path: "v/uplinks/net/-br", wantErr: []error{ErrIface}},
		{name: "not UTF-8", tree: tree{"v/uplinks/net/br\xff": ""}.vm("v"), vm: "v", path: "v/uplinks/net/br\xff", wantErr: []error{ErrIface}},
		{name: "a link's bridge", tree: tree{"v/uplinks/net/spbr-a546": ""}.vm("v"), vm: "v", path: "v/uplinks/net/spbr-a546", wantErr: []error{ErrIface}, msg: "spectrumd's own"},
		{name: "an uplink's tap", tree: tree{"v/uplinks/net/spu02a1b2c3d4e5": ""}.vm("v"), vm: "v", path: "v/uplinks/net/spu02a1b2c3d4e5", wantErr: []error{ErrIface}, msg: "spectrumd's own"},
		{name: "not a MAC", tree: tree{"v/uplinks/net/br0": "lan\n"}.vm("v"), vm: "v", path: "v/uplinks/net/br0", wantErr: []error{ErrMAC, mac.ErrSyntax}, msg: `lan`},
		{name: "two MACs", tree: tree{"v/uplinks/net/br0": "52:54:00:00:00:01\n52:54:00:00:00:02\n"}.vm("v"), vm: "v", path: "v/uplinks/net/br0", wantErr: []error{ErrMAC, mac.ErrSyntax}},
		{name: "a link's MAC", tree: tree{"v/uplinks/net/br0": "0A:B3:EC:00:A5:46"}.vm("v"), vm: "v", path: "v/uplinks/net/br0", wantErr: []error{ErrMAC, mac.ErrOUI}, msg: "0a:b3:ec:00:a5:46"},
		{name: "multicast MAC", tree: tree{"v/uplinks/net/br0": "01:00:5e:00:00:01"}.vm("v"), vm: "v", path: "v/uplinks/net/br0", wantErr: []error{ErrMAC, mac.ErrMulticast}},
		{name: "broadcast MAC", tree: tree{"v/uplinks/net/br0": "ff:ff:ff:ff:ff:ff"}.vm("v"), vm: "v", path: "v/uplinks/net/br0", wantErr: []error{ErrMAC, mac.ErrMulticast}},
		{name: "zero MAC", tree: tree{"v/uplinks/net/br0": "00:00:00:00:00:00"}.vm("v"), vm: "v", path: "v/uplinks/net/br0", wantErr: []error{ErrMAC, mac.ErrZero}},
		{name: "file over 64 bytes", tree: tree{"v/uplinks/net/br0": strings.Repeat(" ", 60) + "52:54:00:00:00:01"}.vm("v"), vm: "v", path: "v/uplinks/net/br0", wantErr: []error{ErrMAC}, msg: "over 64 bytes"},
		{name: "escape sequence not echoed", tree: tree{"v/uplinks/net/br0": "\x1b[2J"}.vm("v"), vm: "v", path: "v/uplinks/net/br0", wantErr: []error{ErrMAC, mac.ErrSyntax}, msg: `"\x1b[2J"`},
		{name: "uplinks a file", tree: tree{"v/uplinks": "x"}.vm("v"), vm: "v", path: "v/uplinks", wantErr: []error{ErrNotDir}},
		{name: "uplinks/net a file", tree: tree{"v/uplinks/net": "x"}.vm("v"), vm: "v", path: "v/uplinks/net", wantErr: []error{ErrNotDir}},
		{name: "uplink a directory", tree: tree{"v/uplinks/net/br0": "DIR"}.vm("v"), vm: "v", path: "v/uplinks/net/br0", wantErr: []error{ErrNotRegular}},
		{name: "uplink a FIFO", tree: tree{"v/uplinks/net/br0": "FIFO"}.vm("v"), vm: "v", path: "v/uplinks/net/br0", wantErr: []error{ErrNotRegular}},
		{name: "uplink symlink out", tree: tree{"mac": "52:54:00:00:00:01", "v/uplinks/net/br0": "-> ../../../mac"}.vm("v"), vm: "v", path: "v/uplinks/net/br0", wantErr: []error{ErrEscape}},
		{name: "uplinks symlink out", tree: tree{"up/net/br0": ""}.vm("v").add(tree{"v/uplinks": "-> ../up"}), vm: "v", path: "v/uplinks", wantErr: []error{ErrEscape}},
		{name: "uplink dangling symlink", tree: tree{"v/uplinks/net/br0": "-> nowhere"}.vm("v"), vm: "v", path: "v/uplinks/net/br0", wantErr: []error{fs.ErrNotExist}},
		{name: "one VM with one MAC twice", tree: tree{"v/uplinks/net/br0": "52:54:00:00:00:01", "v/uplinks/net/br1": "52:54:00:00:00:01\n"}.vm("v"), vm: "v", path: "v/uplinks/net/br1", wantErr: []error{ErrMACInUse}, msg: "uplinks/net/br0"},
		{
			name: "a second VM with the same MAC", tree: tree{"a/uplinks/net/br0": "52:54:00:00:00:01", "b/uplinks/net/br1": "52:54:00:00:00:01"}.vm("a").vm("b").vm("c"),
			vm: "b", path: "b/uplinks/net/br1", wantErr: []error{ErrMACInUse}, msg: "already VM a's, on br0", valid: []string{"a", "c"},
		},
		{
			// netvm's derived MAC on br0 is 3e:53:19:79:9f:e9: the same
			// check catches two derived MACs that collide.
			name: "a given MAC another VM's derived one", tree: tree{"netvm/uplinks/net/br0": "", "x/uplinks/net/lan": "3e:53:19:79:9f:e9"}.vm("netvm").vm("x"),
			vm: "x", path: "x/uplinks/net/lan", wantErr: []error{ErrMACInUse}, msg: "already VM netvm's, on br0", valid: []string{"netvm"},
		},
		{
			name: "the client of a VM rejected for its MAC", tree: tree{"a/uplinks/net/br0": "52:54:00:00:00:01", "b/uplinks/net/br0": "52:54:00:00:00:01"}.vm("a").vm("b").vm("app", "b"),
			vm: "app", path: "app/providers/net/b", wantErr: []error{ErrProviderInvalid}, valid: []string{"a"},
		},
	} {
		t.Run(tt.name, tt.run)
	}
}

func TestLoadPCI(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	tree{
		"netvm/uplinks/pci/0000:03:00.0": "",
		"netvm/uplinks/pci/0000:00:14.3": "\n",
		"netvm/uplinks/net/br0":          "",
		"b/pcis/0000:04:00.0":            "",
		"b/uplinks/pci":                  "-> ../pcis",
		"c/uplinks/net/br0":              "",
	}.vm("netvm").vm("b").vm("c").build(t, dir)
	l := NewLoader(dir)
	for i, cfg := range []*Config{Load(dir), l.Load(), l.Load()} {
		if len(cfg.Errors) != 0 {
			t.Fatalf("load #%d: errors %v", i+1, cfg.Errors)
		}
		got := map[string][]PCIUplink{}
		for n, vm := range cfg.VMs {
			got[n] = vm.PCI
		}
		want := map[string][]PCIUplink{
			"netvm": {{Addr: "0000:00:14.3"}, {Addr: "0000:03:00.0"}},
			"b":     {{Addr: "0000:04:00.0"}},
			"c":     nil,
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("load #%d: PCI uplinks (-want +got):\n%s", i+1, diff)
		}
		if len(cfg.VMs["netvm"].Uplinks) != 1 {
			t.Errorf("load #%d: netvm's uplinks/net lost: %v", i+1, cfg.VMs["netvm"].Uplinks)
		}
	}
}

func TestLoadPCIRejects(t *testing.T) {
	for _, tt := range []rejectCase{
		{name: "upper case", tree: tree{"v/uplinks/pci/0000:0A:00.0": ""}.vm("v"), vm: "v", path: "v/uplinks/pci/0000:0A:00.0", wantErr: []error{ErrPCIAddr, vfio.ErrAddr}},
		{name: "no domain", tree: tree{"v/uplinks/pci/03:00.0": ""}.vm("v"), vm: "v", path: "v/uplinks/pci/03:00.0", wantErr: []error{ErrPCIAddr, vfio.ErrAddr}, msg: "0000:03:00.0"},
		{name: "an interface name", tree: tree{"v/uplinks/pci/eth0": ""}.vm("v"), vm: "v", path: "v/uplinks/pci/eth0", wantErr: []error{ErrPCIAddr}},
		{name: "function 8", tree: tree{"v/uplinks/pci/0000:03:00.8": ""}.vm("v"), vm: "v", path: "v/uplinks/pci/0000:03:00.8", wantErr: []error{ErrPCIAddr}},
		{name: "not empty", tree: tree{"v/uplinks/pci/0000:03:00.0": "52:54:00:00:00:01"}.vm("v"), vm: "v", path: "v/uplinks/pci/0000:03:00.0", wantErr: []error{ErrPCIAddr}, msg: "empty"},
		{name: "a directory", tree: tree{"v/uplinks/pci/0000:03:00.0": "DIR"}.vm("v"), vm: "v", path: "v/uplinks/pci/0000:03:00.0", wantErr: []error{ErrNotRegular}},
		{name: "uplinks/pci a file", tree: tree{"v/uplinks/pci": "x"}.vm("v"), vm: "v", path: "v/uplinks/pci", wantErr: []error{ErrNotDir}},
		{name: "uplinks/pci symlink out", tree: tree{"pcis/0000:03:00.0": "", "v/uplinks/pci": "-> ../../pcis"}.vm("v"), vm: "v", path: "v/uplinks/pci", wantErr: []error{ErrEscape}},
		{
			name: "a device two VMs name", tree: tree{"a/uplinks/pci/0000:03:00.0": "", "b/uplinks/pci/0000:03:00.0": ""}.vm("a").vm("b").vm("c"),
			vm: "b", path: "b/uplinks/pci/0000:03:00.0", wantErr: []error{ErrPCIInUse}, msg: "VM a's", valid: []string{"a", "c"},
		},
	} {
		t.Run(tt.name, tt.run)
	}
}
