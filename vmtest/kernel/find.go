package kernel

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// Kernel is the kernel a test guest boots.
type Kernel struct {
	Vmlinux string // uncompressed ELF kernel with a PVH entry point
	Modules string // its /lib/modules/VERSION tree; "" if the drivers are built in
}

// Environment variables that override the cached Debian kernel.
const (
	// EnvKernel names a vmlinux to boot instead of the cached one.
	EnvKernel = "SPECTRUM_TEST_KERNEL"
	// EnvModules names that kernel's module tree; unset or empty means its
	// virtio drivers are built in.
	EnvModules = "SPECTRUM_TEST_MODULES"
)

// CacheDir is where `make kernel` (scripts/test-kernel.sh) keeps the Debian
// test kernel, relative to the repository root.
const CacheDir = ".cache/kernel"

// Find returns the kernel named by SPECTRUM_TEST_KERNEL and
// SPECTRUM_TEST_MODULES, or else the one `make kernel` cached in the
// repository (found by walking up from the working directory to go.mod).
func Find() (Kernel, error) {
	if v := os.Getenv(EnvKernel); v != "" {
		k := Kernel{Vmlinux: v, Modules: os.Getenv(EnvModules)}
		return k, k.stat()
	}
	root, err := RepoRoot()
	if err != nil {
		return Kernel{}, err
	}
	dir := filepath.Join(root, CacheDir)
	k := Kernel{Vmlinux: filepath.Join(dir, "vmlinux"), Modules: filepath.Join(dir, "modules")}
	if err := k.stat(); err != nil {
		return Kernel{}, fmt.Errorf("%w (run `make kernel`, or set %s)", err, EnvKernel)
	}
	return k, nil
}

func (k Kernel) stat() error {
	if _, err := os.Stat(k.Vmlinux); err != nil {
		return fmt.Errorf("test kernel: %w", err)
	}
	if k.Modules != "" {
		if _, err := os.Stat(k.Modules); err != nil {
			return fmt.Errorf("test kernel modules: %w", err)
		}
	}
	return nil
}

// RepoRoot walks up from the working directory to the directory holding
// go.mod.
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod above the working directory")
		}
		dir = parent
	}
}

// FullCacheDir is where `make kernel` (scripts/test-kernel.sh full) keeps
// Debian's full kernel, relative to the repository root: the nested VFIO
// test's middle VM boots it (the cloud kernel has no 9p).
const FullCacheDir = ".cache/kernel-full"

// FindFull returns the cached full kernel: its bzImage (QEMU boots it
// directly) as Vmlinux, and its module tree.
func FindFull() (Kernel, error) {
	root, err := RepoRoot()
	if err != nil {
		return Kernel{}, err
	}
	dir := filepath.Join(root, FullCacheDir)
	k := Kernel{Vmlinux: filepath.Join(dir, "vmlinuz"), Modules: filepath.Join(dir, "modules")}
	if err := k.stat(); err != nil {
		return Kernel{}, fmt.Errorf("%w (run `make kernel`)", err)
	}
	return k, nil
}
