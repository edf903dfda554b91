package vfio

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"golang.org/x/sys/unix"
)

// A group's node (/dev/vfio/N) stays root's, mode 0600, as the kernel makes
// it: spectrumd adds one POSIX ACL entry for the VM's uid while its QEMU
// runs, and removes it when QEMU exits. An ACL needs no capability (root
// owns the node and spectrumd runs as root), where chown would need
// CAP_CHOWN; the node is never world-readable or -writable either way.
// /dev/vfio/vfio, the container node, is 0666 by the kernel: it grants
// nothing without a group.

const aclXattr = "system.posix_acl_access"

// POSIX ACL tags and the xattr's version (linux/posix_acl_xattr.h).
const (
	aclVersion  = 2
	aclUserObj  = 0x01
	aclUser     = 0x02
	aclGroupObj = 0x04
	aclMask     = 0x10
	aclOther    = 0x20
	aclNoID     = 0xffffffff
)

// userACL is the ACL "user::rw-, user:UID:rw-, group::---, mask::rw-,
// other::---" in the kernel's xattr form.
func userACL(uid uint32) []byte {
	type entry struct {
		tag, perm uint16
		id        uint32
	}
	es := []entry{{aclUserObj, 6, aclNoID}, {aclUser, 6, uid}, {aclGroupObj, 0, aclNoID}, {aclMask, 6, aclNoID}, {aclOther, 0, aclNoID}}
	b := binary.LittleEndian.AppendUint32(nil, aclVersion)
	for _, e := range es {
		b = binary.LittleEndian.AppendUint16(b, e.tag)
		b = binary.LittleEndian.AppendUint16(b, e.perm)
		b = binary.LittleEndian.AppendUint32(b, e.id)
	}
	return b
}

// Grant lets uid (a VM's QEMU) open IOMMU group g's node, and nobody else
// but root: the node must be a character device owned by root; its ACL
// becomes userACL(uid), replacing any other grant.
func (h Host) Grant(g int, uid uint32) error {
	if uid == 0 {
		return errors.New("vfio: grant to uid 0")
	}
	p := h.GroupNode(g)
	if err := checkNode(p); err != nil {
		return err
	}
	return setACL(p, uid)
}

// Revoke takes every grant off group g's node: no ACL, mode 0600. A node
// that is gone (vfio-pci unbound) is not an error.
func (h Host) Revoke(g int) error {
	p := h.GroupNode(g)
	if _, err := os.Lstat(p); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err := checkNode(p); err != nil {
		return err
	}
	return clearACL(p)
}

// RevokeAll takes every grant off every IOMMU group's node: at start, what
// a spectrumd that died left (its QEMUs were killed with it, or since).
// It returns the groups whose node had an ACL.
func (h Host) RevokeAll() ([]int, error) {
	ents, err := os.ReadDir(filepath.Join(h.Dev, "vfio"))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var had []int
	var errs []error
	for _, e := range ents {
		g, err := strconv.Atoi(e.Name())
		if err != nil || g < 0 {
			continue // the container node, vfio
		}
		p := h.GroupNode(g)
		if _, err := unix.Getxattr(p, aclXattr, nil); err != nil {
			continue // no ACL (ENODATA), or nothing to read
		}
		if err := h.Revoke(g); err != nil {
			errs = append(errs, err)
			continue
		}
		had = append(had, g)
	}
	return had, errors.Join(errs...)
}

func checkNode(p string) error {
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		return fmt.Errorf("IOMMU group node: %w", &os.PathError{Op: "lstat", Path: p, Err: err})
	}
	if st.Mode&unix.S_IFMT != unix.S_IFCHR {
		return fmt.Errorf("IOMMU group node %s: not a character device", p)
	}
	if st.Uid != 0 {
		return fmt.Errorf("IOMMU group node %s: owned by uid %d, not root (someone else gave it away)", p, st.Uid)
	}
	return nil
}

// setACL gives p the mode 0600 and userACL(uid).
func setACL(p string, uid uint32) error {
	if err := unix.Chmod(p, 0o600); err != nil {
		return &os.PathError{Op: "chmod", Path: p, Err: err}
	}
	if err := unix.Setxattr(p, aclXattr, userACL(uid), 0); err != nil {
		return fmt.Errorf("give uid %d access to %s: %w", uid, p, &os.PathError{Op: "setxattr", Path: p, Err: err})
	}
	return nil
}

// clearACL removes p's ACL and sets its mode to 0600.
func clearACL(p string) error {
	if err := unix.Removexattr(p, aclXattr); err != nil && !errors.Is(err, unix.ENODATA) {
		return fmt.Errorf("take back access to %s: %w", p, &os.PathError{Op: "removexattr", Path: p, Err: err})
	}
	if err := unix.Chmod(p, 0o600); err != nil {
		return &os.PathError{Op: "chmod", Path: p, Err: err}
	}
	return nil
}
