package vmtest

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"spectrum-os.org/netcfg/internal/testenv"
	"spectrum-os.org/netcfg/vmtest/kernel"
	"spectrum-os.org/netcfg/vmtest/lan"
	"spectrum-os.org/netcfg/vmtest/vm"
)

// The nested VFIO test's "hardware" NIC: its PCI address in the middle VM
// and its MAC, which the guest sees as it is (not in 0A:B3:EC).
const (
	hwAddr = "0000:00:03.0"
	hwMAC  = "52:54:00:5e:00:53"
)

// l1Modules are what the middle VM loads before it runs spectrumd: the 9p
// root (virtio_pci claims the "hardware" NIC too, as a host driver would),
// VFIO, and what spectrumd's links need (its netlink handle opens the
// route, xfrm and netfilter families).
var l1Modules = []string{"virtio_pci", "9pnet_virtio", "9p", "vfio_iommu_type1", "vfio_pci", "tun", "bridge", "xfrm_user", "nfnetlink"}

// l1Root is what hostRootInit runs in the middle VM: the kernel's file
// systems and a tmpfs /run in the host's root, then l1Script (its first
// argument) in a chroot there.
const l1Root = `mount -t proc proc /host/proc
mount -t sysfs sys /host/sys
mount -t devtmpfs dev /host/dev
mount -t tmpfs run /host/run
echo "SPECTRUM-TEST: l1 up"
exec chroot /host /bin/sh %s
`

// l1Script runs in the middle VM, chrooted into the host's root: it checks
// the VM directory, serves it with spectrumd (netvm started), copies
// netvm's serial log to the console, and once netvm has fetched the LAN's
// page reports what spectrumd left on the host side, stops netvm, and
// reports again.
const l1Script = `export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
BIN=%[1]s DATA=%[2]s ADDR=%[3]s
S=/run/spectrum-l1
mkdir -p $S/state $S/run
dev=/sys/bus/pci/devices/$ADDR
drv() { d=$(readlink $dev/driver); echo ${d##*/}; }
G=$(readlink $dev/iommu_group); G=${G##*/}
echo "SPECTRUM-TEST: l1 before driver=$(drv) group=$G groups=$(ls /sys/kernel/iommu_groups | wc -l)"
$BIN check -data $DATA -state $S/state 2>&1
# spectrumd's log, but for netvm's serial lines (tail copies them once);
# a spectrumd that exits fails the wait for netvm's lease at once.
($BIN serve -data $DATA -state $S/state -run $S/run -accel tcg -start netvm 2>&1
 echo "SPECTRUM-TEST: fail dhcp: spectrumd in L1 exited") | grep --line-buffered -v source=serial &
while [ ! -e $S/state/logs/netvm.log ]; do sleep 1; done
tail -n +1 -F $S/state/logs/netvm.log &
until grep -q "SPECTRUM-TEST: fetch .* ok" $S/state/logs/netvm.log; do sleep 1; done
pid=$(pgrep -f "guest=netvm")
other=denied
setpriv --reuid=4242 --regid=4242 --clear-groups sh -c "exec 3<>/dev/vfio/$G" 2>/dev/null && other=opened
echo "SPECTRUM-TEST: l1 running driver=$(drv) override=$(cat $dev/driver_override) node=$(stat -c '%%a/%%u/%%g' /dev/vfio/$G) qemu=$(stat -c %%u /proc/$pid) memlock=$(awk '/locked memory/ {print $4 "/" $5}' /proc/$pid/limits) other=$other"
$BIN status -run $S/run netvm 2>&1
$BIN stop -run $S/run netvm 2>&1
acl=no
case $(ls -l /dev/vfio/$G | cut -c11) in +) acl=yes ;; esac
echo "SPECTRUM-TEST: l1 stopped driver=$(drv) node=$(stat -c '%%a/%%u/%%g' /dev/vfio/$G) acl=$acl"
wait
`

// TestVFIONested: a netvm owns its NIC by VFIO (issue 19), proven where no
// IOMMU exists by nesting. The middle VM (L1: QEMU TCG, q35 with an
// emulated Intel IOMMU remapping interrupts, Debian's full kernel, the
// host's root read-only over 9p) has a "hardware" NIC, a virtio-net device
// behind the IOMMU whose backend is a tap on the test's LAN; its
// virtio-pci driver claims it at boot, as a host driver would. L1 runs the
// project's spectrumd with netvm's directory naming uplinks/pci/0000:00:03.0:
// spectrumd checks the device, takes it from virtio-pci, binds it to
// vfio-pci, and netvm (L2, the cloud kernel and the test init) gets a DHCP
// lease from the LAN through the passed device, with its real MAC, and
// fetches the LAN's page. Then: only netvm's QEMU could open the group,
// its memlock limit is its RAM plus the margin, and after stop the device
// is still on vfio-pci and the grant is gone.
func TestVFIONested(t *testing.T) {
	e := newEnv(t, 12*time.Minute)
	full, err := kernel.FindFull()
	testenv.NoErr(t, err, "make kernel fetches Debian's full kernel")
	start := time.Now()
	l := e.lan()
	e.spec(vm.Spec{Name: "netvm"})
	if err := os.MkdirAll(filepath.Join(e.data, "netvm", "uplinks", "pci"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(e.data, "netvm", "uplinks", "pci", hwAddr), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	e.setTest("netvm", "dhcp,fetch:"+webByName+",serve")

	// The hardware NIC's backend: a tap on the LAN's bridge.
	e.ns.IP("tuntap", "add", "dev", "l1hw", "mode", "tap", "vnet_hdr")
	e.ns.IP("link", "set", "l1hw", "master", lanBridge, "up")
	tap, err := vm.OpenTap(e.ns, "l1hw")
	if err != nil {
		t.Fatal(err)
	}
	defer tap.Close()

	dir := t.TempDir()
	initrd := filepath.Join(dir, "l1.cpio")
	writeHostRootInitramfs(t, full, initrd, l1Modules...)
	root, script := filepath.Join(dir, "l1-root.sh"), filepath.Join(dir, "l1.sh")
	if err := os.WriteFile(root, []byte(fmt.Sprintf(l1Root, script)), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(script, []byte(fmt.Sprintf(l1Script, spectrumdBin, e.data, hwAddr)), 0o644); err != nil {
		t.Fatal(err)
	}
	// The recipe: an emulated Intel IOMMU remapping interrupts,
	// the NIC behind it.
	l1 := startHostRootVM(t, "L1", full, initrd, root, "intel_iommu=on iommu=pt", nil, []*os.File{tap},
		"-m", "4G", "-device", "intel-iommu,intremap=on",
		"-netdev", "tap,id=hw,fd=3",
		"-device", "virtio-net-pci,netdev=hw,disable-legacy=on,iommu_platform=on,mac="+hwMAC+",addr=03.0,romfile=")
	ctx := e.ctx

	before := l1.Wait(t, ctx, "l1 before ", "fail l1", "fail root")
	if ev, _ := vm.Event(before.Text); vm.Field(ev, "driver") != "virtio-pci" || vm.Field(ev, "groups") == "0" {
		t.Fatalf("L1 before spectrumd: %s, want the NIC on virtio-pci and IOMMU groups", ev)
	}
	ev, _ := vm.Event(before.Text)
	group := vm.Field(ev, "group")

	addr, _ := lease(t, ctx, l1, "netvm's lease through the passed NIC", func(a netip.Prefix, dns string) bool {
		return inPool(a.Addr(), lan.First) && dns == lan.First.DNS.String()
	})
	checkPage(t, ok(t, ctx, l1, "fetch "+webByName+" ok"), lan.First.Web)
	t.Logf("netvm: lease %v and the LAN's page through the passed NIC %v after the start", addr, time.Since(start).Round(time.Second))
	// The LAN saw it from the NIC's own MAC: a hardware connection.
	if !strings.Contains(l.Log(), hwMAC) {
		t.Errorf("the LAN's DHCP server logged nothing from the NIC's MAC %s", hwMAC)
	}

	running := l1.Wait(t, ctx, "l1 running ", "fail l1")
	ev, _ = vm.Event(running.Text)
	// 256 MiB of guest RAM and the 1 GiB margin, soft and hard.
	const memlock = "1342177280/1342177280"
	for k, want := range map[string]string{"driver": "vfio-pci", "override": "vfio-pci", "node": "660/0/0", "memlock": memlock, "other": "denied"} {
		if got := vm.Field(ev, k); got != want {
			t.Errorf("L1 while netvm runs: %s=%s, want %s (%s)", k, got, want, ev)
		}
	}
	if q := vm.Field(ev, "qemu"); q == "0" || q == "" {
		t.Errorf("netvm's QEMU runs as uid %q, want its own", q)
	}
	stopped := l1.Wait(t, ctx, "l1 stopped ", "fail l1")
	ev, _ = vm.Event(stopped.Text)
	if vm.Field(ev, "driver") != "vfio-pci" || vm.Field(ev, "node") != "600/0/0" || vm.Field(ev, "acl") != "no" {
		t.Errorf("L1 after stop: %s, want the NIC on vfio-pci, its group node 600 root's, no ACL", ev)
	}
	out := l1.Serial.String()
	for _, want := range []string{
		"pci        " + hwAddr + "  class 0x020000  IOMMU group " + group + "  driver virtio-pci", // check, before
		"took " + hwAddr + " (vendor 0x1af4 device 0x1041) from virtio-pci and bound it to vfio-pci",
		"vfio-pci,host=" + hwAddr,
		"uplink pci " + hwAddr, // status
	} {
		if !strings.Contains(out, want) {
			t.Errorf("L1's console lacks %q", want)
		}
	}
	// The agent left the NIC to the guest: after its run, before the
	// DHCP client, the NIC has its own MAC and no address.
	first, _ := l1.Serial.State(1)
	var nic bool
	for _, e := range first {
		nic = nic || strings.HasPrefix(e, "link eth0 ") && vm.Field(e, "mac") == hwMAC && vm.Field(e, "up") == "false"
		if strings.HasPrefix(e, "addr eth0 ") {
			t.Errorf("netvm's NIC has an address before its DHCP client ran: %s", e)
		}
	}
	if !nic {
		t.Errorf("netvm's first state has no NIC eth0 with MAC %s, down: %q", hwMAC, first)
	}
	t.Logf("TestVFIONested: %v in all", time.Since(start).Round(time.Second))
}
