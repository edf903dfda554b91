package vmm

import (
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"spectrum-os.org/netcfg/host/daemon"
	"spectrum-os.org/netcfg/host/vfio/vfiotest"
	"spectrum-os.org/netcfg/internal/testenv"
)

// hasACL tells whether the node at p has an ACL.
func hasACL(t *testing.T, p string) bool {
	t.Helper()
	_, err := unix.Getxattr(p, "system.posix_acl_access", nil)
	if errors.Is(err, unix.ENODATA) {
		return false
	}
	if err != nil {
		t.Fatal(err)
	}
	return true
}

// TestGrantGroupsLive: an IOMMU group goes to one VM's QEMU at a time. A
// second VM whose device is in a group the first one's QEMU has is refused,
// naming the first, and keeps none of its other groups; once the first
// gives it back, the second gets both.
func TestGrantGroupsLive(t *testing.T) {
	testenv.Root(t, "to make device nodes")
	h := vfiotest.New(t, true)
	for _, g := range []string{"3", "4"} {
		if err := unix.Mknod(h.Path("dev/vfio/"+g), unix.S_IFCHR|0o600, int(unix.Mkdev(1, 3))); err != nil {
			testenv.Skip(t, "mknod in a temporary directory: "+err.Error())
		}
	}
	q := &QEMU{opt: Options{VFIO: &h.Host, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}, groups: map[int]string{}}
	a := []daemon.PCIDevice{{Addr: "0000:00:03.0", Group: 3}}
	b := []daemon.PCIDevice{{Addr: "0000:00:04.0", Group: 4}, {Addr: "0000:00:03.1", Group: 3}}
	ga, err := q.grant("a", a, 393001)
	if err != nil {
		t.Fatalf("grant a: %v", err)
	}
	if _, err := q.grant("b", b, 393002); err == nil || !strings.Contains(err.Error(), "IOMMU group 3 is VM a's") {
		t.Fatalf("grant b while a has group 3: %v, want a refusal naming VM a", err)
	}
	if hasACL(t, h.GroupNode(4)) {
		t.Error("b's refused launch left group 4 granted")
	}
	if !hasACL(t, h.GroupNode(3)) {
		t.Error("b's refused launch took a's grant of group 3")
	}
	q.revoke("a", ga, q.opt.Log)
	if hasACL(t, h.GroupNode(3)) {
		t.Error("a's grant outlived its revoke")
	}
	gb, err := q.grant("b", b, 393002)
	if err != nil || len(gb) != 2 {
		t.Fatalf("grant b after a: %v, %v", gb, err)
	}
	q.revoke("b", gb, q.opt.Log)
	if len(q.groups) != 0 {
		t.Errorf("groups still recorded: %v", q.groups)
	}
}
