package vmm

import (
	"errors"
	"os"
	"strings"
	"testing"

	"spectrum-os.org/netcfg/host/daemon"
	"spectrum-os.org/netcfg/internal/mac"
)

// TestVhostNet: under KVM every NIC, at launch or hot-plug, gets a
// vhost-net descriptor of its own that spectrumd opened; under TCG none is
// opened (QEMU's own backend, as before); a device that does not open
// fails that NIC with an error naming it.
func TestVhostNet(t *testing.T) {
	nic := daemon.NIC{ID: "neta546", MAC: mac.LinkID(0xa546).MAC(mac.Client)}
	for _, tt := range []struct {
		accel string
		vhost bool
		opens int
	}{{"kvm", true, 1}, {"kvm", false, 0}, {"tcg", true, 0}} {
		opens := 0
		q, err := New(Options{Accel: tt.accel, KVMGroup: 107, UIDs: testUIDs(t), VhostNet: tt.vhost,
			OpenVhost: func() (*os.File, error) { opens++; return os.Open(os.DevNull) }})
		if err != nil {
			t.Fatal(err)
		}
		n, err := q.nic(nic)
		if err != nil {
			t.Fatal(err)
		}
		if got := n.Vhost != nil; got != (tt.opens == 1) || opens != tt.opens {
			t.Errorf("accel %s, VhostNet %v: vhost %v after %d opens, want %d", tt.accel, tt.vhost, got, opens, tt.opens)
		}
		if n.Vhost != nil {
			n.Vhost.Close()
		}
	}
	q, _ := New(Options{Accel: "kvm", KVMGroup: 107, UIDs: testUIDs(t), VhostNet: true,
		OpenVhost: func() (*os.File, error) { return nil, os.ErrPermission }})
	if _, err := q.nic(nic); !errors.Is(err, os.ErrPermission) || !strings.Contains(err.Error(), "NIC neta546") {
		t.Errorf("a vhost-net that does not open: %v, want an error naming the NIC", err)
	}
}
