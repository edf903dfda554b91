package vmm

import (
	"errors"
	"fmt"
	"log/slog"
	"slices"

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

// grant lets uid, vm's QEMU, open the IOMMU group nodes of devs and
// returns the groups it granted. A group another VM's QEMU has is refused,
// naming that VM: a grant would take the node from it (the ACL names one
// uid). On an error it takes back what it gave.
func (q *QEMU) grant(vm string, devs []daemon.PCIDevice, uid uint32) ([]int, error) {
	var groups []int
	for _, d := range devs {
		if slices.Contains(groups, d.Group) {
			continue
		}
		err := q.take(vm, d.Group)
		if err == nil {
			if err = q.opt.VFIO.Grant(d.Group, uid); err != nil {
				q.drop(vm, d.Group)
			}
		}
		if err != nil {
			q.revoke(vm, groups, q.opt.Log)
			return nil, fmt.Errorf("PCI device %s: %w", d.Addr, err)
		}
		groups = append(groups, d.Group)
	}
	return groups, nil
}

// take records that vm's QEMU has group g, unless another VM's has it.
func (q *QEMU) take(vm string, g int) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	if o, ok := q.groups[g]; ok && o != vm {
		return fmt.Errorf("IOMMU group %d is VM %s's, whose QEMU runs", g, o)
	}
	q.groups[g] = vm
	return nil
}

// drop forgets that vm's QEMU has group g.
func (q *QEMU) drop(vm string, g int) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.groups[g] == vm {
		delete(q.groups, g)
	}
}

// revoke takes back vm's grants of groups.
func (q *QEMU) revoke(vm string, groups []int, log *slog.Logger) {
	var errs []error
	for _, g := range groups {
		errs = append(errs, q.opt.VFIO.Revoke(g))
		q.drop(vm, g)
	}
	if err := errors.Join(errs...); err != nil {
		log.Error("taking back a VM's IOMMU groups", "err", err)
	}
}
