package vm

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"spectrum-os.org/netcfg/vmtest/initramfs"
	"spectrum-os.org/netcfg/vmtest/kernel"
)

// Assets are the files every test VM boots: the kernel and the initramfs
// with the test init and the agent.
type Assets struct {
	Kernel kernel.Kernel
	// Initramfs is the newc cpio archive with the test init
	// (vmtest/cmd/testinit), the static spectrum-netcfg and the kernel's
	// guest modules, cached in .cache/vmtest/ by content.
	Initramfs string
}

var (
	assetsOnce sync.Once
	assets     *Assets
	assetsErr  error
)

// BuildAssets builds the guest binaries and the initramfs once per test
// binary, into .cache/vmtest/ of the repository.
func BuildAssets(t testing.TB, k kernel.Kernel) *Assets {
	t.Helper()
	assetsOnce.Do(func() { assets, assetsErr = buildAssets(k) })
	if assetsErr != nil {
		t.Fatalf("build guest assets: %v", assetsErr)
	}
	return assets
}

// Build builds the assets outside a test (make run).
func Build(k kernel.Kernel) (*Assets, error) { return buildAssets(k) }

func buildAssets(k kernel.Kernel) (*Assets, error) {
	root, err := kernel.RepoRoot()
	if err != nil {
		return nil, err
	}
	cache := filepath.Join(root, ".cache", "vmtest")
	if err := os.MkdirAll(cache, 0o755); err != nil {
		return nil, err
	}
	bin, err := os.MkdirTemp(cache, "bin-")
	if err != nil {
		return nil, err
	}
	// The binaries are only needed until the archive is written; the
	// archive itself stays, named by its content.
	defer os.RemoveAll(bin)
	a := &Assets{Kernel: k}
	init, agent := filepath.Join(bin, "init"), filepath.Join(bin, "spectrum-netcfg")
	for _, b := range []struct{ out, pkg string }{
		{init, "./vmtest/cmd/testinit"},
		{agent, "./cmd/spectrum-netcfg"},
	} {
		if err := goBuildStatic(root, b.out, b.pkg); err != nil {
			return nil, err
		}
	}
	mods, err := kernel.Modules(k.Modules, append(kernel.GuestModules, kernel.PowerModules...)...)
	if err != nil {
		// A kernel without the power button drivers still boots the
		// tests; its VMs are killed at spectrumd's stop timeout.
		mods, err = kernel.Modules(k.Modules, kernel.GuestModules...)
	}
	if err != nil {
		return nil, err
	}
	cpio, err := initramfs.Bytes(initramfs.Spec{Init: init, Agent: agent, Modules: mods})
	if err != nil {
		return nil, fmt.Errorf("initramfs: %w", err)
	}
	sum := sha256.Sum256(cpio)
	a.Initramfs = filepath.Join(cache, "initramfs-"+hex.EncodeToString(sum[:8])+".cpio")
	if _, err := os.Stat(a.Initramfs); err == nil {
		now := time.Now()
		return a, os.Chtimes(a.Initramfs, now, now)
	}
	tmp := a.Initramfs + ".tmp" + filepath.Base(bin)
	if err := os.WriteFile(tmp, cpio, 0o644); err != nil {
		return nil, err
	}
	if err := os.Rename(tmp, a.Initramfs); err != nil {
		return nil, err
	}
	pruneOld(cache, a.Initramfs)
	return a, nil
}

// pruneOld removes archives of earlier builds, except those used in the
// last hour: another test binary may be booting one right now.
func pruneOld(cache, keep string) {
	old, _ := filepath.Glob(filepath.Join(cache, "initramfs-*.cpio"))
	for _, f := range old {
		if fi, err := os.Stat(f); err == nil && f != keep && time.Since(fi.ModTime()) > time.Hour {
			os.Remove(f)
		}
	}
}

// goBuildStatic builds a guest binary the way the Makefile does.
func goBuildStatic(root, out, pkg string) error {
	var stderr bytes.Buffer
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", out, pkg)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("go build %s: %w\n%s", pkg, err, stderr.Bytes())
	}
	return nil
}
