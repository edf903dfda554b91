package config

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// Load reads every VM directory under dataDir. Each entry of dataDir that is
// a directory, or a symlink (which must lead to a directory), is a VM named
// after the entry; other files are ignored. A VM is valid when its own
// directory is (see loadVM) and every provider it names is a valid VM and
// not on a provider cycle: a VM whose provider is invalid is itself invalid,
// because it could never start.
//
// Load never fails as a whole: the result holds the valid VMs and one
// *VMError per rejected VM (sorted by name), or a single *VMError with an
// empty VM when dataDir itself cannot be read.
func Load(dataDir string) *Config {
	cfg := &Config{VMs: map[string]*VM{}}
	abs, err := filepath.Abs(dataDir)
	if err == nil {
		abs, err = filepath.EvalSymlinks(abs)
	}
	var ents []fs.DirEntry
	if err == nil {
		ents, err = os.ReadDir(abs)
	}
	if err != nil {
		cfg.Errors = append(cfg.Errors, &VMError{Path: dataDir, Err: err})
		return cfg
	}
	l := &linker{
		dataDir: dataDir,
		exists:  map[string]bool{},
		vms:     map[string]*VM{},
		errs:    map[string]*VMError{},
		state:   map[string]visit{},
	}
	for _, e := range ents { // sorted by name
		if !e.IsDir() && e.Type()&fs.ModeSymlink == 0 {
			continue
		}
		name := e.Name()
		l.names = append(l.names, name)
		l.exists[name] = true
		vm, err := loadVM(dataDir, abs, name)
		if err != nil {
			l.errs[name] = err
			continue
		}
		l.vms[name] = vm
	}
	l.link()
	for _, name := range l.names {
		if err := l.errs[name]; err != nil {
			cfg.Errors = append(cfg.Errors, err)
		}
	}
	cfg.Order = l.order
	for _, name := range l.order {
		cfg.VMs[name] = l.vms[name]
	}
	return cfg
}

// loadVM reads and checks one VM's own directory, dataDir/name (abs is
// dataDir's real path): a readable ELF vmlinux, at least one blk/*.img,
// optional initramfs, cmdline and providers/net/*. Nothing it reads may be
// reached through a symlink that leads out of the VM's directory. It stops at
// the first fault. Whether the providers exist is for linker to check.
func loadVM(dataDir, abs, name string) (*VM, *VMError) {
	given := filepath.Join(dataDir, name)
	fail := func(rel string, err error) (*VM, *VMError) {
		return nil, &VMError{VM: name, Path: filepath.Join(given, rel), Err: err}
	}
	if err := checkName(name, MaxName); err != nil {
		return fail("", err)
	}
	root, err := filepath.EvalSymlinks(filepath.Join(abs, name))
	if err != nil {
		return fail("", err)
	}
	if err := checkPath(root); err != nil {
		return fail("", err)
	}
	ents, err := readDir(root)
	if err != nil {
		return fail("", err)
	}
	vm := &VM{Name: name, Dir: root}

	// entry resolves a required or optional entry of the VM's directory
	// (or of one of its subdirectories, dir), following a symlink only
	// inside the VM's directory.
	entry := func(dir string, ents map[string]fs.FileMode, n string) (string, fs.FileMode, bool, error) {
		typ, ok := ents[n]
		if !ok {
			return "", 0, false, nil
		}
		p, mode, err := follow(root, filepath.Join(dir, n), typ)
		return p, mode, true, err
	}

	p, _, ok, err := entry(root, ents, "vmlinux")
	if err == nil && !ok {
		err = fmt.Errorf("required kernel is missing: %w", fs.ErrNotExist)
	}
	if err == nil {
		err = checkELF(p)
	}
	if err == nil {
		err = checkPath(p)
	}
	if err != nil {
		return fail("vmlinux", err)
	}
	vm.Kernel = p

	blk, mode, ok, err := entry(root, ents, "blk")
	if err == nil && !ok {
		err = fmt.Errorf("required directory of *.img disk images is missing: %w", fs.ErrNotExist)
	}
	var imgs map[string]fs.FileMode
	if err == nil {
		imgs, err = readDirMode(blk, mode)
	}
	if err != nil {
		return fail("blk", err)
	}
	for _, n := range sortedKeys(imgs) {
		if !strings.HasSuffix(n, ".img") {
			continue
		}
		rel := filepath.Join("blk", n)
		if err := checkName(n, maxFileName); err != nil {
			return fail(rel, err)
		}
		p, mode, _, err := entry(blk, imgs, n)
		if err == nil && !mode.IsRegular() {
			err = fmt.Errorf("%w: %s", ErrNotRegular, kind(mode))
		}
		if err == nil {
			err = checkPath(p)
		}
		if err != nil {
			return fail(rel, err)
		}
		vm.Images = append(vm.Images, p)
	}
	if len(vm.Images) == 0 {
		return fail("blk", ErrNoImages)
	}

	p, mode, ok, err = entry(root, ents, "initramfs")
	if err == nil && ok && !mode.IsRegular() {
		err = fmt.Errorf("%w: %s", ErrNotRegular, kind(mode))
	}
	if err == nil && ok {
		err = checkPath(p)
	}
	if err != nil {
		return fail("initramfs", err)
	}
	vm.Initramfs = p

	p, mode, ok, err = entry(root, ents, "cmdline")
	if err == nil && ok && !mode.IsRegular() {
		err = fmt.Errorf("%w: %s", ErrNotRegular, kind(mode))
	}
	if err == nil && ok {
		vm.Cmdline, err = readCmdline(p)
	}
	if err != nil {
		return fail("cmdline", err)
	}

	// providers/net/<vm>: only the names count; the entries are never
	// opened, so a provider entry may be a symlink to anywhere.
	prov, mode, ok, err := entry(root, ents, "providers")
	if err != nil {
		return fail("providers", err)
	}
	if !ok {
		return vm, nil
	}
	sub, err := readDirMode(prov, mode)
	if err != nil {
		return fail("providers", err)
	}
	net, mode, ok, err := entry(prov, sub, "net")
	if err != nil {
		return fail("providers/net", err)
	}
	if !ok {
		return vm, nil
	}
	names, err := readDirMode(net, mode)
	if err != nil {
		return fail("providers/net", err)
	}
	for _, n := range sortedKeys(names) {
		if err := checkName(n, MaxName); err != nil {
			return fail(filepath.Join("providers", "net", n), err)
		}
		vm.Providers = append(vm.Providers, n)
	}
	return vm, nil
}

// readDir lists dir as names and types.
func readDir(dir string) (map[string]fs.FileMode, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	m := make(map[string]fs.FileMode, len(ents))
	for _, e := range ents {
		m[e.Name()] = e.Type()
	}
	return m, nil
}

// readDirMode lists dir, whose type is mode, which must be a directory.
func readDirMode(dir string, mode fs.FileMode) (map[string]fs.FileMode, error) {
	if !mode.IsDir() {
		return nil, fmt.Errorf("%w: %s", ErrNotDir, kind(mode))
	}
	return readDir(dir)
}

func sortedKeys(m map[string]fs.FileMode) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// kind names a file type for an error message.
func kind(mode fs.FileMode) string {
	switch t := mode.Type(); {
	case t.IsRegular():
		return "a regular file"
	case t.IsDir():
		return "a directory"
	case t&fs.ModeSymlink != 0:
		return "a symlink"
	case t&fs.ModeNamedPipe != 0:
		return "a named pipe"
	case t&fs.ModeSocket != 0:
		return "a socket"
	case t&fs.ModeDevice != 0:
		return "a device"
	default:
		return "an unusual file (" + t.String() + ")"
	}
}
