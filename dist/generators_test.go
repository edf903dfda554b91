package dist

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"spectrum-os.org/netcfg/vmtest/distinit"
)

// agentSize is the size of the spectrum-netcfg this test binary built.
func agentSize(t *testing.T) int64 {
	t.Helper()
	fi, err := os.Stat(filepath.Join(bins(t), "spectrum-netcfg"))
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

// wantFiles checks that each path is in the listing, executable if asked.
func wantFiles(t *testing.T, list map[string]distinit.Entry, exec map[string]bool) {
	t.Helper()
	for p, x := range exec {
		e, ok := list[p]
		switch {
		case !ok:
			t.Errorf("%s not in the initramfs", p)
		case x && !e.Executable():
			t.Errorf("%s mode %s, want executable", p, e.Mode)
		}
	}
}

// TestMkinitramfs builds an initramfs the way `update-initramfs -u` does,
// with Debian's mkinitramfs and the host's default configuration
// (/etc/initramfs-tools, MODULES=most), for the Debian test kernel, with
// spectrum-netcfg installed by `make install` and WATCH=yes set in
// /etc/default/spectrum-netcfg; then lists it with lsinitramfs and reads it
// back with unmkinitramfs.
func TestMkinitramfs(t *testing.T) {
	k := distinit.Require(t, true, "mkinitramfs", "lsinitramfs", "unmkinitramfs")
	dest := install(t)
	setDefault(t, dest, "WATCH", "yes")
	img := filepath.Join(t.TempDir(), "initrd.img-"+k.Version)
	out, err := distinit.Run(t.Context(), k, distinit.Installed(dest), nil, "mkinitramfs", "-o", img, k.Version)
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	list, err := distinit.List(t.Context(), "lsinitramfs", img)
	if err != nil {
		t.Fatal(err)
	}
	mods := "usr/lib/modules/" + k.Version + "/kernel/"
	wantFiles(t, list, map[string]bool{
		"usr/sbin/spectrum-netcfg":              true,
		"scripts/init-premount/spectrum-netcfg": true,
		"conf/spectrum-netcfg.conf":             false,
		mods + "drivers/net/virtio_net.ko":      false,
		mods + "drivers/net/net_failover.ko":    false,
		mods + "net/core/failover.ko":           false,
	})
	if got, want := list["usr/sbin/spectrum-netcfg"].Size, agentSize(t); got != want {
		t.Errorf("usr/sbin/spectrum-netcfg is %d bytes, want %d (the binary make install installed)", got, want)
	}

	dir := t.TempDir()
	if out, err := exec.Command("unmkinitramfs", img, dir).CombinedOutput(); err != nil {
		t.Fatalf("unmkinitramfs: %v\n%s", err, out)
	}
	if _, err := os.Stat(filepath.Join(dir, "main")); err == nil {
		dir = filepath.Join(dir, "main") // an early (microcode) archive came first
	}
	if got := readFile(t, filepath.Join(dir, "conf/spectrum-netcfg.conf")); got != "SPECTRUM_NETCFG_WATCH=yes\n" {
		t.Errorf("conf/spectrum-netcfg.conf = %q, want WATCH=yes carried over", got)
	}
	// The init runs init-premount scripts from the ORDER file the hooks'
	// prereqs produced.
	if order := readFile(t, filepath.Join(dir, "scripts/init-premount/ORDER")); !strings.Contains(order, "/scripts/init-premount/spectrum-netcfg ") {
		t.Errorf("scripts/init-premount/ORDER does not run spectrum-netcfg:\n%s", order)
	}
}

// TestMkinitramfsNoAgent: without the agent the hook fails the build, naming
// what is missing, instead of making an image that boots without network.
func TestMkinitramfsNoAgent(t *testing.T) {
	k := distinit.Require(t, true, "mkinitramfs")
	dest := install(t)
	setDefault(t, dest, "BINARY", "/nonexistent/spectrum-netcfg")
	conf := t.TempDir()
	if err := distinit.ListConf(conf, "virtio_pci"); err != nil {
		t.Fatal(err)
	}
	img := filepath.Join(t.TempDir(), "initrd.img")
	out, err := distinit.Run(t.Context(), k, distinit.Installed(dest), nil, "mkinitramfs", "-d", conf, "-o", img, k.Version)
	if err == nil {
		t.Fatalf("mkinitramfs succeeded without the agent:\n%s", out)
	}
	if !strings.Contains(string(out), "spectrum-netcfg: no agent binary (/nonexistent/spectrum-netcfg)") {
		t.Errorf("mkinitramfs failed without naming the missing agent:\n%s", out)
	}
}

// TestDracut builds an initramfs the way Fedora's `dracut -f` does (host-only)
// for the Debian test kernel, with the module installed by `make install` and
// WATCH=yes: the module is picked by its check() without being named, and
// virtio_net goes in although this host has no virtio NIC. Listed with
// lsinitrd.
func TestDracut(t *testing.T) {
	k := distinit.Require(t, true, "dracut", "lsinitrd")
	dest := install(t)
	setDefault(t, dest, "WATCH", "yes")
	img := filepath.Join(t.TempDir(), "initramfs-"+k.Version+".img")
	out, err := distinit.Run(t.Context(), k, distinit.Installed(dest), nil,
		"dracut", "--force", "--hostonly", "--no-early-microcode", "--kver", k.Version, img)
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	list, err := distinit.List(t.Context(), "lsinitrd", img)
	if err != nil {
		t.Fatal(err)
	}
	mods := "usr/lib/modules/" + k.Version + "/kernel/"
	wantFiles(t, list, map[string]bool{
		"usr/sbin/spectrum-netcfg":                                       true,
		"usr/lib/dracut/hooks/pre-mount/10-spectrum-netcfg-pre-mount.sh": true,
		"etc/spectrum-netcfg.conf":                                       false,
		mods + "drivers/net/virtio_net.ko":                               false,
		mods + "drivers/net/net_failover.ko":                             false,
	})
	// dracut strips the binaries it installs (do_strip): a few hundred
	// bytes of ELF sections go; the agent must still run.
	if got, want := list["usr/sbin/spectrum-netcfg"].Size, agentSize(t); got > want || got < want-16<<10 {
		t.Errorf("usr/sbin/spectrum-netcfg is %d bytes, want at most %d and a stripped copy of it", got, want)
	}
	unpack := exec.Command("lsinitrd", "--unpack", img, "usr/sbin/spectrum-netcfg")
	unpack.Dir = t.TempDir()
	if out, err := unpack.CombinedOutput(); err != nil {
		t.Errorf("lsinitrd --unpack: %v\n%s", err, out)
	}
	if out, err := exec.Command(filepath.Join(unpack.Dir, "usr/sbin/spectrum-netcfg"), "-h").CombinedOutput(); err != nil || !strings.HasPrefix(string(out), "usage: spectrum-netcfg") {
		t.Errorf("the stripped agent from the image, run with -h: %v\n%s", err, out)
	}
	b, err := exec.Command("lsinitrd", "-f", "etc/spectrum-netcfg.conf", img).Output()
	if err != nil || string(b) != "SPECTRUM_NETCFG_WATCH=yes\n" {
		t.Errorf("lsinitrd -f etc/spectrum-netcfg.conf = %q, %v; want WATCH=yes carried over", b, err)
	}
	b, err = exec.Command("lsinitrd", "-m", img).Output()
	if err != nil || !strings.Contains(string(b), "\nspectrum-netcfg\n") {
		t.Errorf("lsinitrd -m does not list the spectrum-netcfg module (%v):\n%s", err, b)
	}
}

// TestDracutNoAgent: without the agent, check() refuses the module, and a
// build that asks for it fails.
func TestDracutNoAgent(t *testing.T) {
	k := distinit.Require(t, true, "dracut")
	dest := install(t)
	setDefault(t, dest, "BINARY", "/nonexistent/spectrum-netcfg")
	img := filepath.Join(t.TempDir(), "initramfs.img")
	out, err := distinit.Run(t.Context(), k, distinit.Installed(dest), nil,
		"dracut", "--force", "--no-hostonly", "-m", "base spectrum-netcfg", "--kver", k.Version, img)
	if err == nil {
		t.Fatalf("dracut succeeded without the agent:\n%s", out)
	}
	if !strings.Contains(string(out), "spectrum-netcfg") {
		t.Errorf("dracut failed without naming the module:\n%s", out)
	}
}
