package vfio_test

import (
	"errors"
	"os"
	"strings"
	"testing"

	"spectrum-os.org/netcfg/host/vfio"
	"spectrum-os.org/netcfg/host/vfio/vfiotest"
)

func TestCheckAddr(t *testing.T) {
	for _, s := range []string{"0000:00:03.0", "0000:ff:1f.7", "abcd:01:00.1"} {
		if err := vfio.CheckAddr(s); err != nil {
			t.Errorf("vfio.CheckAddr(%q) = %v, want nil", s, err)
		}
	}
	for _, s := range []string{"", "00:03.0", "0000:00:03.8", "0000:00:20.0", "0000:00:03.0 ", "0000:0A:00.0",
		"0000:00:03:0", "0000-00:03.0", "../../../0000", "0000:00:03.0/", "0000:00:3.00"} {
		if err := vfio.CheckAddr(s); !errors.Is(err, vfio.ErrAddr) {
			t.Errorf("vfio.CheckAddr(%q) = %v, want vfio.ErrAddr", s, err)
		}
	}
}

func TestCheck(t *testing.T) {
	const dev = "0000:00:03.0"
	for _, tt := range []struct {
		name     string
		intremap bool
		noGroups bool
		devs     []vfiotest.Dev
		want     []error  // each must be in the error; none: nil
		says     []string // and each of these in its text
	}{
		{name: "a NIC alone in its group, driven by the host", intremap: true,
			devs: []vfiotest.Dev{vfiotest.D(dev, vfiotest.NIC, "virtio-pci", 3)}},
		{name: "a Wi-Fi card (network controller, other), no driver", intremap: true,
			devs: []vfiotest.Dev{vfiotest.D(dev, vfiotest.WiFi, "", 3)}},
		{name: "group members on vfio-pci, pcieport, a bridge, no driver", intremap: true,
			devs: []vfiotest.Dev{vfiotest.D(dev, vfiotest.NIC, "e1000e", 3), vfiotest.D("0000:00:1c.0", vfiotest.Bridge, "pcieport", 3), vfiotest.D("0000:00:1e.0", vfiotest.Bridge, "shpchp", 3),
				vfiotest.D("0000:00:03.1", vfiotest.NIC, "vfio-pci", 3), vfiotest.D("0000:00:03.2", vfiotest.Audio, "", 3)}},
		{name: "no such device", intremap: true, devs: []vfiotest.Dev{vfiotest.D("0000:00:04.0", vfiotest.NIC, "", 4)},
			want: []error{vfio.ErrNoDevice}, says: []string{"0000:00:03.0"}},
		{name: "not a network controller", intremap: true, devs: []vfiotest.Dev{vfiotest.D(dev, vfiotest.USB, "xhci_hcd", 3)},
			want: []error{vfio.ErrNotNIC}, says: []string{"0x0c0330"}},
		{name: "a group member the host drives", intremap: true,
			devs: []vfiotest.Dev{vfiotest.D(dev, vfiotest.NIC, "igb", 3), vfiotest.D("0000:00:1f.3", vfiotest.Audio, "snd_hda_intel", 3)},
			want: []error{vfio.ErrGroupDriven}, says: []string{"0000:00:1f.3", "snd_hda_intel", "group 3"}},
		{name: "no IOMMU", noGroups: true, intremap: true, devs: []vfiotest.Dev{vfiotest.D(dev, vfiotest.NIC, "igb", -1)},
			want: []error{vfio.ErrNoIOMMU}, says: []string{"iommu_groups is empty"}},
		{name: "no interrupt remapping", devs: []vfiotest.Dev{vfiotest.D(dev, vfiotest.NIC, "igb", 3)},
			want: []error{vfio.ErrNoIntRemap}, says: []string{vfio.KernelNoIntRemap, "allow_unsafe_interrupts", "never"}},
		{name: "every problem at once", devs: []vfiotest.Dev{vfiotest.D(dev, vfiotest.USB, "", 3), vfiotest.D("0000:00:1f.3", vfiotest.Audio, "snd_hda_intel", 3)},
			want: []error{vfio.ErrNoIntRemap, vfio.ErrNotNIC, vfio.ErrGroupDriven}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			h := vfiotest.New(t, tt.intremap, tt.devs...)
			if tt.noGroups {
				os.RemoveAll(h.Path("sys/kernel/iommu_groups"))
			}
			_, err := h.Check(dev)
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatalf("Check: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("Check: nil error")
			}
			for _, w := range tt.want {
				if !errors.Is(err, w) {
					t.Errorf("Check: %v\nwant %v in it", err, w)
				}
			}
			for _, s := range tt.says {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("Check: %v\nwant %q in it", err, s)
				}
			}
		})
	}
}

// TestCheckUnsafeInterrupts: a host where someone set the kernel's unsafe
// override is refused all the same, and told so.
func TestCheckUnsafeInterrupts(t *testing.T) {
	h := vfiotest.New(t, false, vfiotest.D("0000:00:03.0", vfiotest.NIC, "", 3))
	h.Write("sys/module/vfio_iommu_type1/parameters/allow_unsafe_interrupts", "Y\n")
	_, err := h.Check("0000:00:03.0")
	if !errors.Is(err, vfio.ErrNoIntRemap) || !strings.Contains(err.Error(), "it is set on this host") {
		t.Fatalf("Check: %v, want vfio.ErrNoIntRemap saying the override is set", err)
	}
}

func TestBind(t *testing.T) {
	const dev = "0000:00:03.0"
	h := vfiotest.New(t, true, vfiotest.D(dev, vfiotest.NIC, "virtio-pci", 3), vfiotest.D("0000:00:04.0", vfiotest.NIC, "virtio-pci", 4))
	h.Kernel()
	var loaded []string
	h.Modprobe = func(m string) error {
		loaded = append(loaded, m)
		h.LoadVFIOPCI()
		return nil
	}
	d, what, err := h.Bind(dev)
	if err != nil {
		t.Fatalf("Bind: %v", err)
	}
	if d.Driver != vfio.Driver || d.Group != 3 {
		t.Errorf("Bind: %+v, want on vfio-pci in group 3", d)
	}
	if !strings.Contains(what, "from virtio-pci") || !strings.Contains(what, dev) {
		t.Errorf("Bind says %q, want the device and the driver it took it from", what)
	}
	if got := h.Read("sys/devices/pci0000:00/" + dev + "/driver_override"); got != "vfio-pci" {
		t.Errorf("driver_override = %q, want vfio-pci", got)
	}
	if got := h.Read("sys/bus/pci/drivers/virtio-pci/unbind"); got != dev {
		t.Errorf("virtio-pci's unbind got %q, want only %s (the other NIC stays)", got, dev)
	}
	if len(loaded) != 1 || loaded[0] != "vfio-pci" {
		t.Errorf("modules loaded: %q, want vfio-pci once", loaded)
	}
	if got, _ := h.Device("0000:00:04.0"); got.Driver != "virtio-pci" {
		t.Errorf("the other NIC: %v, want it left on virtio-pci", got)
	}
	// Again: it is on vfio-pci, nothing is written, nothing said.
	h.Write("sys/bus/pci/drivers/virtio-pci/unbind", "")
	if _, what, err := h.Bind(dev); err != nil || what != "" {
		t.Errorf("Bind again: %q, %v; want nothing done", what, err)
	}
	if got := h.Read("sys/bus/pci/drivers/virtio-pci/unbind"); got != "" {
		t.Errorf("Bind again wrote %q to unbind", got)
	}
}

// TestBindRefuses: Bind writes nothing for a device Check refuses, and
// says what to do when vfio-pci cannot be loaded.
func TestBindRefuses(t *testing.T) {
	const dev = "0000:00:03.0"
	h := vfiotest.New(t, true, vfiotest.D(dev, vfiotest.USB, "xhci_hcd", 3))
	if _, _, err := h.Bind(dev); !errors.Is(err, vfio.ErrNotNIC) {
		t.Fatalf("Bind of a USB controller: %v, want vfio.ErrNotNIC", err)
	}
	if got := h.Read("sys/devices/pci0000:00/" + dev + "/driver_override"); got != "(null)\n" {
		t.Errorf("driver_override = %q after a refusal", got)
	}

	h = vfiotest.New(t, true, vfiotest.D(dev, vfiotest.NIC, "", 3))
	h.Modprobe = func(string) error { return errors.New("modprobe: Operation not permitted") }
	_, _, err := h.Bind(dev)
	if !errors.Is(err, vfio.ErrNoVFIOPCI) || !strings.Contains(err.Error(), "modules-load.d") || !strings.Contains(err.Error(), "Operation not permitted") {
		t.Fatalf("Bind without vfio-pci: %v, want vfio.ErrNoVFIOPCI saying why and what to do", err)
	}

	// The probe leaves it without vfio-pci (another driver_override won).
	h = vfiotest.New(t, true, vfiotest.D(dev, vfiotest.NIC, "", 3))
	h.Mkdir("sys/bus/pci/drivers/vfio-pci")
	if _, _, err := h.Bind(dev); !errors.Is(err, vfio.ErrBind) {
		t.Fatalf("Bind with no driver after the probe: %v, want vfio.ErrBind", err)
	}
}
