// Package vfio hands a host PCI NIC to one VM's QEMU by VFIO
// (uplinks/pci/<address>): it checks that the host can isolate the device
// (an IOMMU with interrupt remapping, an IOMMU group the host drives no
// member of), binds it to vfio-pci, and lets exactly one uid open its group
// node. Every path it touches is under a Host's roots, so tests run it on a
// fake sysfs in a temporary directory.
//
// It never sets vfio_iommu_type1.allow_unsafe_interrupts, never binds a
// device that is not a network controller, and never unbinds a device other
// than the one it is asked for: a group member the host still drives is an
// error naming it, for the user to decide.
package vfio

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Host is where the kernel's interfaces are: the roots of sysfs, /dev and
// /proc. The zero value is not usable; System is the real host's.
type Host struct {
	Sys  string // "/sys"
	Dev  string // "/dev"
	Proc string // "/proc"
	// Modprobe loads the vfio-pci module when its driver is not in
	// sysfs; nil means the module is not loaded by spectrumd (the error
	// then says how to load it).
	Modprobe func(module string) error
}

// System is the running host's.
var System = Host{Sys: "/sys", Dev: "/dev", Proc: "/proc"}

// Why a device cannot be passed through. Compare with errors.Is.
var (
	// ErrAddr: not a PCI address in sysfs's form (0000:03:00.0).
	ErrAddr = errors.New("not a PCI address (domain:bus:device.function, lower-case hex, e.g. 0000:03:00.0)")
	// ErrNoIOMMU: the host has no IOMMU groups (no IOMMU, or it is off).
	ErrNoIOMMU = errors.New("no IOMMU on this host")
	// ErrNoIntRemap: the host's IOMMU does not remap interrupts.
	ErrNoIntRemap = errors.New("no interrupt remapping on this host")
	// ErrNoDevice: no such PCI device.
	ErrNoDevice = errors.New("no such PCI device")
	// ErrNotNIC: the device's class is not a network controller (0x02).
	ErrNotNIC = errors.New("not a network controller")
	// ErrNoGroup: the device is in no IOMMU group.
	ErrNoGroup = errors.New("in no IOMMU group")
	// ErrGroupDriven: another device of the device's IOMMU group is
	// driven by the host, which would share its DMA with the VM.
	ErrGroupDriven = errors.New("IOMMU group shared with a device the host drives")
	// ErrNoVFIOPCI: the vfio-pci driver is not loaded and could not be.
	ErrNoVFIOPCI = errors.New("the vfio-pci driver is not loaded")
	// ErrBind: the device did not end up on vfio-pci.
	ErrBind = errors.New("could not bind to vfio-pci")
)

// Driver is the kernel's name of the VFIO PCI driver.
const Driver = "vfio-pci"

// KernelNoIntRemap is what Linux's vfio_iommu_type1 logs when it refuses a
// group for want of interrupt remapping.
const KernelNoIntRemap = `No interrupt remapping support.  Use the module param "allow_unsafe_interrupts" to enable VFIO IOMMU support on this platform`

// CheckAddr tells why s is not a PCI address as sysfs names devices:
// dddd:bb:dd.f in lower-case hex, device at most 1f, function at most 7.
// Only that form is accepted, so one device has one name.
func CheckAddr(s string) error {
	bad := fmt.Errorf("%q: %w", s, ErrAddr)
	if len(s) != 12 || s[4] != ':' || s[7] != ':' || s[10] != '.' {
		return bad
	}
	for i, c := range []byte(s) {
		if i == 4 || i == 7 || i == 10 {
			continue
		}
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return bad
		}
	}
	dev, _ := strconv.ParseUint(s[8:10], 16, 8)
	if dev > 0x1f || s[11] > '7' {
		return bad
	}
	return nil
}

// Device is a PCI device as sysfs shows it.
type Device struct {
	Addr   string
	Class  uint32 // 0x020000: an Ethernet controller
	Vendor string // "0x1af4"
	ID     string // the device id, "0x1041"
	Driver string // the driver bound to it; "" none
	Group  int    // its IOMMU group; -1 none
}

// IsNIC tells whether d is a network controller (PCI base class 0x02).
func (d Device) IsNIC() bool { return d.Class>>16 == 0x02 }

// IsBridge tells whether d is a PCI bridge (base class 0x06, subclass 0x04)
// or a host bridge (0x0600).
func (d Device) IsBridge() bool { return d.Class>>8 == 0x0604 || d.Class>>8 == 0x0600 }

func (d Device) String() string {
	drv := "no driver"
	if d.Driver != "" {
		drv = "driver " + d.Driver
	}
	return fmt.Sprintf("%s (class 0x%06x, %s)", d.Addr, d.Class, drv)
}

func (h Host) devDir(addr string) string { return filepath.Join(h.Sys, "bus", "pci", "devices", addr) }

// Device reads what sysfs says of the device at addr.
func (h Host) Device(addr string) (Device, error) {
	if err := CheckAddr(addr); err != nil {
		return Device{}, err
	}
	dir := h.devDir(addr)
	d := Device{Addr: addr, Group: -1}
	if _, err := os.Stat(dir); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return d, fmt.Errorf("%s: %w (no %s)", addr, ErrNoDevice, dir)
		}
		return d, fmt.Errorf("%s: %w", addr, err)
	}
	cls, err := readHex(filepath.Join(dir, "class"))
	if err != nil {
		return d, fmt.Errorf("%s: %w", addr, err)
	}
	d.Class = uint32(cls)
	d.Vendor, _ = readLine(filepath.Join(dir, "vendor"))
	d.ID, _ = readLine(filepath.Join(dir, "device"))
	d.Driver, err = linkBase(filepath.Join(dir, "driver"))
	if err != nil {
		return d, fmt.Errorf("%s: %w", addr, err)
	}
	g, err := linkBase(filepath.Join(dir, "iommu_group"))
	if err != nil {
		return d, fmt.Errorf("%s: %w", addr, err)
	}
	if g != "" {
		n, err := strconv.Atoi(g)
		if err != nil || n < 0 {
			return d, fmt.Errorf("%s: IOMMU group %q is not a number", addr, g)
		}
		d.Group = n
	}
	return d, nil
}

// Members lists the devices of IOMMU group g, by address.
func (h Host) Members(g int) ([]Device, error) {
	dir := filepath.Join(h.Sys, "kernel", "iommu_groups", strconv.Itoa(g), "devices")
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("IOMMU group %d: %w", g, err)
	}
	var out []Device
	for _, e := range ents {
		d, err := h.Device(e.Name())
		if err != nil {
			return nil, fmt.Errorf("IOMMU group %d: %w", g, err)
		}
		out = append(out, d)
	}
	return out, nil
}

// CheckHost tells why this host cannot isolate a passed-through device:
// no IOMMU groups at all, or no interrupt remapping (the kernel's
// vfio_iommu_type1 refuses such a group unless told to allow unsafe
// interrupts, which lets the device's DMA send the host forged
// interrupts; spectrumd never sets that and refuses the device even where
// someone else did).
func (h Host) CheckHost() error {
	groups := filepath.Join(h.Sys, "kernel", "iommu_groups")
	ents, err := os.ReadDir(groups)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("%w: %w", ErrNoIOMMU, err)
	}
	if len(ents) == 0 {
		return fmt.Errorf("%w: %s is empty (turn VT-d or AMD-Vi on in the firmware, and intel_iommu=on or amd_iommu=on on the kernel command line)", ErrNoIOMMU, groups)
	}
	b, err := os.ReadFile(filepath.Join(h.Proc, "interrupts"))
	if err != nil {
		return fmt.Errorf("%w: cannot tell: %w", ErrNoIntRemap, err)
	}
	// With interrupt remapping on, the kernel's interrupt chips are the
	// remapping ones: IR-IO-APIC, IR-PCI-MSI (Intel and AMD alike).
	if !bytes.Contains(b, []byte(" IR-")) {
		unsafe, _ := readLine(filepath.Join(h.Sys, "module", "vfio_iommu_type1", "parameters", "allow_unsafe_interrupts"))
		msg := fmt.Sprintf("%s shows no IR- interrupt chip; the kernel refuses such a device, saying: %s; "+
			"its override vfio_iommu_type1.allow_unsafe_interrupts=1 lets the device's DMA forge interrupts to the host, and spectrumd never uses it",
			filepath.Join(h.Proc, "interrupts"), KernelNoIntRemap)
		if unsafe == "Y" {
			msg += " (it is set on this host: spectrumd refuses the device all the same)"
		}
		return fmt.Errorf("%w: %s", ErrNoIntRemap, msg)
	}
	return nil
}

// Check tells every reason the device at addr cannot be passed through
// now: the host's (CheckHost), no such device, not a network controller,
// no IOMMU group, a member of its group that the host drives. Its own
// driver is no reason: Bind takes it from that driver. nil means Bind can
// proceed.
func (h Host) Check(addr string) (Device, error) {
	var errs []error
	if err := h.CheckHost(); err != nil {
		errs = append(errs, err)
	}
	d, err := h.Device(addr)
	if err != nil {
		return d, errors.Join(append(errs, err)...)
	}
	if !d.IsNIC() {
		errs = append(errs, fmt.Errorf("%s: PCI class 0x%06x: %w (class 0x02): spectrumd passes only NICs to a VM", addr, d.Class, ErrNotNIC))
	}
	if d.Group < 0 {
		if len(errs) == 0 { // an IOMMU without this device in a group
			errs = append(errs, fmt.Errorf("%s: %w", addr, ErrNoGroup))
		}
		return d, errors.Join(errs...)
	}
	members, err := h.Members(d.Group)
	if err != nil {
		errs = append(errs, err)
	}
	for _, m := range members {
		if m.Addr == addr {
			continue
		}
		if m.Driver != "" && m.Driver != Driver && m.Driver != "pcieport" && !m.IsBridge() {
			errs = append(errs, fmt.Errorf("%s: %w: IOMMU group %d also holds %s, driven by the host's %s (unbind it, or bind it to vfio-pci, first)",
				addr, ErrGroupDriven, d.Group, m, m.Driver))
		}
	}
	return d, errors.Join(errs...)
}

// Bind checks the device at addr (Check) and binds it to vfio-pci: it
// sets the device's driver_override to vfio-pci (so no host driver takes it
// again, not even after a rescan), unbinds its host driver, loads vfio-pci
// if it is missing (Modprobe), and asks the kernel to probe it. A device on
// vfio-pci already is left as it is. what says what it did, for the log
// ("" when nothing).
func (h Host) Bind(addr string) (d Device, what string, err error) {
	d, err = h.Check(addr)
	if err != nil {
		return d, "", err
	}
	if d.Driver == Driver {
		return d, "", nil
	}
	dir := h.devDir(addr)
	if err := write(filepath.Join(dir, "driver_override"), Driver); err != nil {
		return d, "", fmt.Errorf("%s: %w: %w", addr, ErrBind, err)
	}
	from := d.Driver
	if from != "" {
		if err := write(filepath.Join(dir, "driver", "unbind"), addr); err != nil {
			return d, "", fmt.Errorf("%s: %w: unbind from %s: %w", addr, ErrBind, from, err)
		}
	}
	drv := filepath.Join(h.Sys, "bus", "pci", "drivers", Driver)
	if _, err := os.Stat(drv); err != nil {
		merr := errors.New("spectrumd does not load modules")
		if h.Modprobe != nil {
			merr = h.Modprobe(Driver)
		}
		if _, err := os.Stat(drv); err != nil {
			return d, "", fmt.Errorf("%s: %w (%v): load it at boot (echo vfio-pci > /etc/modules-load.d/vfio-pci.conf) or with modprobe vfio-pci", addr, ErrNoVFIOPCI, merr)
		}
	}
	if err := write(filepath.Join(h.Sys, "bus", "pci", "drivers_probe"), addr); err != nil {
		return d, "", fmt.Errorf("%s: %w: drivers_probe: %w", addr, ErrBind, err)
	}
	// The kernel probes synchronously; the wait is for a driver that
	// probes asynchronously, and is bounded.
	var now string
	for start := time.Now(); ; time.Sleep(10 * time.Millisecond) {
		now, err = linkBase(filepath.Join(dir, "driver"))
		if err != nil || now == Driver || time.Since(start) > 2*time.Second {
			break
		}
	}
	if err != nil || now != Driver {
		if now == "" {
			now = "no driver"
		}
		return d, "", fmt.Errorf("%s: %w: it has %s after the probe (%v)", addr, ErrBind, now, err)
	}
	d.Driver = Driver
	if from == "" {
		from = "no driver"
	}
	return d, fmt.Sprintf("took %s (vendor %s device %s) from %s and bound it to vfio-pci", addr, d.Vendor, d.ID, from), nil
}

// GroupNode is the device node of IOMMU group g, which QEMU opens.
func (h Host) GroupNode(g int) string { return filepath.Join(h.Dev, "vfio", strconv.Itoa(g)) }

func write(p, s string) error {
	f, err := os.OpenFile(p, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	_, err = f.WriteString(s)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write %q to %s: %w", s, p, err)
	}
	return nil
}

func readLine(p string) (string, error) {
	b, err := os.ReadFile(p)
	return strings.TrimSpace(string(b)), err
}

func readHex(p string) (uint64, error) {
	s, err := readLine(p)
	if err != nil {
		return 0, err
	}
	v, err := strconv.ParseUint(strings.TrimPrefix(s, "0x"), 16, 32)
	if err != nil {
		return 0, fmt.Errorf("%s: %q is not a hex number", p, s)
	}
	return v, nil
}

// linkBase is the last element of the symlink p's target; "" when there is
// no such link.
func linkBase(p string) (string, error) {
	t, err := os.Readlink(p)
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	return filepath.Base(t), nil
}

// Groups says which IOMMU group each of addrs is in, by what sysfs says
// now; a device with none (or none that sysfs shows) is left out.
func (h Host) Groups(addrs []string) map[string]int {
	out := map[string]int{}
	for _, a := range slices.Sorted(slices.Values(addrs)) {
		if d, err := h.Device(a); err == nil && d.Group >= 0 {
			out[a] = d.Group
		}
	}
	return out
}
