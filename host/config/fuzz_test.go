package config

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"spectrum-os.org/netcfg/internal/mac"
)

// fuzzNames are the VM names a fuzzed tree is built from: good ones and some
// that must be rejected.
var fuzzNames = []string{"a", "b", "c", "netvm", "appvm-lynx", "-x", ".h", "a,b", "x\ty", "ü"}

// fuzzImages are image file names, likewise.
var fuzzImages = []string{"root.img", "b.img", "x.raw", ".img", "a,b.img", "-c.img", "n\nl.img"}

// fuzzIfaces are uplink interface names, good and bad; fuzzMACs what an
// uplink file may hold. 3e:53:19:79:9f:e9 is netvm's derived MAC on br0,
// so an explicit MAC can collide with a derived one.
var (
	fuzzIfaces = []string{"br0", "br-lan", "spbr-a546", "br:0", "abcdefghijklmnop", ".x", "eth0"}
	fuzzMACs   = []string{"", "\n", "52:54:00:12:34:56\n", " 52-54-00-12-34-56 ", "0a:b3:ec:00:a5:46", "01:00:5e:00:00:01",
		"00:00:00:00:00:00", "zz", "3e:53:19:79:9f:e9", "52:54:00:12:34:56 52:54:00:12:34:57", "\x1b[2J"}
)

// buildFuzzTree turns b into a tree under data: each pair of bytes is one
// operation (what, argument) on one of the fuzzNames VMs.
func buildFuzzTree(data string, b []byte) {
	os.MkdirAll(data, 0o755)
	outside := filepath.Join(filepath.Dir(data), "outside")
	os.WriteFile(outside, minimalELF(), 0o644)
	for ; len(b) >= 2; b = b[2:] {
		op, arg := b[0], int(b[1])
		vm := filepath.Join(data, fuzzNames[arg%len(fuzzNames)])
		other := fuzzNames[(arg/len(fuzzNames))%len(fuzzNames)]
		img := fuzzImages[arg%len(fuzzImages)]
		write := func(rel string, body []byte) {
			p := filepath.Join(vm, rel)
			os.MkdirAll(filepath.Dir(p), 0o755)
			os.WriteFile(p, body, 0o644)
		}
		link := func(rel, target string) {
			p := filepath.Join(vm, rel)
			os.MkdirAll(filepath.Dir(p), 0o755)
			os.Symlink(target, p)
		}
		iface := fuzzIfaces[arg%len(fuzzIfaces)]
		switch op % 14 {
		case 0:
			write("vmlinux", minimalELF())
		case 1:
			write("vmlinux", bytes.Repeat([]byte{byte(arg)}, arg%70))
		case 2:
			write(filepath.Join("blk", img), []byte("x"))
		case 3:
			write(filepath.Join("providers", "net", other), nil)
		case 4:
			write(filepath.Join("real", "kernel"), minimalELF())
			link("vmlinux", filepath.Join("real", "kernel"))
		case 5:
			switch arg % 4 {
			case 0:
				link("vmlinux", outside)
			case 1:
				link(filepath.Join("blk", img), "../../../outside")
			case 2:
				link("blk", "..")
			case 3:
				link(filepath.Join("blk", img), "../vmlinux")
			}
		case 6:
			body := strings.Repeat("x", arg*20)
			if arg%3 == 0 {
				body += "\nsecond line"
			}
			write("cmdline", []byte(body+"\n"))
		case 7:
			if arg%2 == 0 {
				write("initramfs", []byte("cpio"))
			} else {
				os.MkdirAll(filepath.Join(vm, "initramfs"), 0o755)
			}
		case 8:
			if arg%2 == 0 {
				write("blk", []byte("x"))
			} else {
				os.MkdirAll(filepath.Join(vm, "vmlinux"), 0o755)
			}
		case 9:
			os.Symlink(other, vm) // a VM that is another VM's directory
		case 10:
			os.RemoveAll(vm)
		case 11:
			write(filepath.Join("providers", "net", other, "deeper"), nil)
		case 12:
			write(filepath.Join("uplinks", "net", iface), []byte(fuzzMACs[(arg/len(fuzzIfaces))%len(fuzzMACs)]))
		case 13:
			switch arg % 5 {
			case 0:
				write("uplinks", nil)
			case 1:
				link(filepath.Join("uplinks", "net"), "../..")
			case 2:
				os.MkdirAll(filepath.Join(vm, "uplinks", "net", iface), 0o755)
			case 3:
				link(filepath.Join("uplinks", "net", iface), filepath.Join("..", "..", "..", other, "uplinks", "net", "br0"))
			case 4:
				write(filepath.Join("macs", "m"), []byte(fuzzMACs[arg%len(fuzzMACs)]))
				link(filepath.Join("uplinks", "net", iface), "../../macs/m")
			}
		}
	}
}

func FuzzLoad(f *testing.F) {
	// appvm-lynx with netvm as provider: valid.
	f.Add([]byte{0, 3, 2, 3, 0, 4, 2, 4, 3, 34})
	// a <-> b cycle.
	f.Add([]byte{0, 0, 2, 0, 0, 1, 2, 1, 3, 10, 3, 1})
	// Symlinks in and out, a broken cmdline, a VM symlinked to another.
	f.Add([]byte{4, 0, 2, 0, 5, 1, 6, 3, 9, 11, 0, 2, 2, 2, 5, 2, 7, 1})
	// netvm (3) and appvm-lynx (4) on br0, derived; b (1) on br0 with
	// netvm's derived MAC: collides.
	f.Add([]byte{0, 3, 2, 3, 12, 3, 0, 4, 2, 4, 12, 4, 0, 1, 2, 1, 12, 57})
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) > 200 {
			return // a bigger tree finds nothing new, only slower
		}
		data := filepath.Join(t.TempDir(), "data")
		buildFuzzTree(data, b)
		cfg := Load(data)
		checkInvariants(t, data, cfg)
		if again := Load(data); !cmp.Equal(cfg, again, cmp.Comparer(func(a, b error) bool { return a.Error() == b.Error() })) {
			t.Errorf("two loads differ:\n%s", cmp.Diff(cfg, again, cmp.Comparer(func(a, b error) bool { return a.Error() == b.Error() })))
		}
	})
}

func checkInvariants(t *testing.T, data string, cfg *Config) {
	t.Helper()
	ents, _ := os.ReadDir(data)
	candidates := 0
	for _, e := range ents {
		if e.IsDir() || e.Type()&os.ModeSymlink != 0 {
			candidates++
		}
	}
	if len(cfg.VMs)+len(cfg.Errors) != candidates {
		t.Errorf("%d valid + %d errors for %d VM directories", len(cfg.VMs), len(cfg.Errors), candidates)
	}
	if len(cfg.Order) != len(cfg.VMs) {
		t.Errorf("order %v does not match VMs", cfg.Order)
	}
	rejected := map[string]bool{}
	for _, err := range cfg.Errors {
		var ve *VMError
		if !errors.As(err, &ve) {
			t.Fatalf("error %v is not a *VMError", err)
		}
		if ve.VM == "" || rejected[ve.VM] || !strings.HasPrefix(ve.Path, filepath.Join(data, ve.VM)) {
			t.Errorf("error %q: VM %q, path %q", err, ve.VM, ve.Path)
		}
		rejected[ve.VM] = true
	}
	dirs := map[string]string{}
	for name, vm := range cfg.VMs {
		if other, ok := dirs[vm.Dir]; ok {
			t.Errorf("%s and %s share %s", name, other, vm.Dir)
		}
		dirs[vm.Dir] = name
	}
	pos := map[string]int{}
	for i, name := range cfg.Order {
		pos[name] = i
	}
	macs := map[string]string{}
	for _, name := range cfg.Order {
		vm := cfg.VMs[name]
		switch {
		case vm == nil || vm.Name != name:
			t.Fatalf("order names %q, VMs has %+v", name, vm)
		case rejected[name]:
			t.Errorf("%s both valid and rejected", name)
		case checkName(name, MaxName) != nil:
			t.Errorf("unsafe name %q accepted", name)
		case len(vm.Images) == 0:
			t.Errorf("%s: no images", name)
		}
		under := func(p string) {
			if !within(vm.Dir, p) || p == vm.Dir || strings.ContainsAny(p, ",\n\t") {
				t.Errorf("%s: path %q outside %q or unsafe", name, p, vm.Dir)
			}
		}
		under(vm.Kernel)
		if h, err := os.ReadFile(vm.Kernel); err != nil || !bytes.HasPrefix(h, []byte("\x7fELF")) {
			t.Errorf("%s: kernel %s is not ELF (%v)", name, vm.Kernel, err)
		}
		for _, img := range vm.Images {
			under(img)
			if fi, err := os.Stat(img); err != nil || !fi.Mode().IsRegular() {
				t.Errorf("%s: image %s is not a regular file (%v)", name, img, err)
			}
		}
		if vm.Initramfs != "" {
			under(vm.Initramfs)
		}
		if strings.Contains(vm.Cmdline, "\n") || len(vm.Cmdline) > MaxCmdline {
			t.Errorf("%s: cmdline %q", name, vm.Cmdline)
		}
		for i, u := range vm.Uplinks {
			if checkIface(u.Iface) != nil || mac.CheckUplink(u.MAC) != nil || i > 0 && vm.Uplinks[i-1].Iface >= u.Iface {
				t.Errorf("%s: uplink %+v accepted", name, u)
			}
			if u.Derived && u.MAC.String() != mac.DeriveUplink(name, u.Iface).String() {
				t.Errorf("%s: derived uplink %+v, want MAC %s", name, u, mac.DeriveUplink(name, u.Iface))
			}
			if other, ok := macs[u.MAC.String()]; ok {
				t.Errorf("%s and %s both have uplink MAC %s", name, other, u.MAC)
			}
			macs[u.MAC.String()] = name
		}
		for _, p := range vm.Providers {
			if p == name {
				t.Errorf("%s provides to itself", name)
			}
			if i, ok := pos[p]; !ok || i >= pos[name] {
				t.Errorf("%s: provider %s not valid or not started first (order %v)", name, p, cfg.Order)
			}
		}
	}
}
