package vm

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"spectrum-os.org/netcfg/guest/router"
	"spectrum-os.org/netcfg/vmtest/initramfs"
	"spectrum-os.org/netcfg/vmtest/kernel"
)

// Assets are the files every test VM boots: the kernel and the initramfs
// with the test init and the agent.
type Assets struct {
	Kernel kernel.Kernel
	// Initramfs is the newc cpio archive with the test init
	// (vmtest/cmd/testinit), the static spectrum-netcfg, the kernel's
	// guest modules, busybox (the console's shell) and the guest's /etc
	// (GuestFiles), cached in .cache/vmtest/ by content.
	Initramfs string
	// Lynx is Initramfs with Debian's lynx appended (initramfs.Lynx: the
	// binary, its libraries, its configuration, terminal descriptions),
	// for appvm-lynx (Spec.Lynx).
	Lynx string
}

// Resolver and Resolver6 are the provider's virtual DNS resolvers that
// every client's /etc/resolv.conf names, IPv4's first (router.Resolver and
// router.Resolver6 of the guest's router).
const (
	Resolver  = router.Resolver
	Resolver6 = router.Resolver6
)

// GuestFiles are the guest's /etc and /root: the same for every test VM,
// as one client image must work behind any provider (the resolvers are the
// provider's virtual ones; a VM with an uplink replaces resolv.conf from its
// DHCP lease), and what busybox's shell and lynx look up.
func GuestFiles() []initramfs.File {
	return []initramfs.File{
		{Path: "etc/resolv.conf", Data: []byte("# the provider's virtual resolvers (spectrum-router)\nnameserver " + Resolver + "\nnameserver " + Resolver6 + "\noptions timeout:2 attempts:2\n")},
		{Path: "etc/hosts", Data: []byte("127.0.0.1\tlocalhost\n::1\tlocalhost\n")},
		{Path: "etc/nsswitch.conf", Data: []byte("passwd: files\ngroup: files\nhosts: files dns\n")},
		{Path: "etc/passwd", Data: []byte("root:x:0:0:root:/root:/bin/sh\n")},
		{Path: "etc/group", Data: []byte("root:x:0:\n")},
		{Path: "etc/profile", Data: []byte(profile)},
	}
}

// profile is the console shell's start-up file: a prompt with the VM's
// name, and the motd of an image that has one (the lynx VM's).
const profile = `PS1='\h:\w\$ '
export PS1
[ -r /etc/motd ] && cat /etc/motd
`

// lynxMotd greets the user of appvm-lynx's console.
const lynxMotd = `
This is appvm-lynx's console (virtio-console hvc0): a busybox shell.
Its network comes from netvm, which routes it to the LAN.
  lynx http://www.lan.test/        browse the LAN's web site (q quits)
  lynx -dump http://www.lan.test/  print the page
Ctrl-] detaches from the console.

`

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
	init, agent, router := filepath.Join(bin, "init"), filepath.Join(bin, "spectrum-netcfg"), filepath.Join(bin, "spectrum-router")
	for _, b := range []struct{ out, pkg string }{
		{init, "./vmtest/cmd/testinit"},
		{agent, "./cmd/spectrum-netcfg"},
		{router, "./cmd/spectrum-router"},
	} {
		if err := goBuildStatic(root, b.out, b.pkg); err != nil {
			return nil, err
		}
	}
	required := append(append([]string(nil), kernel.GuestModules...), kernel.RouterModules...)
	mods, err := kernel.Modules(k.Modules, append(required, kernel.PowerModules...)...)
	if err != nil {
		// A kernel without the power button drivers still boots the
		// tests; its VMs are killed at spectrumd's stop timeout.
		mods, err = kernel.Modules(k.Modules, required...)
	}
	if err != nil {
		return nil, err
	}
	bb, err := initramfs.Busybox()
	if err != nil {
		return nil, err
	}
	base, err := initramfs.Bytes(initramfs.Spec{Init: init, Agent: agent, Router: router, Modules: mods, Files: append(bb, GuestFiles()...)})
	if err != nil {
		return nil, fmt.Errorf("initramfs: %w", err)
	}
	if a.Initramfs, err = cacheFile(cache, "initramfs", base, filepath.Base(bin)); err != nil {
		return nil, err
	}
	lynx, err := initramfs.Lynx()
	if err != nil {
		return nil, err
	}
	var add bytes.Buffer
	if err := initramfs.WriteFiles(&add, append(lynx, initramfs.File{Path: "etc/motd", Data: []byte(lynxMotd)})); err != nil {
		return nil, fmt.Errorf("initramfs with lynx: %w", err)
	}
	if a.Lynx, err = cacheFile(cache, "initramfs-lynx", append(base, add.Bytes()...), filepath.Base(bin)); err != nil {
		return nil, err
	}
	pruneOld(cache, a.Initramfs, a.Lynx)
	return a, nil
}

// cacheFile writes b as cache/PREFIX-HASH.cpio, named by its content, unless
// it is there already (then only its time is updated, for pruneOld).
func cacheFile(cache, prefix string, b []byte, tmpTag string) (string, error) {
	sum := sha256.Sum256(b)
	p := filepath.Join(cache, prefix+"-"+hex.EncodeToString(sum[:8])+".cpio")
	if _, err := os.Stat(p); err == nil {
		now := time.Now()
		return p, os.Chtimes(p, now, now)
	}
	tmp := p + ".tmp" + tmpTag
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return "", err
	}
	return p, os.Rename(tmp, p)
}

// pruneOld removes archives of earlier builds, except those used in the
// last hour: another test binary may be booting one right now.
func pruneOld(cache string, keep ...string) {
	old, _ := filepath.Glob(filepath.Join(cache, "initramfs-*.cpio"))
	for _, f := range old {
		if fi, err := os.Stat(f); err == nil && !slices.Contains(keep, f) && time.Since(fi.ModTime()) > time.Hour {
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
