package vfio_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"spectrum-os.org/netcfg/host/vfio/vfiotest"

	"spectrum-os.org/netcfg/internal/testenv"
)

// opens tells whether uid can open p read-write, as QEMU opens a group.
func opens(t *testing.T, uid uint32, p string) bool {
	t.Helper()
	cmd := exec.Command("/bin/sh", "-c", `exec 3<>"$1"`, "sh", p)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: uid}}
	return cmd.Run() == nil
}

// TestGrantLive: the attacker's side. A group node (a character device, as
// /dev/vfio/N is) granted to one VM's uid opens for that uid only: not for
// another VM's, not for the group's, not once revoked. A node not root's,
// or not a device, is refused.
func TestGrantLive(t *testing.T) {
	testenv.Root(t, "to make a device node and switch uids")
	h := vfiotest.New(t, true)
	node := h.GroupNode(7)
	if err := unix.Mknod(node, unix.S_IFCHR|0o600, int(unix.Mkdev(1, 3))); err != nil { // /dev/null's numbers
		testenv.Skip(t, "mknod in a temporary directory: "+err.Error())
	}
	for _, d := range []string{filepath.Dir(h.Root), h.Root, filepath.Dir(h.Dev), h.Dev, filepath.Dir(node)} {
		os.Chmod(d, 0o755)
	}
	const vm, other = 393001, 393002
	if opens(t, vm, node) {
		t.Fatal("uid opens the node before any grant: the test proves nothing")
	}
	if err := h.Grant(7, vm); err != nil {
		t.Fatalf("Grant: %v", err)
	}
	if !opens(t, vm, node) {
		t.Error("the VM's uid cannot open its group's node")
	}
	if opens(t, other, node) {
		t.Error("another uid opens the group's node")
	}
	var st unix.Stat_t
	unix.Stat(node, &st)
	if st.Mode&0o007 != 0 || st.Uid != 0 {
		t.Errorf("node mode %o, uid %d: want no access for others, root's", st.Mode&0o777, st.Uid)
	}
	if err := h.Grant(7, other); err != nil {
		t.Fatalf("Grant to another: %v", err)
	}
	if opens(t, vm, node) {
		t.Error("a grant to another uid leaves the first one's")
	}
	if err := h.Revoke(7); err != nil {
		t.Fatalf("Revoke: %v", err)
	}
	if opens(t, other, node) || opens(t, vm, node) {
		t.Error("a uid opens the node after Revoke")
	}
	if err := h.Revoke(8); err != nil {
		t.Errorf("Revoke of a group with no node: %v", err)
	}

	os.Chown(node, vm, vm)
	if err := h.Grant(7, other); err == nil {
		t.Error("Grant on a node root does not own: nil error")
	}
	h.Write("dev/vfio/9", "")
	if err := h.Grant(9, vm); err == nil {
		t.Error("Grant on a regular file: nil error")
	}
	if err := h.Grant(7, 0); err == nil {
		t.Error("Grant to uid 0: nil error")
	}
}

// TestRevokeAllLive: what a spectrumd that died left granted is taken back
// at the next start; nodes without a grant and the container node are left
// as they are.
func TestRevokeAllLive(t *testing.T) {
	testenv.Root(t, "to make device nodes")
	h := vfiotest.New(t, true)
	for _, g := range []string{"3", "4"} {
		if err := unix.Mknod(h.Path("dev/vfio/"+g), unix.S_IFCHR|0o600, int(unix.Mkdev(1, 3))); err != nil {
			testenv.Skip(t, "mknod in a temporary directory: "+err.Error())
		}
	}
	if err := unix.Mknod(h.Path("dev/vfio/vfio"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))); err != nil {
		t.Fatal(err)
	}
	unix.Chmod(h.Path("dev/vfio/vfio"), 0o666)
	if err := h.Grant(4, 393001); err != nil {
		t.Fatal(err)
	}
	had, err := h.RevokeAll()
	if err != nil || len(had) != 1 || had[0] != 4 {
		t.Fatalf("RevokeAll: %v, %v; want group 4 only", had, err)
	}
	for _, n := range []string{"dev/vfio/3", "dev/vfio/4"} {
		if _, err := unix.Getxattr(h.Path(n), "system.posix_acl_access", nil); err == nil {
			t.Errorf("%s has an ACL after RevokeAll", n)
		}
	}
	var st unix.Stat_t
	unix.Stat(h.Path("dev/vfio/vfio"), &st)
	if st.Mode&0o777 != 0o666 {
		t.Errorf("the container node's mode became %o", st.Mode&0o777)
	}
	if had, err := h.RevokeAll(); err != nil || len(had) != 0 {
		t.Errorf("RevokeAll again: %v, %v; want nothing", had, err)
	}
}
