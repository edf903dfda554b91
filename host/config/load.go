package config

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
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
	l := &Loader{dataDir: dataDir}
	return l.Load()
}

// load is Load, reusing from l.cache the result for every VM directory whose
// fingerprint is unchanged when l.keep is set.
func (l *Loader) load() *Config {
	start := time.Now()
	cfg := &Config{VMs: map[string]*VM{}}
	dataDir := l.dataDir
	abs, err := filepath.Abs(dataDir)
	if err == nil {
		abs, err = filepath.EvalSymlinks(abs)
	}
	var ents []fs.DirEntry
	if err == nil {
		// Check the fingerprints kept from the last load while the
		// data directory is listed: the listing is one CPU's work.
		wait := l.checkCached(abs)
		ents, err = os.ReadDir(abs)
		wait()
	}
	if err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err // the path is dataDir's or a prefix of it
		}
		cfg.Errors = append(cfg.Errors, &VMError{Path: dataDir, Err: fmt.Errorf("cannot read the data directory: %w", err)})
		return cfg
	}
	if abs != l.abs {
		// Every VM's paths start with abs.
		l.abs, l.cache = abs, nil
	}
	n := len(ents)
	ln := &linker{
		dataDir: dataDir,
		exists:  make(map[string]bool, n),
		vms:     make(map[string]*VM, n),
		errs:    map[string]*VMError{},
		state:   make(map[string]visit, n),
	}
	var todo []fs.DirEntry
	for _, e := range ents { // sorted by name
		if !e.IsDir() && e.Type()&fs.ModeSymlink == 0 {
			continue
		}
		ln.names = append(ln.names, e.Name())
		ln.exists[e.Name()] = true
		todo = append(todo, e)
	}
	// The VMs' directories are independent: check them in parallel (the
	// work is system calls), then link them in name order.
	vms := make([]*VM, len(todo))
	errs := make([]*VMError, len(todo))
	keep := make([]*cached, len(todo))
	cutoff := start.Add(-l.window)
	var next, validated atomic.Int64
	var wg sync.WaitGroup
	for range min(runtime.GOMAXPROCS(0), len(todo)) {
		wg.Go(func() {
			for i := int(next.Add(1) - 1); i < len(todo); i = int(next.Add(1) - 1) {
				e := todo[i]
				if c := l.cache[e.Name()]; c != nil && c.held && c.typ == e.Type() {
					vms[i], errs[i], keep[i] = c.vm, c.err, c
					continue
				}
				validated.Add(1)
				var rec *deps
				if l.keep {
					rec = &deps{abs: abs}
				}
				vms[i], errs[i] = loadVM(dataDir, abs, e, rec)
				if l.keep && cacheable(errs[i]) && !racy(rec.list, cutoff) {
					keep[i] = &cached{typ: e.Type(), vm: vms[i], err: errs[i], deps: rec.list}
				}
			}
		})
	}
	wg.Wait()
	l.validated = int(validated.Load())
	if l.keep {
		l.cache = make(map[string]*cached, len(todo))
		for i, c := range keep {
			if c != nil {
				l.cache[todo[i].Name()] = c
			}
		}
	}
	// Two names for one directory would be two QEMUs on the same disk
	// images: only a real directory keeps its name; a symlink to a
	// directory that another VM has too is rejected.
	byDir := map[string]int{}
	for _, vm := range vms {
		if vm != nil {
			byDir[vm.Dir]++
		}
	}
	var shared []int
	for i, e := range todo {
		if vms[i] != nil && byDir[vms[i].Dir] > 1 && e.Type()&fs.ModeSymlink != 0 {
			shared = append(shared, i)
			errs[i] = &VMError{VM: e.Name(), Path: filepath.Join(dataDir, e.Name()),
				Err: fmt.Errorf("%w %s", ErrSharedDir, byDirNames(vms, todo, vms[i].Dir, e.Name()))}
		}
	}
	for _, i := range shared {
		vms[i] = nil
	}
	for i, e := range todo {
		if errs[i] != nil {
			ln.errs[e.Name()] = errs[i]
		} else {
			ln.vms[e.Name()] = vms[i]
		}
	}
	ln.claimMACs()
	ln.claimPCI()
	ln.link()
	for _, name := range ln.names {
		if err := ln.errs[name]; err != nil {
			cfg.Errors = append(cfg.Errors, err)
		}
	}
	cfg.Order = ln.order
	cfg.VMs = make(map[string]*VM, len(ln.order))
	for _, name := range ln.order {
		cfg.VMs[name] = ln.vms[name]
	}
	return cfg
}

// byDirNames names the VMs other than self whose directory is dir.
func byDirNames(vms []*VM, ents []fs.DirEntry, dir, self string) string {
	var names []string
	for i, vm := range vms {
		if vm != nil && vm.Dir == dir && ents[i].Name() != self {
			names = append(names, ents[i].Name())
		}
	}
	return strings.Join(names, ", ")
}

// loadVM reads and checks one VM's own directory, dataDir/name (abs is
// dataDir's real path): a readable ELF vmlinux, at least one blk/*.img,
// optional initramfs, cmdline, providers/net/* and uplinks/net/*. Nothing it reads may be
// reached through a symlink that leads out of the VM's directory. It stops at
// the first fault. Whether the providers exist is for linker to check.
//
// rec, when not nil, records everything the result depends on. The
// warnings (see Warning) found before the fault, if any, go with the
// result: the VM's, or its error's.
func loadVM(dataDir, abs string, e fs.DirEntry, rec *deps) (*VM, *VMError) {
	var warns []Warning
	given := filepath.Join(dataDir, e.Name())
	warn := func(rel, msg string) {
		warns = append(warns, Warning{Path: filepath.Join(given, rel), Msg: msg})
	}
	vm, err := loadVMDir(dataDir, abs, e, rec, warn)
	slices.SortFunc(warns, func(a, b Warning) int { return strings.Compare(a.Path, b.Path) })
	switch {
	case err != nil:
		err.Warnings = warns
	case vm != nil:
		vm.Warnings = warns
	}
	return vm, err
}

func loadVMDir(dataDir, abs string, e fs.DirEntry, rec *deps, warn func(rel, msg string)) (*VM, *VMError) {
	name := e.Name()
	given := filepath.Join(dataDir, name)
	fail := func(rel string, err error) (*VM, *VMError) {
		return nil, &VMError{VM: name, Path: filepath.Join(given, rel), Err: err}
	}
	if err := checkName(name, MaxName); err != nil {
		return fail("", err)
	}
	root := filepath.Join(abs, name)
	if e.Type()&fs.ModeSymlink != 0 {
		// A VM directory may live elsewhere; its contents are confined
		// to where it really is.
		real, err := rec.evalSymlinks(root)
		if err != nil {
			return fail("", err)
		}
		root = real
	}
	if err := checkPath(root); err != nil {
		return fail("", err)
	}
	rec.stat(root)
	ents, err := readDir(root)
	if err != nil {
		return fail("", err)
	}
	vm := &VM{Name: name, Dir: root}
	// The entries spectrumd does not know are named whatever else is
	// wrong: the typo is often why. A valid VM's are looked at once its
	// files are known (a symlink's target inside the directory is used).
	failed := fail
	fail = func(rel string, err error) (*VM, *VMError) {
		unknownEntries(root, ents, nil, rec, warn)
		return failed(rel, err)
	}

	// entry resolves a required or optional entry of the VM's directory
	// (or of one of its subdirectories, dir), following a symlink only
	// inside the VM's directory.
	entry := func(dir string, ents map[string]fs.FileMode, n string) (string, fs.FileMode, bool, error) {
		typ, ok := ents[n]
		if !ok {
			return "", 0, false, nil
		}
		p, mode, err := follow(root, filepath.Join(dir, n), typ, rec)
		return p, mode, true, err
	}

	p, mode, ok, err := entry(root, ents, "vmlinux")
	if err == nil && !ok {
		err = fmt.Errorf("required kernel is missing: %w", fs.ErrNotExist)
	}
	if err == nil && !mode.IsRegular() {
		err = fmt.Errorf("%w: %s", ErrNotRegular, kind(mode))
	}
	if err == nil {
		rec.stat(p)
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
		imgs, err = readDirMode(blk, mode, rec)
	}
	if err != nil {
		return fail("blk", err)
	}
	for _, n := range sortedKeys(imgs) {
		if !strings.HasSuffix(n, ".img") {
			warn(filepath.Join("blk", n), "not a *.img disk image, not given to the VM")
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
		rec.stat(p)
		vm.Cmdline, err = readCmdline(p)
	}
	if err != nil {
		return fail("cmdline", err)
	}

	if vm, err := loadProviders(vm, root, ents, rec, fail); err != nil {
		return vm, err
	}
	vm, verr := loadUplinks(vm, root, ents, rec, fail)
	if verr == nil {
		unknownEntries(root, ents, vm, rec, warn)
	}
	return vm, verr
}

// loadProviders reads providers/net/<vm> of the VM whose real directory is
// root into vm.Providers: only the names count; the entries are never
// opened, so a provider entry may be a symlink to anywhere.
func loadProviders(vm *VM, root string, ents map[string]fs.FileMode, rec *deps, fail func(string, error) (*VM, *VMError)) (*VM, *VMError) {
	typ, ok := ents["providers"]
	if !ok {
		return vm, nil
	}
	prov, mode, err := follow(root, filepath.Join(root, "providers"), typ, rec)
	if err != nil {
		return fail("providers", err)
	}
	if !mode.IsDir() {
		return fail("providers", fmt.Errorf("%w: %s", ErrNotDir, kind(mode)))
	}
	// One lstat instead of listing providers/: only net matters.
	netPath := filepath.Join(prov, "net")
	fi, err := rec.osLstat(netPath)
	if errors.Is(err, fs.ErrNotExist) {
		return vm, nil
	}
	var net string
	if err == nil {
		net, mode, err = follow(root, netPath, fi.Mode(), rec)
	}
	if err != nil {
		return fail("providers/net", err)
	}
	names, err := readDirMode(net, mode, rec)
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
