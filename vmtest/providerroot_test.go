package vmtest

import (
	"context"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"spectrum-os.org/netcfg/guest/router"
	"spectrum-os.org/netcfg/internal/mac"
	"spectrum-os.org/netcfg/internal/nstest"
	"spectrum-os.org/netcfg/internal/testenv"
	"spectrum-os.org/netcfg/vmtest/distinit"
	"spectrum-os.org/netcfg/vmtest/kernel"
	"spectrum-os.org/netcfg/vmtest/lan"
	"spectrum-os.org/netcfg/vmtest/vm"
)

// The provider root's NICs: its uplink on the LAN (a MAC of its own) and
// one provider NIC, whose client is a namespace on the host.
const (
	rootUplinkMAC = "52:54:00:5e:00:54"
	rootLink      = "12:34"
)

// rootModules are what the provider root's initramfs loads: its root (9p,
// an overlay on it). Everything else (virtio_net, nf_tables, conntrack,
// NAT) the root's own udev and the kernel's module autoloading load.
var rootModules = []string{"virtio_pci", "9pnet_virtio", "9p", "overlay"}

// providerRootScript is what hostRootInit runs for the provider root: a
// writable overlay on the host's root (Debian bookworm with systemd 252),
// Debian's full kernel's modules in their place (modulesDir), `make install`'s tree
// and the test's files copied in, the router enabled as its unit file says
// (`systemctl enable spectrum-router`), then systemd as PID 1.
const providerRootScript = `K=%[1]s MODS=%[2]s STAGE=%[3]s
mkdir -p /rw /newroot
mount -t tmpfs rw /rw
mkdir -p /rw/u /rw/w
if ! mount -t overlay root -o lowerdir=/host,upperdir=/rw/u,workdir=/rw/w /newroot; then
	echo "SPECTRUM-TEST: fail root overlay"
	poweroff -f
fi
mkdir -p /newroot/usr/lib/modules/$K /newroot/.spectrum-host
mount --bind /host$MODS /newroot/usr/lib/modules/$K
# The host's root where modulesDir's link to the modules points: not at
# the host's own path, which may be under /tmp (a tmpfs of the root's).
mount --bind /host /newroot/.spectrum-host

# A VM, not the container the host may be (systemd would take the kernel's
# command line for a container's); /tmp its own, not the host's to clean.
rm -f /newroot/.dockerenv /newroot/etc/resolv.conf
mount -t tmpfs tmp /newroot/tmp
cp -a /host$STAGE/. /newroot/
chroot /newroot systemctl enable spectrum-router.service 2>&1
echo "SPECTRUM-TEST: root switching"
exec switch_root /newroot /lib/systemd/systemd
`

// providerRootReport runs in the provider root as a service of the test's
// target: once networkd has the uplink's lease and the router has the
// provider NIC up, it reports both NICs' networkd state, the router's,
// and the order the two started in; on "stop" from the test (the serial
// line) it stops the router as systemd does at shutdown and reports what
// the router left. It reports through the kernel's log (on the console):
// its serial line, its standard input, was sometimes hung up by the time
// the router had stopped, and what it wrote after that was lost.
const providerRootReport = `say() { echo "SPECTRUM-TEST: $*" >/dev/kmsg; }
say "root report"
nic() { for n in /sys/class/net/*; do [ "$(cat $n/address)" = "$1" ] && echo ${n##*/}; done; return 0; }
state() { sed -n 's/^ADMIN_STATE=//p' /run/systemd/netif/links/$(cat /sys/class/net/$1/ifindex) 2>/dev/null; }
addrs() { ip -o addr show dev $1 | awk '{print $4}' | paste -sd, -; }
started() { systemctl show -p ActiveEnterTimestampMonotonic --value $1; }
until UP=$(nic %[1]s) && P=$(nic %[2]s) && [ -n "$UP" ] && [ -n "$P" ] &&
	ip -4 -o addr show dev $UP | grep -q inet && ip -4 -o addr show dev $P | grep -q inet; do
	sleep 1
done
say "root ready uplink=$UP uplink_state=$(state $UP) uplink_addrs=$(addrs $UP) provider=$P provider_state=$(state $P)" \
	"provider_addrs=$(addrs $P) router=$(systemctl is-active spectrum-router) router_at=$(started spectrum-router)" \
	"networkd_at=$(started systemd-networkd) forward=$(cat /proc/sys/net/ipv4/ip_forward)"
stty -echo
while read -r line; do
	[ "$line" = stop ] && break
done
say "root resolv $(awk '/^nameserver/ {print $2}' /etc/resolv.conf | paste -sd, -) provider_addrs=$(addrs $P) provider_state=$(state $P)"
systemctl --no-ask-password stop spectrum-router </dev/null
up=no
ip -o link show dev $P | grep -q '[<,]UP[,>]' && up=yes
say "root stopped router=$(systemctl is-active spectrum-router) result=$(systemctl show -p Result --value spectrum-router)" \
	"forward=$(cat /proc/sys/net/ipv4/ip_forward) provider_up=$up tables=$(nft list tables | grep -c spectrum-router)" \
	"rules=$(ip rule | grep -c 100.64.0.0/16)"
say "root done"
`

// TestProviderRootNetworkd: a provider whose root is a real Debian system
// (issue 17: "test at least networkd with a real provider root"): systemd
// 252 as PID 1, its udevd and systemd-networkd with a catch-all .network
// that runs DHCP on every Ethernet NIC (as a provider's own configuration
// would), the files `make install` installs, and spectrum-router enabled as
// its unit file says. The root is the host's own, read-only over 9p under
// a writable overlay, on Debian's full kernel (TCG). Its provider NIC's
// client is a namespace on the host, configured by spectrum-netcfg, which
// also runs a DHCP server on the link: a client offering to be the
// provider's DHCP server. Checked: networkd gets the uplink's lease and
// leaves the provider NIC unmanaged (no DHCP, no address of the client's
// offer, resolv.conf untouched); the router starts before networkd (its
// unit's ordering) and brings the provider NIC up with its addresses; the
// client fetches the LAN's page by name through the provider (the
// router's forwarder, NAT); `systemctl stop` (SIGTERM) leaves the provider
// NIC down, forwarding as it was and no table or guard behind.
func TestProviderRootNetworkd(t *testing.T) {
	e := newEnv(t, 8*time.Minute)
	full, err := kernel.FindFull()
	testenv.NoErr(t, err, "make kernel fetches Debian's full kernel")
	for _, p := range []string{"/lib/systemd/systemd", "/lib/systemd/systemd-networkd", "/lib/systemd/systemd-udevd"} {
		_, err := os.Stat(p)
		testenv.NoErr(t, err, "make deps installs systemd and udev")
	}
	start := time.Now()
	l := e.lan()
	link, err := mac.ParseLinkID(rootLink)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()

	// make install's tree, and the provider's own configuration.
	root, err := kernel.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	bins := filepath.Join(dir, "bin")
	if err := distinit.BuildBins(root, bins); err != nil {
		t.Fatal(err)
	}
	stage := filepath.Join(dir, "stage")
	if out, err := distinit.Install(root, bins, stage, "INITRAMFS="); err != nil {
		t.Fatal(err)
	} else {
		t.Logf("make install:\n%s", out)
	}
	files := map[string]string{
		// The provider's own catch-all: DHCP on every Ethernet NIC.
		"etc/systemd/network/99-provider.network": "[Match]\nType=ether\n\n[Network]\nDHCP=ipv4\nIPv6AcceptRA=no\nLinkLocalAddressing=no\n",
		// Its resolver, as its administrator wrote it (without resolved).
		"etc/resolv.conf":                        "nameserver " + lan.First.DNS.String() + "\n",
		"etc/fstab":                              "",
		"usr/local/libexec/spectrum-test-report": fmt.Sprintf(providerRootReport, rootUplinkMAC, strings.ToLower(link.MAC(mac.Provider).String())),
		"etc/systemd/system/spectrum-test.target": "[Unit]\nDescription=spectrum test: a provider root\nRequires=basic.target\n" +
			"Wants=systemd-networkd.service spectrum-test.service\nAfter=basic.target\n",
		"etc/systemd/system/spectrum-test.service": "[Unit]\nDescription=spectrum test: report\nAfter=spectrum-router.service systemd-networkd.service\n\n" +
			"[Service]\nExecStart=/bin/sh /usr/local/libexec/spectrum-test-report\n" +
			"StandardInput=tty-force\nStandardOutput=tty\nTTYPath=/dev/ttyS0\n",
	}
	for p, s := range files {
		writeFile(t, filepath.Join(stage, p), s)
	}
	// Nothing of the host's own that would talk to the world.
	if err := os.Symlink("/dev/null", filepath.Join(stage, "etc/systemd/system/systemd-timesyncd.service")); err != nil {
		t.Fatal(err)
	}
	script := filepath.Join(dir, "root.sh")
	version, mods := modulesDir(t, full, filepath.Join(dir, "modules"))
	writeFile(t, script, fmt.Sprintf(providerRootScript, version, mods, stage))
	initrd := filepath.Join(dir, "root.cpio")
	writeHostRootInitramfs(t, full, initrd, rootModules...)

	// The uplink: a tap on the LAN's bridge. The provider NIC: a tap in
	// the client's namespace, which is the client's NIC.
	e.ns.IP("tuntap", "add", "dev", "rootup", "mode", "tap", "vnet_hdr")
	e.ns.IP("link", "set", "rootup", "master", lanBridge, "up")
	up, err := vm.OpenTap(e.ns, "rootup")
	if err != nil {
		t.Fatal(err)
	}
	defer up.Close()
	client := nstest.New(t)
	client.IP("tuntap", "add", "dev", "c1", "mode", "tap", "vnet_hdr")
	client.IP("link", "set", "c1", "address", link.MAC(mac.Client).String())
	p1, err := vm.OpenTap(client, "c1")
	if err != nil {
		t.Fatal(err)
	}
	defer p1.Close()

	console, serialIn := io.Pipe()
	defer serialIn.Close()
	prov := startHostRootVM(t, "provider", full, initrd, script, "systemd.unit=spectrum-test.target systemd.show_status=false systemd.journald.forward_to_console=1 printk.devkmsg=on",
		console, []*os.File{up, p1}, "-m", "1G",
		"-netdev", "tap,id=up,fd=3", "-device", "virtio-net-pci,netdev=up,mac="+rootUplinkMAC,
		"-netdev", "tap,id=p1,fd=4", "-device", "virtio-net-pci,netdev=p1,mac="+link.MAC(mac.Provider).String())
	ctx := e.ctx

	// The client: configured by the hook, and offering DHCP on its link.
	agent := filepath.Join(bins, "spectrum-netcfg")
	if out, err := client.Command(ctx, agent, "-console", "/dev/stdout").CombinedOutput(); err != nil {
		t.Fatalf("spectrum-netcfg in the client: %v\n%s", err, out)
	}
	client.IP("addr", "add", "192.0.2.1/24", "dev", "c1")
	rogue := client.Command(ctx, "dnsmasq", "--keep-in-foreground", "--no-resolv", "--no-hosts", "--port=0",
		"--interface=c1", "--bind-interfaces", "--dhcp-range=192.0.2.100,192.0.2.150", "--dhcp-option=6,192.0.2.1",
		"--dhcp-leasefile="+filepath.Join(dir, "rogue.leases"), "--pid-file=", "--log-dhcp")
	var rogueLog strings.Builder
	rogue.Stdout, rogue.Stderr = &rogueLog, &rogueLog
	if err := rogue.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { rogue.Process.Kill(); rogue.Wait() }()

	ready := prov.Wait(t, ctx, "root ready ", "fail root")
	ev, _ := vm.Event(ready.Text)
	if ev == "" || strings.HasPrefix(ev, "fail") {
		t.Fatalf("provider root: %s", ready.Text)
	}
	t.Logf("provider root ready %v after the start: %s", time.Since(start).Round(time.Second), ev)
	gw := link.Gateway().String() + "/32"
	for k, want := range map[string]string{"uplink_state": "configured", "provider_state": "unmanaged", "router": "active", "forward": "1"} {
		if got := vm.Field(ev, k); got != want {
			t.Errorf("provider root: %s=%q, want %q (%s)", k, got, want, ev)
		}
	}
	if a := vm.Field(ev, "provider_addrs"); !strings.HasPrefix(a, gw+",") || strings.Contains(a, "192.0.2.") {
		t.Errorf("provider NIC's addresses %q, want the router's (%s first) and nothing else", a, gw)
	}
	if a, err := netip.ParsePrefix(strings.Split(vm.Field(ev, "uplink_addrs"), ",")[0]); err != nil || !inPool(a.Addr(), lan.First) {
		t.Errorf("provider root's uplink: %s, want networkd's lease of the LAN's pool", ev)
	}
	if r, n := vm.Field(ev, "router_at"), vm.Field(ev, "networkd_at"); len(r) > len(n) || len(r) == len(n) && r >= n {
		t.Errorf("spectrum-router started at %s µs, networkd at %s: the router must start first (Before=network-pre.target)", r, n)
	}

	// The client fetches the LAN's page by name through its provider.
	resolv := filepath.Join("/etc/netns", client.Name, "resolv.conf")
	writeFile(t, resolv, "nameserver "+router.Resolver+"\n")
	t.Cleanup(func() { os.RemoveAll(filepath.Dir(resolv)) })
	fetch, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	page, err := client.Command(fetch, "busybox", "wget", "-q", "-O", "-", webByName).Output()
	if err != nil {
		t.Errorf("the client's wget %s through the provider root: %v", webByName, err)
	} else if string(page) != lan.FrontPageFor("IPv4") {
		t.Errorf("the client got %q, want the LAN's front page", page)
	}
	for _, r := range l.Requests() {
		if clients.Contains(r.Remote.Addr()) {
			t.Errorf("the LAN's web server saw a client's address: %+v", r)
		}
	}
	if len(l.Requests()) != 1 {
		t.Errorf("the LAN's web server answered %d requests, want 1: %+v", len(l.Requests()), l.Requests())
	}

	if _, err := io.WriteString(serialIn, "stop\n"); err != nil {
		t.Fatal(err)
	}
	rv := prov.Wait(t, ctx, "root resolv ", "fail root")
	ev, _ = vm.Event(rv.Text)
	if f := strings.Fields(ev); len(f) < 3 || f[2] != lan.First.DNS.String() || vm.Field(ev, "provider_state") != "unmanaged" ||
		strings.Contains(vm.Field(ev, "provider_addrs"), "192.0.2.") {
		t.Errorf("after the client's DHCP offers: %s; want resolv.conf naming %v only, the provider NIC unmanaged and without the offered address",
			ev, lan.First.DNS)
	}
	stopped := prov.Wait(t, ctx, "root stopped ", "fail root")
	ev, _ = vm.Event(stopped.Text)
	for k, want := range map[string]string{"router": "inactive", "result": "success", "forward": "0", "provider_up": "no", "tables": "0", "rules": "0"} {
		if got := vm.Field(ev, k); got != want {
			t.Errorf("after systemctl stop spectrum-router: %s=%q, want %q (%s)", k, got, want, ev)
		}
	}
	prov.Wait(t, ctx, "root done", "fail root")
	out := prov.Serial.String()
	// The router logs to the console (the serial line spectrumd forwards
	// to the host's journal), not to the guest's journal.
	for _, want := range []string{"router: routing for client " + link.ClientAddr().String(), "spectrum-router: set net.ipv4.ip_forward 0 again"} {
		if !strings.Contains(out, want) {
			t.Errorf("the provider's console lacks %q", want)
		}
	}
	t.Logf("TestProviderRootNetworkd: %v in all; the rogue DHCP server's log:\n%s", time.Since(start).Round(time.Second), rogueLog.String())
}

// writeFile writes s to path, making its directory.
func writeFile(t *testing.T, path, s string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	mode := os.FileMode(0o644)
	if strings.Contains(path, "libexec") {
		mode = 0o755
	}
	if err := os.WriteFile(path, []byte(s), mode); err != nil {
		t.Fatal(err)
	}
}

// modulesDir makes the modules directory of Debian's full kernel k for
// the provider root under dir: its modules (a link to the cached tree, seen
// in the root under /.spectrum-host) with depmod's indexes, which the cached
// tree lacks (a package's postinst makes them), so that the root's udev
// and the kernel's module autoloading find them. It returns the kernel's
// version and the directory.
func modulesDir(t *testing.T, k kernel.Kernel, dir string) (version, path string) {
	t.Helper()
	testenv.Tool(t, "depmod", "make deps installs kmod")
	src, err := filepath.EvalSymlinks(k.Modules)
	if err != nil {
		t.Fatal(err)
	}
	version = filepath.Base(src)
	path = filepath.Join(dir, "lib", "modules", version)
	if err := os.MkdirAll(path, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(src, "kernel"), filepath.Join(path, "kernel")); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"modules.order", "modules.builtin", "modules.builtin.modinfo"} {
		b, err := os.ReadFile(filepath.Join(src, f))
		if err != nil {
			t.Fatal(err)
		}
		writeFile(t, filepath.Join(path, f), string(b))
	}
	if out, err := exec.Command("depmod", "-b", dir, version).CombinedOutput(); err != nil {
		t.Fatalf("depmod -b %s %s: %v\n%s", dir, version, err, out)
	}
	// depmod's indexes name the modules relative to the directory; in
	// the root the link goes through providerRootScript's mount of the
	// host's root, since the tree may be under the host's /tmp, which
	// the root has a tmpfs of its own on.
	link := filepath.Join(path, "kernel")
	if err := os.Remove(link); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join("/.spectrum-host", src, "kernel"), link); err != nil {
		t.Fatal(err)
	}
	return version, path
}
