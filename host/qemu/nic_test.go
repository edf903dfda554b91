package qemu

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"spectrum-os.org/netcfg/internal/mac"
)

// TestHotplugArgs: a hot-plugged NIC gets the options a cold-plugged one
// has (TestArgs), as QMP arguments, on the bridge it is given, with the slot
// left to QEMU.
func TestHotplugArgs(t *testing.T) {
	n := NIC{ID: "neta546", MAC: mac.LinkID(0xa546).MAC(mac.Provider)}
	if diff := cmp.Diff(map[string]any{"type": "tap", "id": "neta546", "fd": "tap-neta546"},
		qmpArgs(nicNetdev(n.ID, "tap-neta546", ""))); diff != "" {
		t.Errorf("netdev_add arguments (-want +got):\n%s", diff)
	}
	// Under KVM with vhost-net: vhost is a boolean in QMP, "on" on the
	// command line (TestArgs).
	if diff := cmp.Diff(map[string]any{"type": "tap", "id": "neta546", "fd": "tap-neta546", "vhost": true, "vhostfd": "vhost-neta546"},
		qmpArgs(nicNetdev(n.ID, "tap-neta546", "vhost-neta546"))); diff != "" {
		t.Errorf("netdev_add arguments with vhost-net (-want +got):\n%s", diff)
	}
	want := map[string]any{"driver": "virtio-net-pci", "netdev": "neta546", "id": "neta546",
		"mac": "0a:b3:ec:80:a5:46", "romfile": "", "bus": "nics1"}
	if diff := cmp.Diff(want, qmpArgs(nicDevice(n, "nics1", -1))); diff != "" {
		t.Errorf("device_add arguments (-want +got):\n%s", diff)
	}
}

// TestSlots: hot-plugs fill the bridges in order; a full VM refuses with
// an error that says so; an unplugged NIC frees its slot.
func TestSlots(t *testing.T) {
	f := testFile(t)
	c := Config{}
	for i := range 40 {
		c.NICs = append(c.NICs, NIC{ID: fmt.Sprintf("c%d", i), Tap: f})
	}
	s := newSlots(c) // 40 cold NICs: bridges 0 and 1 (8 of it), and 2
	if len(s.used) != 3 || s.used[0] != 32 || s.used[1] != 8 || s.used[2] != 0 {
		t.Fatalf("slots after 40 cold NICs: %v, want [32 8 0]", s.used)
	}
	for i := range 56 {
		b, err := s.take(fmt.Sprintf("h%d", i))
		if err != nil {
			t.Fatalf("hot-plug %d: %v", i, err)
		}
		if want := 1 + (i+8)/32; b != want {
			t.Fatalf("hot-plug %d on bridge %d, want %d", i, b, want)
		}
	}
	if _, err := s.take("one-more"); err == nil || !strings.Contains(err.Error(), "every one of the VM's 96 NIC slots is taken") {
		t.Errorf("a NIC beyond the slots = %v, want an error saying they are taken", err)
	}
	if _, err := s.take("c3"); err == nil {
		t.Errorf("a second NIC of id c3 was given a slot")
	}
	s.give("c3")
	if b, err := s.take("again"); err != nil || b != 0 {
		t.Errorf("after unplugging c3: %d, %v; want its bridge 0", b, err)
	}
}

// TestNoLegacyDevices: the machine has no floppy, IDE, SATA or PS/2
// controller, no vmport and no SMBus, read back from QEMU's own device tree
// (before, "pc" gave isa-fdc, piix3-ide, vmport, vmmouse, i8042 and eight
// smbus-eeprom).
func TestNoLegacyDevices(t *testing.T) {
	requireQEMU(t)
	ctx := testContext(t, 60*time.Second)
	p, _ := start(t, ctx, testConfig(t))
	tree, err := monitor(t, ctx, p).HumanMonitorCommand(ctx, "info qtree")
	if err != nil {
		t.Fatal(err)
	}
	var devs []string
	for _, l := range strings.Split(tree, "\n") {
		if _, d, ok := strings.Cut(l, "dev: "); ok {
			devs = append(devs, strings.TrimSuffix(strings.Fields(d)[0], ","))
		}
	}
	for _, d := range devs {
		for _, legacy := range []string{"isa-fdc", "piix3-ide", "piix4-ide", "ich9-ahci", "vmport", "vmmouse", "i8042", "smbus-eeprom", "ICH9-SMB", "PIIX4_PM"} {
			if d == legacy {
				t.Errorf("the machine has a %s", d)
			}
		}
	}
	if !strings.Contains(tree, "dev: q35-pcihost") || !strings.Contains(tree, "dev: pcie-pci-bridge, id \"nics0\"") {
		t.Errorf("want a q35 machine with the NIC bridge nics0; devices: %v", devs)
	}
}
