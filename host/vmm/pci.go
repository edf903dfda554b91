package vmm

import (
	"errors"
	"fmt"
	"log/slog"

	"spectrum-os.org/netcfg/host/daemon"
	"spectrum-os.org/netcfg/host/vfio"
)

// MemlockMargin is what a QEMU with a VFIO device may pin beyond its
// guest's RAM: its ROMs and the device's own needs. 1 GiB, libvirt's figure
// for the same limit.
const MemlockMargin = 1 << 30

// MemlockFor is the RLIMIT_MEMLOCK of a QEMU with a VFIO device and a
// guest of memMiB: VFIO pins all of the guest's RAM (the device may DMA
// anywhere in it), and the kernel counts that against the limit.
func MemlockFor(memMiB int) uint64 { return uint64(memMiB)<<20 + MemlockMargin }

// Devices is host/vfio as the daemon's Devices.
type Devices struct{ Host vfio.Host }

// Claim checks the device at addr and binds it to vfio-pci.
func (d Devices) Claim(addr string) (daemon.PCIDevice, string, error) {
	dev, what, err := d.Host.Bind(addr)
	if err != nil {
		return daemon.PCIDevice{}, "", err
	}
	return daemon.PCIDevice{Addr: addr, Group: dev.Group}, what, nil
}

// grant lets uid open the IOMMU group nodes of devs and returns the
// groups it granted; on an error it takes back what it gave.
func (q *QEMU) grant(devs []daemon.PCIDevice, uid uint32) ([]int, error) {
	var groups []int
	seen := map[int]bool{}
	for _, d := range devs {
		if seen[d.Group] {
			continue
		}
		seen[d.Group] = true
		if err := q.opt.VFIO.Grant(d.Group, uid); err != nil {
			q.revoke(groups, q.opt.Log)
			return nil, fmt.Errorf("PCI device %s: %w", d.Addr, err)
		}
		groups = append(groups, d.Group)
	}
	return groups, nil
}

// revoke takes back the grants of groups.
func (q *QEMU) revoke(groups []int, log *slog.Logger) {
	var errs []error
	for _, g := range groups {
		errs = append(errs, q.opt.VFIO.Revoke(g))
	}
	if err := errors.Join(errs...); err != nil {
		log.Error("taking back a VM's IOMMU groups", "err", err)
	}
}
