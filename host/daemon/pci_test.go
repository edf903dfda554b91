package daemon

import (
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"

	"spectrum-os.org/netcfg/host/config"
)

// fakeDevices claims devices as host/vfio would: those in bad fail.
type fakeDevices struct {
	mu     sync.Mutex
	bad    map[string]error
	claims []string
}

func (f *fakeDevices) Claim(addr string) (PCIDevice, string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.claims = append(f.claims, addr)
	if err := f.bad[addr]; err != nil {
		return PCIDevice{}, "", err
	}
	return PCIDevice{Addr: addr, Group: int(addr[9] - '0')}, "bound " + addr, nil
}

// TestPCIUplinks: a VM's PCI uplinks are claimed at each launch and handed
// to its VMM with their IOMMU groups; status shows them; a VM whose
// device cannot be claimed does not start, its error names the VM's file,
// and every other VM starts.
func TestPCIUplinks(t *testing.T) {
	vms := map[string][]string{"net": nil, "app": {"net"}, "usb": nil}
	devs := &fakeDevices{bad: map[string]error{"0000:00:05.0": errors.New("PCI class 0x0c0330: not a network controller")}}
	var mu sync.Mutex
	specs := map[string][]PCIDevice{}
	d, vmm, _ := newTestDaemon(t, vms, func(o *Options, f *fakeVMM) {
		o.Links = staticLinks{vms: vms, pci: map[string][]config.PCIUplink{
			"net": {{Addr: "0000:00:03.0"}, {Addr: "0000:00:04.0"}},
			"usb": {{Addr: "0000:00:05.0"}},
		}}
		o.Devices = devs
		f.launchErr = func(s Spec) error {
			mu.Lock()
			specs[s.VM.Name] = s.PCI
			mu.Unlock()
			return nil
		}
	})
	if err := d.Start("app"); err != nil {
		t.Fatal(err)
	}
	want := []PCIDevice{{Addr: "0000:00:03.0", Group: 3}, {Addr: "0000:00:04.0", Group: 4}}
	mu.Lock()
	if diff := cmp.Diff(want, specs["net"]); diff != "" {
		t.Errorf("net's PCI devices (-want +got):\n%s", diff)
	}
	if len(specs["app"]) != 0 {
		t.Errorf("app got PCI devices: %v", specs["app"])
	}
	mu.Unlock()
	st, _ := d.Status("net")
	if diff := cmp.Diff([]string{"0000:00:03.0", "0000:00:04.0"}, st.PCI); diff != "" {
		t.Errorf("status PCI (-want +got):\n%s", diff)
	}

	err := d.Start("usb")
	if err == nil || !strings.Contains(err.Error(), "uplinks/pci/0000:00:05.0") || !strings.Contains(err.Error(), "not a network controller") {
		t.Fatalf("start usb: %v, want an error naming uplinks/pci/0000:00:05.0 and why", err)
	}
	if vmm.inst("usb") != nil {
		t.Error("usb launched with a device that cannot be passed through")
	}
	for _, n := range []string{"net", "app"} {
		if st, _ := d.Status(n); st.State != "running" {
			t.Errorf("%s: %s after usb's failure, want running", n, st.State)
		}
	}

	// A restart claims again (a no-op on a bound device).
	if err := d.Stop("net"); err != nil {
		t.Fatal(err)
	}
	if err := d.Start("net"); err != nil {
		t.Fatal(err)
	}
	devs.mu.Lock()
	if n := strings.Count(strings.Join(devs.claims, " "), "0000:00:03.0"); n != 2 {
		t.Errorf("0000:00:03.0 claimed %d times over two launches: %v", n, devs.claims)
	}
	devs.mu.Unlock()
}

// TestPCIUplinksWithoutDevices: a daemon given no Devices starts no VM
// that names a PCI device, and says so.
func TestPCIUplinksWithoutDevices(t *testing.T) {
	vms := map[string][]string{"net": nil}
	d, vmm, _ := newTestDaemon(t, vms, func(o *Options, _ *fakeVMM) {
		o.Links = staticLinks{vms: vms, pci: map[string][]config.PCIUplink{"net": {{Addr: "0000:00:03.0"}}}}
	})
	if err := d.Start("net"); err == nil || !strings.Contains(err.Error(), "no VFIO") {
		t.Fatalf("start: %v, want an error saying there is no VFIO", err)
	}
	if vmm.inst("net") != nil {
		t.Error("net launched")
	}
}
