package config

import (
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestWarnings: every entry of a VM's directory that spectrumd does not use
// is named, with the known name it is nearest to when one is near, and the
// VM still loads (the reference documentation allows other files); a file
// in blk/ that is not *.img likewise. A VM that is invalid keeps the
// warnings found before its fault: the typo is often why.
func TestWarnings(t *testing.T) {
	const unused = "unknown entry, not used"
	const far = unused + " (spectrumd reads vmlinux, blk, initramfs, cmdline, providers, providers/net, uplinks, uplinks/net, uplinks/pci)"
	for _, tt := range []struct {
		name    string
		tree    tree // added to a valid VM v
		want    []Warning
		invalid bool // v is invalid all the same
	}{
		{name: "none", tree: tree{"v/initramfs": "x", "v/cmdline": "quiet", "v/providers/net/p": "", "v/uplinks/net/br0": ""}},
		{name: "provider/net for providers/net", tree: tree{"v/provider/net/p": ""},
			want: []Warning{{"v/provider/net", unused + ": did you mean providers/net?"}}},
		{name: "providers/nett", tree: tree{"v/providers/nett/p": ""},
			want: []Warning{{"v/providers/nett", unused + ": did you mean providers/net?"}}},
		{name: "uplink/net", tree: tree{"v/uplink/net/br0": ""},
			want: []Warning{{"v/uplink/net", unused + ": did you mean uplinks/net?"}}},
		{name: "uplinks/pcie", tree: tree{"v/uplinks/pcie/0000:03:00.0": ""},
			want: []Warning{{"v/uplinks/pcie", unused + ": did you mean uplinks/pci?"}}},
		{name: "vmlinuz beside vmlinux", tree: tree{"v/vmlinuz": "x"},
			want: []Warning{{"v/vmlinuz", unused + ": did you mean vmlinux?"}}},
		{name: "case", tree: tree{"v/CMDLINE": "quiet"},
			want: []Warning{{"v/CMDLINE", unused + ": did you mean cmdline?"}}},
		{name: "initramf", tree: tree{"v/initramf": "x"},
			want: []Warning{{"v/initramf", unused + ": did you mean initramfs?"}}},
		{name: "a directory near by its own name", tree: tree{"v/blok/x.img": "x"},
			want: []Warning{{"v/blok", unused + ": did you mean blk?"}}},
		{name: "nothing near", tree: tree{"v/README": "notes", "v/.git/HEAD": "x"},
			want: []Warning{{"v/.git", far}, {"v/README", far}}},
		{name: "a symlink is not followed", tree: tree{"v/provider": "-> /proc"},
			want: []Warning{{"v/provider", unused + ": did you mean providers?"}}},
		{name: "symlinks' targets inside are used", tree: tree{"v/vmlinux": "-> real/kernel", "v/real/kernel": "ELF",
			"v/blk/root.img": "-> ../images/root.img", "v/images/root.img": "x", "v/cmdline": "-> conf/cmdline", "v/conf/cmdline": "quiet"}},
		{name: "providers a symlink", tree: tree{"v/providers": "-> prov", "v/prov/net/p": ""}},
		{name: "invalid VM: its symlinks' targets are used", tree: tree{"v/vmlinux": "-> real/kernel", "v/real/kernel": "MZ"}, invalid: true},
		{name: "blk/disk.raw", tree: tree{"v/blk/disk.raw": "x", "v/blk/old": "DIR"},
			want: []Warning{{"v/blk/disk.raw", "not a *.img disk image, not given to the VM"}, {"v/blk/old", "not a *.img disk image, not given to the VM"}}},
		{name: "the escape in a name is shown escaped", tree: tree{"v/x\x1b[2J": ""},
			want: []Warning{{"v/x\x1b[2J", far}}},
		{name: "invalid VM keeps its warnings", tree: tree{"v/vmlinux": "MZ", "v/vmlinuz": "x"}, invalid: true,
			want: []Warning{{"v/vmlinuz", unused + ": did you mean vmlinux?"}}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			data := t.TempDir()
			tree{}.vm("v").add(tt.tree).vm("p").build(t, data)
			cfg := Load(data)
			for i := range tt.want {
				tt.want[i].Path = filepath.Join(data, tt.want[i].Path)
			}
			var got []Warning
			if tt.invalid {
				if len(cfg.Errors) != 1 {
					t.Fatalf("errors: %v", cfg.Errors)
				}
				got = cfg.Errors[0].(*VMError).Warnings
			} else {
				if cfg.VMs["v"] == nil {
					t.Fatalf("v is not valid: %v", cfg.Errors)
				}
				got = cfg.VMs["v"].Warnings
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("warnings (-want +got):\n%s", diff)
			}
			if cfg.VMs["p"].Warnings != nil {
				t.Errorf("p: %v", cfg.VMs["p"].Warnings)
			}
		})
	}
	w := Warning{Path: "d/v/x\x1b[2J", Msg: "m\u202e"}
	if got, want := w.String(), `d/v/x\x1b[2J: m\u202e`; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
}
