package vmm

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"spectrum-os.org/netcfg/internal/testenv"
)

// TestDeviceGroup: QEMU gets the device's group when the group may open it
// (the usual 0660 root:kvm), none when everyone may, and a device only
// root may open is an error naming it. Real KVM cannot run here; /dev/kvm's
// mode and group are what this decides from.
func TestDeviceGroup(t *testing.T) {
	testenv.Root(t, "to give a file a group")
	dev := filepath.Join(t.TempDir(), "kvm")
	if err := os.WriteFile(dev, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		mode os.FileMode
		gid  int
		want uint32
		err  string
	}{
		{0o660, 107, 107, ""},
		{0o666, 0, 0, ""},
		{0o666, 107, 0, ""},
		{0o600, 107, 0, "could not open it"},
		{0o660, 0, 0, "could not open it"},
		{0o640, 107, 0, "could not open it"},
	} {
		if err := os.Chown(dev, 0, tt.gid); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(dev, tt.mode); err != nil {
			t.Fatal(err)
		}
		got, err := DeviceGroup(dev)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) || !strings.Contains(err.Error(), dev) {
				t.Errorf("mode %v group %d: %d, %v; want an error naming %s", tt.mode, tt.gid, got, err, dev)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("mode %v group %d: %d, %v; want %d", tt.mode, tt.gid, got, err, tt.want)
		}
	}
	if g, err := DeviceGroup(KVMDevice); err == nil {
		t.Logf("this machine's %s: group %d for QEMU", KVMDevice, g)
	}
}
