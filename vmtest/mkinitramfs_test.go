package vmtest

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"spectrum-os.org/netcfg/guest"
	"spectrum-os.org/netcfg/host/qemu"
	"spectrum-os.org/netcfg/internal/mac"
	"spectrum-os.org/netcfg/internal/nstest"
	"spectrum-os.org/netcfg/vmtest/distinit"
	"spectrum-os.org/netcfg/vmtest/kernel"
	"spectrum-os.org/netcfg/vmtest/vm"
)

// TestMkinitramfsBoot boots the Debian test kernel with an initramfs made by
// Debian's own mkinitramfs with spectrum-netcfg's initramfs-tools hook, as
// `make install` installs it; see checkRootBoot for what it checks.
func TestMkinitramfsBoot(t *testing.T) {
	b := newRootBoot(t, "mkinitramfs")
	// MODULES=list keeps the image small: the disk's drivers (ext4 is
	// built in) and what the hook adds.
	conf := filepath.Join(b.work, "conf")
	if err := os.Mkdir(conf, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := distinit.ListConf(conf, "virtio_pci", "virtio_blk"); err != nil {
		t.Fatal(err)
	}
	initrd := filepath.Join(b.work, "initrd.img")
	if out, err := distinit.Run(b.ctx, b.dk, distinit.Installed(b.dest), nil, "mkinitramfs", "-d", conf, "-o", initrd, b.dk.Version); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	b.checkRootBoot(initrd)
}

// TestDracutBoot is TestMkinitramfsBoot with an initramfs made by dracut
// (Debian's), without systemd in it: dracut's own shell init, with the
// modules a virtio-blk root needs and the spectrum-netcfg module as `make
// install` installs it.
func TestDracutBoot(t *testing.T) {
	b := newRootBoot(t, "dracut")
	initrd := filepath.Join(b.work, "initramfs.img")
	if out, err := distinit.Run(b.ctx, b.dk, distinit.Installed(b.dest), nil, "dracut", "--force", "--no-hostonly", "--no-early-microcode",
		"-m", "base rootfs-block kernel-modules udev-rules spectrum-netcfg", "--drivers", "virtio_pci virtio_blk",
		"--kver", b.dk.Version, initrd); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	b.checkRootBoot(initrd)
}

// rootBoot is a boot test's world: the test kernel, a `make install` tree
// and a root file system image.
type rootBoot struct {
	t          *testing.T
	ctx        context.Context
	k          kernel.Kernel
	dk         distinit.Kernel
	work, dest string
	rootImg    string
}

// newRootBoot runs `make install` into a temporary DESTDIR, as a user
// would, and makes the root: an ext4 image with /sbin/init from
// vmtest/cmd/rootinit and the mount points the initramfs moves /dev, /proc,
// /sys and /run onto.
func newRootBoot(t *testing.T, generator string) *rootBoot {
	k := vm.Require(t)
	b := &rootBoot{t: t, k: k, dk: distinit.Require(t, true, generator, "mke2fs"), ctx: vm.Context(t, 6*time.Minute), work: t.TempDir()}
	root, err := kernel.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(b.work, "bin")
	if err := distinit.BuildBins(root, bin); err != nil {
		t.Fatal(err)
	}
	b.dest = filepath.Join(b.work, "dest")
	if _, err := distinit.Install(root, bin, b.dest); err != nil {
		t.Fatal(err)
	}
	rootDir := filepath.Join(b.work, "root")
	for _, d := range []string{"sbin", "dev", "proc", "sys", "run", "tmp"} {
		if err := os.MkdirAll(filepath.Join(rootDir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := distinit.BuildStatic(root, filepath.Join(rootDir, "sbin/init"), "./vmtest/cmd/rootinit"); err != nil {
		t.Fatal(err)
	}
	b.rootImg = filepath.Join(b.work, "root.img")
	if out, err := exec.Command("mke2fs", "-q", "-t", "ext4", "-d", rootDir, "-F", b.rootImg, "32M").CombinedOutput(); err != nil {
		t.Fatalf("mke2fs: %v\n%s", err, out)
	}
	return b
}

// checkRootBoot boots initrd with the root on virtio-blk, a client NIC
// 0A:B3:EC:00:A5:46 and the -watch opt-in on the kernel command line
// (spectrum.watch), and checks, on the serial console, that
//
//   - the agent configured the client NIC before the root was mounted (its
//     lines come before the kernel's first "EXT4-fs (vda): mounted
//     filesystem");
//   - the guest reached its root (rootinit's first line, as PID 1);
//   - there the NIC still has its address, and exactly one spectrum-netcfg
//     runs, -watch, from the initramfs's binary that switch_root deleted;
//   - it configures a NIC hot-plugged after switch_root.
func (b *rootBoot) checkRootBoot(initrd string) {
	t, ctx := b.t, b.ctx
	t.Helper()
	boot := mac.LinkID(0xa546) // the reference documentation's example
	plug := mac.LinkID(0x1234)
	v := bootVM{
		Kernel: b.k.Vmlinux, Initrd: initrd, Disk: b.rootImg,
		// rd.skipfsck: the disk is read-only, as spectrumd gives every
		// image, and dracut's fsck of the root wants it writable.
		Cmdline: fmt.Sprintf("root=/dev/vda console=ttyS0 panic=-1 rd.shell=0 rd.skipfsck spectrum.watch spectrum.expect=%s,%s spectrum.timeout=180",
			boot.MAC(mac.Client), plug.MAC(mac.Client)),
		MACs: []string{boot.MAC(mac.Client).String()},
	}
	p := v.launch(t)
	p.wait(t, ctx, "root init ")
	p.plug(t, "plug0", plug.MAC(mac.Client).String())
	done := p.wait(t, ctx, "root done")
	if done != "root done" {
		t.Errorf("rootinit: %q, want every NIC addressed", done)
	}
	select {
	case <-p.exited:
	case <-ctx.Done():
		t.Errorf("QEMU still running after the guest powered off")
	}

	// The order on the console: the agent's lines, then the root mount,
	// then the root's init.
	lines := p.serial.Lines()
	index := func(s string) int {
		for i, l := range lines {
			if strings.Contains(l.Text, s) {
				return i
			}
		}
		t.Errorf("console never showed %q", s)
		return -1
	}
	bootNIC := boot.MAC(mac.Client).String() + ": client " + boot.ClientPrefix().String() + " via " + boot.Gateway().String() + ": configured"
	configured := index(bootNIC)
	agentDone := index(guest.DoneLine(1, 0, 0))
	mounted := index("EXT4-fs (vda): mounted filesystem")
	rootInit := index(vm.Prefix + "root init pid=1")
	for _, i := range []int{configured, agentDone, mounted, rootInit} {
		if i >= 0 {
			t.Logf("%7.3fs | %s", lines[i].At.Seconds(), lines[i].Text)
		}
	}
	if !(configured < agentDone && agentDone < mounted && mounted < rootInit) {
		t.Errorf("console order: NIC configured at line %d, agent done %d, root mounted %d, root's init %d; want them in that order",
			configured, agentDone, mounted, rootInit)
	}

	// In the root: the one -watch instance, running from the initramfs's
	// binary that switch_root deleted, and both NICs addressed.
	agents := p.serial.Events("root agent ")
	if len(agents) != 1 || vm.Field(agents[0], "args") != "-watch" || vm.Field(agents[0], "exe") != "/usr/sbin/spectrum-netcfg_(deleted)" {
		t.Errorf("spectrum-netcfg processes in the root: %q; want one, -watch, from the deleted /usr/sbin/spectrum-netcfg", agents)
	}
	for _, id := range []mac.LinkID{boot, plug} {
		hw := id.MAC(mac.Client).String()
		found := false
		for _, e := range p.serial.Events("root addr ") {
			if vm.Field(e, "mac") == hw {
				found = true
				if got, want := vm.Field(e, "addr"), id.ClientPrefix().String(); got != want {
					t.Errorf("NIC %s: address %s, want %s", hw, got, want)
				}
			}
		}
		if !found {
			t.Errorf("NIC %s has no address in the root", hw)
		}
	}
}

// bootVM is a VM booted the way a distribution boots: kernel, initramfs
// and a root disk, one virtio-net NIC per MAC, each on a tap of its own in
// a fresh namespace (no traffic: the guest only configures them), hot-plug
// through QMP. It is not a svc/data VM directory, so it is a vm.Boot of
// its files rather than a vm.Launch: the same host/qemu command line.
type bootVM struct {
	Kernel, Initrd, Disk, Cmdline string
	MACs                          []string
}

type bootProc struct {
	*vm.Proc
	ns     *nstest.NS
	serial *vm.Serial
	exited <-chan struct{}
}

// launch starts QEMU; it is killed when the test ends, and on failure its
// command line, stderr and serial console are logged.
func (b bootVM) launch(t *testing.T) *bootProc {
	t.Helper()
	ns := nstest.New(t)
	var nics []vm.NIC
	for i, m := range b.MACs {
		tap := fmt.Sprintf("spb-%d", i)
		ns.AddTap(tap, "")
		nics = append(nics, vm.NIC{Tap: tap, MAC: m})
	}
	p := vm.Boot{Name: "boot", Kernel: b.Kernel, Initramfs: b.Initrd, Images: []string{b.Disk}, Cmdline: b.Cmdline,
		MemoryMiB: 512, NICs: nics, NS: ns}.Start(t)
	return &bootProc{Proc: p, ns: ns, serial: p.Serial, exited: p.Exited()}
}

// wait waits for a sentinel line and returns it without the prefix.
func (p *bootProc) wait(t *testing.T, ctx context.Context, event string) string {
	t.Helper()
	l, err := p.serial.Wait(ctx, event)
	if err != nil {
		t.Fatal(err)
	}
	e, _ := vm.Event(l.Text)
	return e
}

// plug hot-plugs a virtio-net NIC with MAC hw, on a new tap, through QMP
// (as spectrumd hot-plugs a provider's NIC).
func (p *bootProc) plug(t *testing.T, id, hw string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	p.ns.AddTap("spb-"+id, "")
	tap, err := vm.OpenTap(p.ns, "spb-"+id)
	if err != nil {
		t.Fatal(err)
	}
	defer tap.Close()
	m, err := net.ParseMAC(hw)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.QEMU.HotplugNIC(ctx, qemu.NIC{ID: id, MAC: m, Tap: tap}); err != nil {
		t.Fatalf("hot-plug %s: %v", hw, err)
	}
	t.Logf("hot-plugged %s (%s)", id, hw)
}

// plainInit is the /init of a plain busybox initramfs, with the documented
// one-line call of the agent. The initramfs has no /dev/console, so the
// init's standard streams are opened once devtmpfs is mounted.
const plainInit = `#!/bin/busybox sh
/bin/busybox mount -t devtmpfs devtmpfs /dev
exec </dev/console >/dev/console 2>&1
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
for m in $(cat /lib/modules/order); do insmod /lib/modules/$m.ko; done
/usr/sbin/spectrum-netcfg </dev/null
echo "SPECTRUM-TEST: plain agent exit=$?"
for a in $(ip -4 -o addr show | awk '{print $2 "=" $4}'); do echo "SPECTRUM-TEST: plain addr $a"; done
poweroff -f
`

// TestAppendedAgentBoot boots a plain busybox initramfs (made with GNU cpio
// and gzip, without the agent) to which spectrum-initramfs-append added the
// agent as a second, uncompressed archive: the kernel unpacks both, and the
// init's one-line call configures the client NIC.
func TestAppendedAgentBoot(t *testing.T) {
	k := vm.Require(t)
	distinit.Require(t, false, "cpio", "gzip", "busybox")
	ctx := vm.Context(t, 4*time.Minute)
	root, err := kernel.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	work := t.TempDir()
	bin := filepath.Join(work, "bin")
	if err := distinit.BuildBins(root, bin); err != nil {
		t.Fatal(err)
	}

	// The plain initramfs: busybox, the init, the NIC's modules.
	dir := filepath.Join(work, "initramfs")
	for _, d := range []string{"bin", "dev", "proc", "lib/modules"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	bb, err := exec.LookPath("busybox")
	if err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{"init": []byte(plainInit)}
	if files["bin/busybox"], err = os.ReadFile(bb); err != nil {
		t.Fatal(err)
	}
	mods, err := kernel.Modules(k.Modules, "virtio_pci", "virtio_net")
	if err != nil {
		t.Fatal(err)
	}
	var order strings.Builder
	for _, m := range mods {
		b, err := kernel.ReadModule(m.Path)
		if err != nil {
			t.Fatal(err)
		}
		files["lib/modules/"+m.Name+".ko"] = b
		order.WriteString(m.Name + "\n")
	}
	files["lib/modules/order"] = []byte(order.String())
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	initrd := filepath.Join(work, "initramfs.cpio.gz")
	mk := exec.Command("sh", "-c", `find . | LC_ALL=C sort | cpio --quiet -o -H newc -R 0:0 | gzip -9 >"$0"`, initrd)
	mk.Dir = dir
	if out, err := mk.CombinedOutput(); err != nil {
		t.Fatalf("cpio | gzip: %v\n%s", err, out)
	}

	// The documented step.
	appendCmd := exec.Command(filepath.Join(bin, "spectrum-initramfs-append"), initrd, filepath.Join(bin, "spectrum-netcfg"))
	out, err := appendCmd.CombinedOutput()
	if err != nil {
		t.Fatalf("spectrum-initramfs-append: %v\n%s", err, out)
	}
	t.Logf("%s", out)

	// bootVM always gives the guest a disk; this initramfs never mounts it.
	id := mac.LinkID(0xa546)
	img := filepath.Join(work, "empty.img")
	if err := os.WriteFile(img, make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	b := bootVM{Kernel: k.Vmlinux, Initrd: initrd, Disk: img,
		Cmdline: "console=ttyS0 panic=-1", MACs: []string{id.MAC(mac.Client).String()}}
	p := b.launch(t)
	if got := p.wait(t, ctx, "plain agent exit="); got != "plain agent exit=0" {
		t.Errorf("agent: %q, want exit status 0", got)
	}
	nic := id.MAC(mac.Client).String() + ": client " + id.ClientPrefix().String() + " via " + id.Gateway().String() + ": configured"
	seen := false
	for _, l := range p.serial.Lines() {
		seen = seen || strings.Contains(l.Text, nic)
	}
	if !seen {
		t.Errorf("console never showed %q", nic)
	}
	select {
	case <-p.exited:
	case <-ctx.Done():
		t.Fatal("QEMU still running after poweroff")
	}
	addrs := p.serial.Events("plain addr ")
	if len(addrs) != 1 || !strings.HasSuffix(addrs[0], "="+id.ClientPrefix().String()) {
		t.Errorf("addresses after the agent: %q, want one, %s", addrs, id.ClientPrefix())
	}
}
