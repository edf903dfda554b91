package daemon

import (
	"errors"
	"fmt"
	"path/filepath"

	"spectrum-os.org/netcfg/host/config"
)

// A VM's PCI uplinks (uplinks/pci/<address>) are claimed at each launch:
// checked on the host and bound to vfio-pci (Devices.Claim), which does
// nothing to a device on vfio-pci already. A device stays on vfio-pci when
// its VM stops: the host never drives it again (docs/DESIGN.md says why).
// The kernel lets one process at a time open an IOMMU group, and host/vmm
// grants a group to one VM's QEMU at a time, so a VM still running with
// the device (or another of its group) keeps it from any other.

// errNoDevices: the daemon was given no Devices.
var errNoDevices = errors.New("this spectrumd hands no PCI devices to VMs (no VFIO)")

// claimPCI claims the VM's PCI uplink u; an error names the VM's file.
func (o *owner) claimPCI(u config.PCIUplink) (PCIDevice, error) {
	file := filepath.Join(o.vm.Dir, "uplinks", "pci", u.Addr)
	if o.d.opt.Devices == nil {
		return PCIDevice{}, fmt.Errorf("%s: %w", file, errNoDevices)
	}
	dev, what, err := o.d.opt.Devices.Claim(u.Addr)
	if err != nil {
		return PCIDevice{}, fmt.Errorf("%s: %w", file, err)
	}
	if what != "" {
		o.log.Info("PCI uplink: "+what, "pci", u.Addr, "iommu_group", dev.Group)
	}
	return dev, nil
}
