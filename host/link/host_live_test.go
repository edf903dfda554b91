package link

import (
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"spectrum-os.org/netcfg/internal/mac"
	"spectrum-os.org/netcfg/internal/nstest"
	"spectrum-os.org/netcfg/internal/testenv"
)

// nsids lists the ids ns has given other namespaces (ip netns list-id):
// an id goes when the namespace it names is gone.
func nsids(t *testing.T, ns *nstest.NS) []int {
	t.Helper()
	var ids []struct {
		NSID int `json:"nsid"`
	}
	if out := ns.IP("-j", "netns", "list-id"); len(out) > 0 {
		if err := json.Unmarshal(out, &ids); err != nil {
			t.Fatalf("%s: %v", out, err)
		}
	}
	var out []int
	for _, i := range ids {
		out = append(out, i.NSID)
	}
	return out
}

// TestLinksNamespaceLifetime: the links' namespace of a Host lives while
// the Host or a tap opened in it (a QEMU's) is held, and the kernel removes
// it, with its links, when the last goes: what a spectrumd that dies leaves
// is gone once its QEMUs are. It is watched from spectrumd's namespace by
// the id that one gives it.
func TestLinksNamespaceLifetime(t *testing.T) {
	ns := nstest.New(t)
	own, err := netns.GetFromPath(ns.Path())
	if err != nil {
		t.Fatal(err)
	}
	defer own.Close()
	host, err := OpenHost(own, nil)
	if err != nil {
		t.Fatal(err)
	}
	const id = mac.LinkID(0x0a0b)
	if err := host.Create(id); err != nil {
		host.Close()
		t.Fatal(err)
	}
	tap, err := host.OpenTap(id, mac.Client)
	if err != nil {
		host.Close()
		t.Fatal(err)
	}
	h, err := netlink.NewHandleAt(own)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	if err := h.SetNetNsIdByFd(int(host.Namespace()), 77); err != nil {
		t.Fatal(err)
	}
	if got := nsids(t, ns); len(got) != 1 || got[0] != 77 {
		t.Fatalf("ids %v, want the links' namespace's 77", got)
	}
	if l, err := nstest.IPAt("/proc/"+strconv.Itoa(os.Getpid())+"/fd/"+strconv.Itoa(int(host.Namespace())), "-br", "link"); err != nil || !strings.Contains(string(l), "spbr-0a0b") {
		t.Errorf("links' namespace: %s %v", l, err)
	}
	host.Close()
	time.Sleep(200 * time.Millisecond)
	if got := nsids(t, ns); len(got) != 1 {
		t.Errorf("links' namespace gone with the tap still held open: ids %v", got)
	}
	tap.Close()
	deadline := time.Now().Add(10 * time.Second)
	for len(nsids(t, ns)) != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("links' namespace still there 10 s after its last holder went: ids %v", nsids(t, ns))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// envReadOnly marks the test process TestReadOnlyProcSys runs with
// /proc/sys read-only.
const envReadOnly = "SPECTRUM_TEST_PROC_SYS_RO"

// TestReadOnlyProcSys runs the tests of links, uplinks, port locks and the
// links' namespace again in a process whose /proc/sys is read-only, as
// systemd's ProtectKernelTunables=yes makes it: nothing here may need to
// write it. (TestHostTakesNoPart is not among them: its stand-in host
// needs sysctls written; what it checks of our interfaces, these check.)
func TestReadOnlyProcSys(t *testing.T) {
	if os.Getenv(envReadOnly) != "" {
		t.Skip("in the read-only child (CI runs the child from the parent test)")
	}
	testenv.Root(t, "needs root to make /proc/sys read-only in a mount namespace")
	unshare := testenv.Tool(t, "unshare", "util-linux provides it")
	cmd := exec.Command(unshare, "--mount", "--propagation", "private", "--", "sh", "-c",
		`mount --bind /proc/sys /proc/sys && mount -o remount,bind,ro /proc/sys && exec "$@"`, "sh",
		os.Args[0], "-test.count=1", "-test.v",
		"-test.run=^(TestProcSysIsReadOnly|TestCreateDelete|TestOpenTap|TestUplink|TestUplinkCannotForgeMAC|TestProviderCannotForgeMAC|TestRandomMACsGrowNothing|TestLinksNamespaceLifetime)$")
	cmd.Env = append(os.Environ(), envReadOnly+"=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("with /proc/sys read-only: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "--- PASS: TestProcSysIsReadOnly") || strings.Contains(string(out), "--- SKIP") {
		t.Fatalf("the read-only child did not run every test:\n%s", out)
	}
}

// TestProcSysIsReadOnly checks, in TestReadOnlyProcSys's child, that the
// child's /proc/sys is read-only indeed.
func TestProcSysIsReadOnly(t *testing.T) {
	if os.Getenv(envReadOnly) == "" {
		t.Skip("runs only in TestReadOnlyProcSys's child process (which CI runs)")
	}
	err := os.WriteFile("/proc/sys/net/ipv4/conf/all/forwarding", []byte("0\n"), 0)
	if !errors.Is(err, unix.EROFS) {
		t.Fatalf("writing /proc/sys: %v, want EROFS", err)
	}
}
