package config

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/google/go-cmp/cmp"

	"spectrum-os.org/netcfg/internal/printable"
	"spectrum-os.org/netcfg/internal/testenv"
)

func TestLoadValid(t *testing.T) {
	for _, tt := range []struct {
		name  string
		tree  tree
		order []string
		check func(t *testing.T, cfg *Config, dir string)
	}{
		{
			name:  "documented appvm-lynx example",
			tree:  tree{}.vm("appvm-lynx", "netvm").vm("netvm"),
			order: []string{"netvm", "appvm-lynx"},
			check: func(t *testing.T, cfg *Config, dir string) {
				vm := cfg.VMs["appvm-lynx"]
				want := &VM{
					Name:      "appvm-lynx",
					Dir:       filepath.Join(dir, "appvm-lynx"),
					Kernel:    filepath.Join(dir, "appvm-lynx", "vmlinux"),
					Images:    []string{filepath.Join(dir, "appvm-lynx", "blk", "root.img")},
					Providers: []string{"netvm"},
				}
				if diff := cmp.Diff(want, vm); diff != "" {
					t.Errorf("appvm-lynx (-want +got):\n%s", diff)
				}
				if got := cfg.Clients("netvm"); !cmp.Equal(got, []string{"appvm-lynx"}) {
					t.Errorf("Clients(netvm) = %v", got)
				}
			},
		},
		{
			name:  "chain",
			tree:  tree{}.vm("app", "vpn").vm("vpn", "net").vm("net"),
			order: []string{"net", "vpn", "app"},
		},
		{
			name:  "several providers and clients",
			tree:  tree{}.vm("a", "z", "y").vm("b", "y").vm("y").vm("z", "y").vm("c"),
			order: []string{"y", "z", "a", "b", "c"},
		},
		{
			name: "images sorted; other files ignored; extensions",
			tree: tree{}.vm("v").add(tree{
				"v/blk/b.img":     "x",
				"v/blk/a.img":     "x",
				"v/blk/notes.txt": "x",
				"v/blk/sub":       "DIR",
				"v/initramfs":     "cpio",
				"v/cmdline":       "console=ttyS0 quiet\n",
				"v/unknown":       "ignored",
				"README":          "a file in the data directory is ignored",
			}),
			order: []string{"v"},
			check: func(t *testing.T, cfg *Config, dir string) {
				vm := cfg.VMs["v"]
				blk := filepath.Join(dir, "v", "blk")
				want := []string{filepath.Join(blk, "a.img"), filepath.Join(blk, "b.img"), filepath.Join(blk, "root.img")}
				if diff := cmp.Diff(want, vm.Images); diff != "" {
					t.Errorf("images (-want +got):\n%s", diff)
				}
				if vm.Initramfs != filepath.Join(dir, "v", "initramfs") || vm.Cmdline != "console=ttyS0 quiet" {
					t.Errorf("initramfs %q, cmdline %q", vm.Initramfs, vm.Cmdline)
				}
			},
		},
		{
			name: "symlinks inside the VM directory",
			tree: tree{
				"v/real/kernel":     "ELF",
				"v/vmlinux":         "-> real/kernel",
				"v/disks/root.img":  "x",
				"v/blk":             "-> disks",
				"v/blk/../x":        "",              // keeps disks' parent present
				"v/providers/net/n": "-> ../../../n", // never followed
			}.vm("n"),
			order: []string{"n", "v"},
			check: func(t *testing.T, cfg *Config, dir string) {
				vm := cfg.VMs["v"]
				if vm.Kernel != filepath.Join(dir, "v", "real", "kernel") {
					t.Errorf("kernel %q, want the symlink's target", vm.Kernel)
				}
				if !cmp.Equal(vm.Images, []string{filepath.Join(dir, "v", "disks", "root.img")}) {
					t.Errorf("images %q", vm.Images)
				}
			},
		},
		{
			name:  "VM directory is a symlink",
			tree:  tree{"v": "-> ../elsewhere/v"}.vm("../elsewhere/v"),
			order: []string{"v"},
		},
		{
			name:  "empty data directory",
			tree:  tree{},
			order: nil,
		},
		{
			name:  "equals sign and unicode in names are fine",
			tree:  tree{"v/blk/a=b.img": "x"}.vm("v").vm("ünï=1"),
			order: []string{"v", "ünï=1"},
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "data")
			tt.tree.build(t, dir)
			for range 2 { // loading twice gives the same result
				cfg := Load(dir)
				if len(cfg.Errors) != 0 {
					t.Fatalf("Load errors: %v", cfg.Errors)
				}
				if diff := cmp.Diff(tt.order, cfg.Order); diff != "" {
					t.Errorf("order (-want +got):\n%s", diff)
				}
				if len(cfg.VMs) != len(tt.order) {
					t.Errorf("%d VMs, want %d", len(cfg.VMs), len(tt.order))
				}
				if tt.check != nil {
					tt.check(t, cfg, dir)
				}
			}
		})
	}
}

func (tr tree) add(more tree) tree {
	for k, v := range more {
		tr[k] = v
	}
	return tr
}

func TestLoadRejects(t *testing.T) {
	for _, tt := range []struct {
		name    string
		tree    tree
		vm      string // the rejected VM
		path    string // the path at fault, relative to the data directory
		wantErr error
		msg     string // a substring of the message
		valid   []string
	}{
		{name: "missing vmlinux", tree: tree{"v/blk/a.img": "x"}, vm: "v", path: "v/vmlinux", wantErr: fs.ErrNotExist, msg: "missing"},
		{name: "vmlinux not ELF", tree: tree{}.vm("v").add(tree{"v/vmlinux": "MZ\x00\x00 a bzImage"}), vm: "v", path: "v/vmlinux", wantErr: ErrNotELF},
		{name: "vmlinux empty", tree: tree{}.vm("v").add(tree{"v/vmlinux": ""}), vm: "v", path: "v/vmlinux", wantErr: ErrNotELF},
		{name: "vmlinux truncated ELF", tree: tree{}.vm("v").add(tree{"v/vmlinux": "\x7fELF\x02\x01"}), vm: "v", path: "v/vmlinux", wantErr: ErrNotELF},
		{name: "vmlinux relocatable object", tree: tree{}.vm("v").add(tree{"v/vmlinux": "\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x01\x00"}), vm: "v", path: "v/vmlinux", wantErr: ErrNotELF, msg: "ET_REL"},
		{name: "vmlinux big-endian core", tree: tree{}.vm("v").add(tree{"v/vmlinux": "\x7fELF\x01\x02\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x04"}), vm: "v", path: "v/vmlinux", wantErr: ErrNotELF, msg: "ET_CORE"},
		{name: "vmlinux bad class", tree: tree{}.vm("v").add(tree{"v/vmlinux": "\x7fELF\x03\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00"}), vm: "v", path: "v/vmlinux", wantErr: ErrNotELF},
		{name: "vmlinux a FIFO", tree: tree{}.vm("v").add(tree{"v/vmlinux": "FIFO"}), vm: "v", path: "v/vmlinux", wantErr: ErrNotRegular},
		{name: "vmlinux a directory", tree: tree{"v/vmlinux": "DIR", "v/blk/a.img": "x"}, vm: "v", path: "v/vmlinux", wantErr: ErrNotRegular},
		{name: "vmlinux dangling symlink", tree: tree{}.vm("v").add(tree{"v/vmlinux": "-> nowhere"}), vm: "v", path: "v/vmlinux", wantErr: fs.ErrNotExist},
		{name: "no blk", tree: tree{"v/vmlinux": "ELF"}, vm: "v", path: "v/blk", wantErr: fs.ErrNotExist},
		{name: "blk a file", tree: tree{"v/vmlinux": "ELF", "v/blk": "x"}, vm: "v", path: "v/blk", wantErr: ErrNotDir},
		{name: "empty blk", tree: tree{"v/vmlinux": "ELF", "v/blk": "DIR"}, vm: "v", path: "v/blk", wantErr: ErrNoImages},
		{name: "no img in blk", tree: tree{"v/vmlinux": "ELF", "v/blk/root.raw": "x", "v/blk/img": "x"}, vm: "v", path: "v/blk", wantErr: ErrNoImages},
		{name: "img is a directory", tree: tree{}.vm("v").add(tree{"v/blk/d.img": "DIR"}), vm: "v", path: "v/blk/d.img", wantErr: ErrNotRegular},
		{name: "image name with comma", tree: tree{}.vm("v").add(tree{"v/blk/a,b.img": "x"}), vm: "v", path: "v/blk/a,b.img", wantErr: ErrName},
		{name: "image name with newline", tree: tree{}.vm("v").add(tree{"v/blk/a\nb.img": "x"}), vm: "v", path: "v/blk/a\nb.img", wantErr: ErrName},
		{name: "image name leading dot", tree: tree{}.vm("v").add(tree{"v/blk/.img": "x"}), vm: "v", path: "v/blk/.img", wantErr: ErrName},
		{name: "image name leading dash", tree: tree{}.vm("v").add(tree{"v/blk/-x.img": "x"}), vm: "v", path: "v/blk/-x.img", wantErr: ErrName},
		{name: "VM name with comma", tree: tree{}.vm("a,b"), vm: "a,b", path: "a,b", wantErr: ErrName},
		{name: "VM name with control", tree: tree{}.vm("a\tb"), vm: "a\tb", path: "a\tb", wantErr: ErrName},
		{name: "VM name with space", tree: tree{}.vm("a b"), vm: "a b", path: "a b", wantErr: ErrName},
		{name: "VM name leading dot", tree: tree{}.vm(".v"), vm: ".v", path: ".v", wantErr: ErrName},
		{name: "VM name leading dash", tree: tree{}.vm("-v"), vm: "-v", path: "-v", wantErr: ErrName},
		{name: "VM name not UTF-8", tree: tree{}.vm("v\xff"), vm: "v\xff", path: "v\xff", wantErr: ErrName},
		{name: "VM name with bidi override", tree: tree{}.vm("app\u202egnp.exe"), vm: "app\u202egnp.exe", path: "app\u202egnp.exe", wantErr: ErrName, msg: `app\u202egnp.exe`},
		{name: "VM name with zero-width space", tree: tree{}.vm("net\u200bvm"), vm: "net\u200bvm", path: "net\u200bvm", wantErr: ErrName},
		{name: "VM name with terminal escapes", tree: tree{}.vm("v\x1b]52;c;eA==\x07\x1b[2J"), vm: "v\x1b]52;c;eA==\x07\x1b[2J", path: "v\x1b]52;c;eA==\x07\x1b[2J", wantErr: ErrName, msg: `VM v\x1b]52;c;eA==\x07\x1b[2J: `},
		{name: "VM name with newline", tree: tree{}.vm("v\nspectrumd: fake"), vm: "v\nspectrumd: fake", path: "v\nspectrumd: fake", wantErr: ErrName, msg: `VM v\nspectrumd: fake: `},
		{name: "symlink out to a hostile target", tree: tree{}.vm("w").add(tree{"w/\x1b]2;x\x07\u202e": "ELF", "v/vmlinux": "-> ../w/\x1b]2;x\x07\u202e", "v/blk/a.img": "x"}), vm: "v", path: "v/vmlinux", wantErr: ErrEscape, msg: `(to ../w/\x1b]2;x\x07\u202e)`, valid: []string{"w"}},
		{name: "VM name overlong", tree: tree{}.vm(strings.Repeat("v", MaxName+1)), vm: strings.Repeat("v", MaxName+1), path: strings.Repeat("v", MaxName+1), wantErr: ErrName},
		{name: "VM name at the limit is fine", tree: tree{}.vm(strings.Repeat("v", MaxName)).vm("x").add(tree{"x/vmlinux": ""}), vm: "x", path: "x/vmlinux", wantErr: ErrNotELF, valid: []string{strings.Repeat("v", MaxName)}},
		{name: "VM symlink to a file", tree: tree{"f": "x", "v": "-> f"}, vm: "v", path: "v", wantErr: nil, msg: "not a directory"},
		{name: "VM symlink to another VM", tree: tree{"b": "-> a"}.vm("a"), vm: "b", path: "b", wantErr: ErrSharedDir, msg: "same directory as VM a", valid: []string{"a"}},
		{name: "two VM symlinks to one directory", tree: tree{"b": "-> ../x", "c": "-> ../x"}.vm("../x"), vm: "c", path: "c", wantErr: ErrSharedDir, msg: "same directory as VM b"},
		{name: "vmlinux symlink out", tree: tree{"outside": "ELF", "v/vmlinux": "-> ../outside", "v/blk/a.img": "x"}, vm: "v", path: "v/vmlinux", wantErr: ErrEscape, msg: "../outside"},
		{name: "vmlinux absolute symlink out", tree: tree{"v/vmlinux": "-> /proc/self/exe", "v/blk/a.img": "x"}, vm: "v", path: "v/vmlinux", wantErr: ErrEscape},
		{name: "vmlinux symlink into another VM", tree: tree{}.vm("w").add(tree{"v/vmlinux": "-> ../w/vmlinux", "v/blk/a.img": "x"}), vm: "v", path: "v/vmlinux", wantErr: ErrEscape, valid: []string{"w"}},
		{name: "image symlink out", tree: tree{"disk": "x"}.vm("v").add(tree{"v/blk/d.img": "-> ../../disk"}), vm: "v", path: "v/blk/d.img", wantErr: ErrEscape},
		{name: "blk symlink out", tree: tree{"disks/a.img": "x", "v/vmlinux": "ELF", "v/blk": "-> ../disks"}, vm: "v", path: "v/blk", wantErr: ErrEscape},
		{name: "providers symlink out", tree: tree{"p/net/x": ""}.vm("v").add(tree{"v/providers": "-> ../p"}), vm: "v", path: "v/providers", wantErr: ErrEscape},
		{name: "initramfs symlink out", tree: tree{"i": "x"}.vm("v").add(tree{"v/initramfs": "-> ../i"}), vm: "v", path: "v/initramfs", wantErr: ErrEscape},
		{name: "initramfs a directory", tree: tree{}.vm("v").add(tree{"v/initramfs": "DIR"}), vm: "v", path: "v/initramfs", wantErr: ErrNotRegular},
		{name: "cmdline two lines", tree: tree{}.vm("v").add(tree{"v/cmdline": "quiet\nro\n"}), vm: "v", path: "v/cmdline", wantErr: ErrCmdline, msg: "newline"},
		{name: "cmdline two newlines", tree: tree{}.vm("v").add(tree{"v/cmdline": "quiet\n\n"}), vm: "v", path: "v/cmdline", wantErr: ErrCmdline},
		{name: "cmdline NUL", tree: tree{}.vm("v").add(tree{"v/cmdline": "quiet\x00"}), vm: "v", path: "v/cmdline", wantErr: ErrCmdline},
		{name: "cmdline too long", tree: tree{}.vm("v").add(tree{"v/cmdline": strings.Repeat("x", MaxCmdline+1)}), vm: "v", path: "v/cmdline", wantErr: ErrCmdline, msg: "4096"},
		{name: "cmdline at the limit is fine", tree: tree{}.vm("v").add(tree{"v/cmdline": strings.Repeat("x", MaxCmdline)}).vm("x").add(tree{"x/vmlinux": ""}), vm: "x", path: "x/vmlinux", wantErr: ErrNotELF, valid: []string{"v"}},
		{name: "provider names no VM", tree: tree{}.vm("appvm-lynx", "netvm"), vm: "appvm-lynx", path: "appvm-lynx/providers/net/netvm", wantErr: ErrNoProvider, msg: `"netvm"`},
		{name: "provider names a plain file", tree: tree{"netvm": "x"}.vm("appvm-lynx", "netvm"), vm: "appvm-lynx", path: "appvm-lynx/providers/net/netvm", wantErr: ErrNoProvider},
		{name: "provider with a bad name", tree: tree{}.vm("v", "a,b"), vm: "v", path: "v/providers/net/a,b", wantErr: ErrName},
		{name: "providers/net a file", tree: tree{}.vm("v").add(tree{"v/providers/net": "x"}), vm: "v", path: "v/providers/net", wantErr: ErrNotDir},
		{name: "provides to itself", tree: tree{}.vm("v", "v"), vm: "v", path: "v/providers/net/v", wantErr: ErrSelfProvider},
		{name: "cycle of two", tree: tree{}.vm("a", "b").vm("b", "a"), vm: "a", path: "a/providers/net/b", wantErr: ErrCycle, msg: "a -> b -> a"},
		{name: "cycle named from each member", tree: tree{}.vm("a", "b").vm("b", "c").vm("c", "a"), vm: "c", path: "c/providers/net/a", wantErr: ErrCycle, msg: "c -> a -> b -> c"},
		{name: "client of a cycle", tree: tree{}.vm("a", "b").vm("b", "a").vm("z", "a").vm("ok"), vm: "z", path: "z/providers/net/a", wantErr: ErrProviderInvalid, valid: []string{"ok"}},
		{name: "provider invalid", tree: tree{}.vm("app", "net").add(tree{"net/blk/a.img": "x"}), vm: "app", path: "app/providers/net/net", wantErr: ErrProviderInvalid, msg: "net"},
		{name: "provider invalid down a chain", tree: tree{}.vm("app", "vpn").vm("vpn", "net").add(tree{"net/vmlinux": "ELF"}).vm("other", "vpn2").vm("vpn2"), vm: "app", path: "app/providers/net/vpn", wantErr: ErrProviderInvalid, valid: []string{"vpn2", "other"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "data")
			tt.tree.build(t, dir)
			cfg := Load(dir)
			var got *VMError
			for _, err := range cfg.Errors {
				var e *VMError
				if !errors.As(err, &e) {
					t.Fatalf("error %v is not a *VMError", err)
				}
				if e.VM == tt.vm {
					got = e
				}
			}
			if got == nil {
				t.Fatalf("no error for VM %q; errors: %v", tt.vm, cfg.Errors)
			}
			if tt.wantErr != nil && !errors.Is(got, tt.wantErr) {
				t.Errorf("error %v, want %v", got, tt.wantErr)
			}
			if want := filepath.Join(dir, filepath.FromSlash(tt.path)); got.Path != want {
				t.Errorf("error %v names %q, want %q", got, got.Path, want)
			}
			// The message names them escaped, as a terminal must show them.
			if msg := got.Error(); !strings.Contains(msg, tt.msg) || !strings.Contains(msg, printable.String(got.Path)) || !strings.Contains(msg, printable.String(tt.vm)) {
				t.Errorf("message %q does not name %q, the path and the VM", got.Error(), tt.msg)
			}
			if i := strings.IndexFunc(got.Error(), printable.Unsafe); i >= 0 {
				t.Errorf("message %q holds %q raw", got.Error(), []rune(got.Error()[i:])[0])
			}
			if _, ok := cfg.VMs[tt.vm]; ok {
				t.Errorf("rejected VM %q is in VMs", tt.vm)
			}
			if diff := cmp.Diff(tt.valid, cfg.Order); diff != "" {
				t.Errorf("valid VMs (-want +got):\n%s", diff)
			}
		})
	}
}

func TestLoadOneErrorPerVM(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	tree{}.vm("a", "b").vm("b", "a").vm("c", "a", "b", "missing").vm("d", "d").build(t, dir)
	cfg := Load(dir)
	var vms []string
	for _, err := range cfg.Errors {
		vms = append(vms, err.(*VMError).VM)
	}
	if diff := cmp.Diff([]string{"a", "b", "c", "d"}, vms); diff != "" {
		t.Errorf("rejected VMs (-want +got):\n%s\nerrors: %v", diff, cfg.Errors)
	}
}

func TestLoadMissingDataDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "nope")
	cfg := Load(dir)
	if len(cfg.Errors) != 1 || !errors.Is(cfg.Errors[0], fs.ErrNotExist) || cfg.Errors[0].(*VMError).Path != dir {
		t.Fatalf("errors %v, want one naming %s", cfg.Errors, dir)
	}
}

func TestLoadUnsafeDataDirPath(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a,b")
	tree{}.vm("v").build(t, dir)
	cfg := Load(dir)
	if len(cfg.Errors) != 1 || !errors.Is(cfg.Errors[0], ErrPath) {
		t.Fatalf("errors %v, want ErrPath", cfg.Errors)
	}
}

// TestLoadUnreadableKernel loads, as a user who cannot read it, a VM whose
// vmlinux has mode 0: one error, a permission error naming the file. Root
// reads any file, so the load runs in a helper process as uid 65534 (the
// test itself needs root to start it).
func TestLoadUnreadableKernel(t *testing.T) {
	testenv.Root(t, "to load as another user (root reads any file)")
	bin := testenv.SharedBinary(t)
	dir := filepath.Join(filepath.Dir(bin), "data")
	tree{}.vm("v").build(t, dir)
	kernel := filepath.Join(dir, "v", "vmlinux")
	if err := os.Chmod(kernel, 0); err != nil {
		t.Fatal(err)
	}
	if err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			err = os.Chmod(p, 0o755)
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	cmd := testenv.HelperCommandOf(context.Background(), bin, helperLoad, "SPECTRUM_LOAD_DIR="+dir)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("load as uid 65534: %v\n%s", err, out)
	}
	want := fmt.Sprintf("error permission=true: VM v: %s: open %s: permission denied\n", kernel, kernel)
	if diff := cmp.Diff(want, string(out)); diff != "" {
		t.Errorf("load as uid 65534 (-want +got):\n%s", diff)
	}
}

func TestMain(m *testing.M) {
	testenv.RunHelper(map[string]func() int{helperLoad: loadHelper})
	os.Exit(m.Run())
}

// helperLoad is TestLoadUnreadableKernel's helper process: it loads the
// data directory SPECTRUM_LOAD_DIR and prints one line per error, saying
// whether it is a permission error.
const helperLoad = "load"

func loadHelper() int {
	for _, err := range Load(os.Getenv("SPECTRUM_LOAD_DIR")).Errors {
		fmt.Printf("error permission=%t: %v\n", errors.Is(err, fs.ErrPermission), err)
	}
	return 0
}
