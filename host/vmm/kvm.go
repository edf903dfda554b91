package vmm

import (
	"fmt"
	"os"
	"syscall"
)

// KVMDevice is the device QEMU opens itself under KVM.
const KVMDevice = "/dev/kvm"

// DeviceGroup tells which supplementary group a QEMU under a uid of its
// own needs to open the device at path read-write: 0 (none) when every
// user may, the device's group when its group may (the kvm group of the
// usual 0660 root:kvm), and an error naming the device when only its owner
// may, or its group is root's.
func DeviceGroup(path string) (uint32, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return 0, err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, fmt.Errorf("%s: no owner", path)
	}
	mode := fi.Mode().Perm()
	switch {
	case mode&0o006 == 0o006:
		return 0, nil
	case mode&0o060 == 0o060 && st.Gid != 0:
		return st.Gid, nil
	}
	return 0, fmt.Errorf("%s (mode %v, group %d): QEMU, under a uid of its own, could not open it read-write (make it 0660 with a group of its own, such as kvm)",
		path, mode, st.Gid)
}
