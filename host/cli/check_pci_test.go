package cli

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"spectrum-os.org/netcfg/host/vfio/vfiotest"
)

// pciUplink names a PCI device in VM name's uplinks/pci.
func pciUplink(t *testing.T, data, name, addr string) {
	t.Helper()
	p := filepath.Join(data, name, "uplinks", "pci", addr)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, nil, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestCheckPCI: check reports each PCI uplink's device as the host shows
// it, and every reason one cannot be passed through, naming the VM's file;
// a VM whose device is fine is unaffected by another's.
func TestCheckPCI(t *testing.T) {
	dir := t.TempDir()
	data, state := filepath.Join(dir, "data"), filepath.Join(dir, "state")
	h := vfiotest.New(t, true,
		vfiotest.D("0000:00:03.0", vfiotest.NIC, "virtio-pci", 3),
		vfiotest.D("0000:00:04.0", vfiotest.USB, "xhci_hcd", 4),
		vfiotest.D("0000:00:05.0", vfiotest.NIC, "igb", 5),
		vfiotest.D("0000:00:05.1", vfiotest.Audio, "snd_hda_intel", 5),
		vfiotest.D("0000:00:06.0", vfiotest.NIC, "", 6),
		vfiotest.D("0000:00:06.1", vfiotest.NIC, "", 6),
	)
	for vm, addr := range map[string]string{"netvm": "0000:00:03.0", "usb": "0000:00:04.0", "shared": "0000:00:05.0",
		"gone": "0000:00:09.0", "g1": "0000:00:06.0", "g2": "0000:00:06.1"} {
		writeVM(t, data, vm)
		pciUplink(t, data, vm, addr)
	}
	out, _, err := check(t, "-data", data, "-state", state, "-host-root", h.Root)
	if !errors.Is(err, ErrInvalid) {
		t.Fatalf("check: %v, want ErrInvalid\n%s", err, out)
	}
	file := func(vm, addr string) string { return filepath.Join(data, vm, "uplinks", "pci", addr) }
	for _, want := range []string{
		"pci        0000:00:03.0  class 0x020000  IOMMU group 3  driver virtio-pci",
		"invalid usb: " + file("usb", "0000:00:04.0") + ": 0000:00:04.0: PCI class 0x0c0330: not a network controller",
		"invalid shared: " + file("shared", "0000:00:05.0") + ": 0000:00:05.0: IOMMU group shared with a device the host drives: IOMMU group 5 also holds 0000:00:05.1",
		"invalid gone: " + file("gone", "0000:00:09.0") + ": 0000:00:09.0: no such PCI device",
		"invalid g2: " + file("g2", "0000:00:06.1") + ": IOMMU group 6 is VM g1's too",
		"2 VMs valid, 4 invalid",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("check's output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "invalid netvm") || strings.Contains(out, "invalid g1") {
		t.Errorf("a usable device's VM is reported:\n%s", out)
	}

	// No IOMMU, no interrupt remapping: said for the file, in the kernel's
	// words.
	data2 := filepath.Join(dir, "data2")
	writeVM(t, data2, "netvm")
	pciUplink(t, data2, "netvm", "0000:00:03.0")
	for _, tt := range []struct {
		name string
		h    *vfiotest.Host
		want []string
	}{
		{"no IOMMU", func() *vfiotest.Host {
			h := vfiotest.New(t, true, vfiotest.D("0000:00:03.0", vfiotest.NIC, "igb", -1))
			os.RemoveAll(h.Path("sys/kernel/iommu_groups"))
			return h
		}(), []string{"no IOMMU on this host", "iommu_groups is empty"}},
		{"no interrupt remapping", vfiotest.New(t, false, vfiotest.D("0000:00:03.0", vfiotest.NIC, "igb", 3)),
			[]string{"no interrupt remapping", "No interrupt remapping support.", "vfio_iommu_type1.allow_unsafe_interrupts", "never uses it"}},
	} {
		out, _, err := check(t, "-data", data2, "-state", state, "-host-root", tt.h.Root)
		if !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: check: %v, want ErrInvalid\n%s", tt.name, err, out)
		}
		for _, w := range append(tt.want, "invalid netvm: "+filepath.Join(data2, "netvm", "uplinks", "pci", "0000:00:03.0")) {
			if !strings.Contains(out, w) {
				t.Errorf("%s: check's output lacks %q:\n%s", tt.name, w, out)
			}
		}
	}

	// JSON: the device as sysfs shows it.
	out, _, _ = check(t, "-data", data, "-state", state, "-host-root", h.Root, "-json")
	var r struct {
		VMs []struct {
			Name string
			PCI  []pciReport
		}
	}
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatal(err)
	}
	for _, v := range r.VMs {
		if v.Name == "netvm" && (len(v.PCI) != 1 || v.PCI[0] != (pciReport{Addr: "0000:00:03.0", Class: "0x020000", Driver: "virtio-pci", Group: 3})) {
			t.Errorf("netvm's PCI in JSON: %+v", v.PCI)
		}
	}
}
