package dist

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"spectrum-os.org/netcfg/internal/nstest"
	"spectrum-os.org/netcfg/internal/testenv"
)

// The provider's own systemd-networkd must leave the 0A:B3:EC NICs to
// spectrum-router (issue 17): a DHCP client on a provider link would make
// a client the provider's DHCP server. TestNetworkdLeavesProviderNICs runs
// the real systemd-udevd and systemd-networkd in a fresh network namespace
// and a mount namespace of their own (private /run, /dev, rules and
// network directories; the machine's are never touched), with the files
// `make install` installs in their installed places and a provider's own
// catch-all .network that configures every NIC it manages. A plain NIC is
// configured (networkd and udev work); the 0A:B3:EC NIC is unmanaged and
// gets nothing. Without the installed files, networkd configures it too:
// the test can fail.
func TestNetworkdLeavesProviderNICs(t *testing.T) {
	const udevd, networkd = "/lib/systemd/systemd-udevd", "/lib/systemd/systemd-networkd"
	for _, p := range []string{udevd, networkd} {
		if _, err := os.Stat(p); err != nil {
			testenv.Skip(t, p+": "+err.Error()+" (make deps installs systemd and udev)")
		}
	}
	dest := install(t, "INITRAMFS=")
	for _, tt := range []struct {
		name    string
		shipped bool
	}{
		{"without the shipped files", false},
		{"with the shipped files", true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ns := nstest.New(t)
			root := startNetworkd(t, ns, dest, tt.shipped)
			// MACs at creation, as a VM's virtio NICs have them: a
			// MAC changed later is no uevent.
			ns.IP("link", "add", "p1", "address", "0a:b3:ec:80:00:01", "type", "veth",
				"peer", "name", "x1", "address", "52:54:00:00:00:11")
			waitAddr(t, ns, root, "x1", "192.0.2.77/24")
			state := linkState(t, ns, root, "p1")
			if !tt.shipped {
				if !strings.Contains(state, "\nADMIN_STATE=configured\n") && !strings.Contains(state, "\nADMIN_STATE=configuring\n") {
					t.Fatalf("networkd did not take p1 without the shipped files: the test proves nothing; state:\n%s", state)
				}
				waitAddr(t, ns, root, "p1", "192.0.2.77/24")
				return
			}
			if !strings.Contains(state, "\nADMIN_STATE=unmanaged\n") {
				t.Errorf("p1's networkd state, want ADMIN_STATE=unmanaged:\n%s", state)
			}
			// Give networkd the time it took for x1 again: nothing
			// may come later either.
			time.Sleep(time.Second)
			if a := addrs(t, ns, "p1"); len(a) != 0 {
				t.Errorf("p1 has addresses %q", a)
			}
			if out := string(ns.IP("-j", "link", "show", "p1")); strings.Contains(out, `"UP"`) {
				t.Errorf("networkd set p1 up: %s", out)
			}
		})
	}
}

// startNetworkd runs systemd-udevd and systemd-networkd in ns, in a mount
// namespace of their own, and returns that namespace's root as this
// process sees it (/proc/PID/root). With shipped, the udev rule and the
// .network file installed under dest are in /usr/local/lib, where make
// install puts them; /etc/systemd/network holds the provider's catch-all.
func startNetworkd(t *testing.T, ns *nstest.NS, dest string, shipped bool) string {
	t.Helper()
	catchAll := filepath.Join(t.TempDir(), "50-provider.network")
	if err := os.WriteFile(catchAll, []byte(`# The provider's own: every NIC networkd manages gets an address.
[Match]
Name=*

[Network]
Address=192.0.2.77/24
ConfigureWithoutCarrier=yes
LinkLocalAddressing=no
IPv6AcceptRA=no
`), 0o644); err != nil {
		t.Fatal(err)
	}
	ship := ""
	if shipped {
		ship = `cp -a "$1/usr/local/lib/." /usr/local/lib/`
	}
	// udevd and networkd see only these directories: no rule of the
	// machine's runs, on these NICs or on the machine's devices, whose
	// events also reach this namespace. /dev is a tmpfs (udevd creates
	// nodes and links there) with the few nodes both need, made here.
	script := `set -e
for d in /run /dev /etc/udev/rules.d /usr/lib/udev/rules.d /lib/udev/rules.d /etc/systemd/network /usr/lib/systemd/network /lib/systemd/network /usr/local/lib; do
	mount -t tmpfs none "$d"
done
mknod -m 666 /dev/null c 1 3; mknod -m 666 /dev/zero c 1 5; mknod -m 666 /dev/random c 1 8; mknod -m 666 /dev/urandom c 1 9
` + ship + `
cp "$2" /etc/systemd/network/
# What systemd-networkd.service's RuntimeDirectory= makes.
mkdir -p /run/systemd/netif/links /run/systemd/netif/leases /run/systemd/netif/lldp
chown -R systemd-network:systemd-network /run/systemd/netif
` + "/lib/systemd/systemd-udevd &\n" + `
while [ ! -S /run/udev/control ]; do sleep 0.05; done
SYSTEMD_LOG_LEVEL=debug /lib/systemd/systemd-networkd &
wait`
	cmd := ns.Command(context.Background(), "unshare", "--mount", "--propagation", "private",
		"sh", "-c", script, "sh", dest, catchAll)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	log := filepath.Join(t.TempDir(), "log")
	f, err := os.Create(log)
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	f.Close()
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-done
		}
		if t.Failed() {
			b, _ := os.ReadFile(log)
			t.Logf("udevd and networkd:\n%s", b)
		}
	})
	root := "/proc/" + strconv.Itoa(cmd.Process.Pid) + "/root"
	// networkd writes its state file once it has listed the links,
	// after it listens to udev's events: a NIC made before could be
	// initialised by udev before networkd listens, and wait forever
	// (systemd orders networkd after udev's trigger instead).
	waitFor(t, done, log, func() bool {
		_, err := os.Stat(root + "/run/systemd/netif/state")
		return err == nil
	}, "networkd's /run/systemd/netif/state")
	return root
}

// waitFor polls ok until it holds, or fails the test at 60 s or when the
// daemons exit.
func waitFor(t *testing.T, done chan struct{}, log string, ok func() bool, what string) {
	t.Helper()
	end := time.Now().Add(60 * time.Second)
	for !ok() {
		select {
		case <-done:
			b, _ := os.ReadFile(log)
			t.Fatalf("udevd and networkd exited before %s:\n%s", what, b)
		default:
		}
		if time.Now().After(end) {
			t.Fatalf("no %s in 60 s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitAddr waits until nic in ns has the address prefix.
func waitAddr(t *testing.T, ns *nstest.NS, root, nic, prefix string) {
	t.Helper()
	end := time.Now().Add(60 * time.Second)
	for {
		for _, a := range addrs(t, ns, nic) {
			if a == prefix {
				return
			}
		}
		if time.Now().After(end) {
			t.Fatalf("%s has no %s after 60 s (addresses %q); networkd's state:\n%s", nic, prefix, addrs(t, ns, nic), linkState(t, ns, root, nic))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// addrs lists nic's IPv4 and IPv6 addresses in ns as ADDR/LEN.
func addrs(t *testing.T, ns *nstest.NS, nic string) []string {
	t.Helper()
	var out []struct {
		AddrInfo []struct {
			Local     string `json:"local"`
			PrefixLen int    `json:"prefixlen"`
		} `json:"addr_info"`
	}
	if err := json.Unmarshal(ns.IP("-j", "addr", "show", "dev", nic), &out); err != nil || len(out) != 1 {
		t.Fatalf("ip addr show %s: %v", nic, err)
	}
	var as []string
	for _, a := range out[0].AddrInfo {
		as = append(as, a.Local+"/"+strconv.Itoa(a.PrefixLen))
	}
	return as
}

// linkState is networkd's state file for nic (ADMIN_STATE=...), once it
// has one.
func linkState(t *testing.T, ns *nstest.NS, root, nic string) string {
	t.Helper()
	var ls []struct {
		Index int `json:"ifindex"`
	}
	if err := json.Unmarshal(ns.IP("-j", "link", "show", "dev", nic), &ls); err != nil || len(ls) != 1 {
		t.Fatalf("ip link show %s: %v", nic, err)
	}
	p := root + "/run/systemd/netif/links/" + strconv.Itoa(ls[0].Index)
	end := time.Now().Add(60 * time.Second)
	for {
		b, err := os.ReadFile(p)
		if err == nil && !strings.Contains(string(b), "\nADMIN_STATE=pending\n") {
			return string(b)
		}
		if time.Now().After(end) {
			t.Fatalf("networkd's state of %s: %v\n%s", nic, err, b)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
