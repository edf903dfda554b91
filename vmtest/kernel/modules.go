package kernel

import (
	"bufio"
	"bytes"
	"debug/elf"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// GuestModules are the drivers a test guest needs: its NICs, its disks,
// its virtio console, and packet sockets (the DHCP client's on an uplink).
// Their dependencies are added by Modules.
var GuestModules = []string{"virtio_pci", "virtio_net", "virtio_blk", "virtio_console", "af_packet"}

// RouterModules are what a provider's router (spectrum-router)
// needs from the kernel: nf_tables with the expressions its
// ruleset uses beyond the built-in ones (conntrack state, NAT chains,
// masquerade and DNAT, reject, fib for reverse-path checks, the per-link
// limits: limit and ct count), conntrack
// with IPv4 and IPv6 defragmentation, and ctnetlink, through which it
// flushes a link's conntrack entries. Loading them does nothing until a
// ruleset uses them, so every test guest carries them.
var RouterModules = []string{"nf_tables", "nf_conntrack", "nf_defrag_ipv4", "nf_defrag_ipv6", "nf_nat",
	"nft_ct", "nft_chain_nat", "nft_nat", "nft_masq", "nft_reject_inet", "nft_fib_inet",
	"nft_limit", "nft_connlimit", "nft_redir", "nfnetlink", "nf_conntrack_netlink"}

// PowerModules let a test guest see the ACPI power button (QEMU's
// system_powerdown, which spectrumd sends to stop a VM) as a key press, so
// its init powers off at once. They are optional: without them a stop waits
// for spectrumd's stop timeout.
var PowerModules = []string{"button", "evdev"}

// Module is one kernel module to load in the guest.
type Module struct {
	Name string // as the kernel knows it, with underscores: "virtio_net"
	Path string // the .ko file on the host, possibly compressed
}

// Modules resolves names and their dependencies in the module tree dir
// (a /lib/modules/VERSION directory) and returns them in load order:
// every module after the modules it depends on. The dependencies come from
// each module's own .modinfo, so the tree needs no modules.dep (Debian's
// kernel packages leave running depmod to the postinst). Names built into
// the kernel (listed in modules.builtin) are skipped. An empty dir means
// every driver is built in and returns nothing.
func Modules(dir string, names ...string) ([]Module, error) {
	if dir == "" {
		return nil, nil
	}
	// The cached tree is reached through a symlink, which WalkDir would
	// not enter.
	dir, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return nil, err
	}
	paths := map[string]string{} // module name -> file
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if n, ok := moduleName(d.Name()); ok && !d.IsDir() {
			paths[n] = p
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	builtin, err := builtins(dir)
	if err != nil {
		return nil, err
	}
	var order []Module
	state := map[string]int{} // 1 visiting, 2 done
	var visit func(name, from string) error
	visit = func(name, from string) error {
		name = strings.ReplaceAll(name, "-", "_")
		switch state[name] {
		case 1:
			return fmt.Errorf("module dependency cycle at %s", name)
		case 2:
			return nil
		}
		state[name] = 1
		p, ok := paths[name]
		if !ok {
			if builtin[name] {
				state[name] = 2
				return nil
			}
			if from != "" {
				return fmt.Errorf("module %s (needed by %s) not found in %s", name, from, dir)
			}
			return fmt.Errorf("module %s not found in %s and not built in", name, dir)
		}
		deps, err := depends(p)
		if err != nil {
			return err
		}
		for _, d := range deps {
			if err := visit(d, name); err != nil {
				return err
			}
		}
		state[name] = 2
		order = append(order, Module{Name: name, Path: p})
		return nil
	}
	for _, n := range names {
		if err := visit(n, ""); err != nil {
			return nil, err
		}
	}
	return order, nil
}

// moduleName returns the module name of a .ko, .ko.xz, .ko.zst or .ko.gz file.
func moduleName(file string) (string, bool) {
	for _, ext := range []string{".ko", ".ko.xz", ".ko.zst", ".ko.gz"} {
		if strings.HasSuffix(file, ext) {
			return strings.ReplaceAll(strings.TrimSuffix(file, ext), "-", "_"), true
		}
	}
	return "", false
}

func builtins(dir string) (map[string]bool, error) {
	m := map[string]bool{}
	f, err := os.Open(filepath.Join(dir, "modules.builtin"))
	if os.IsNotExist(err) {
		return m, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if n, ok := moduleName(filepath.Base(s.Text())); ok {
			m[n] = true
		}
	}
	return m, s.Err()
}

// ReadModule returns the uncompressed contents of a module file. Go's
// standard library has no xz or zstd, so compressed modules go through the
// xz and zstd tools (scripts/deps.sh installs them).
func ReadModule(path string) ([]byte, error) {
	var tool string
	switch {
	case strings.HasSuffix(path, ".ko"):
		return os.ReadFile(path)
	case strings.HasSuffix(path, ".xz"):
		tool = "xz"
	case strings.HasSuffix(path, ".zst"):
		tool = "zstd"
	case strings.HasSuffix(path, ".gz"):
		tool = "gzip"
	default:
		return nil, fmt.Errorf("%s: not a kernel module", path)
	}
	var stderr bytes.Buffer
	cmd := exec.Command(tool, "-dc", path)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("%s -dc %s: %w: %s", tool, path, err, bytes.TrimSpace(stderr.Bytes()))
	}
	return out, nil
}

// depends reads the "depends=" entry of a module's .modinfo section.
func depends(path string) ([]string, error) {
	b, err := ReadModule(path)
	if err != nil {
		return nil, err
	}
	f, err := elf.NewFile(bytes.NewReader(b))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	sec := f.Section(".modinfo")
	if sec == nil {
		return nil, fmt.Errorf("%s: no .modinfo section", path)
	}
	info, err := sec.Data()
	if err != nil {
		return nil, fmt.Errorf("%s: read .modinfo: %w", path, err)
	}
	for _, kv := range bytes.Split(info, []byte{0}) {
		if v, ok := bytes.CutPrefix(kv, []byte("depends=")); ok {
			if len(v) == 0 {
				return nil, nil
			}
			return strings.Split(string(v), ","), nil
		}
	}
	return nil, nil
}
