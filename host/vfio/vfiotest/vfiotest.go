// Package vfiotest lays out a fake host for host/vfio's users' tests: a
// sysfs, /dev and /proc in a temporary directory, as the kernel lays them
// out (device directories under /sys/devices, symlinks from
// /sys/bus/pci/devices, the driver and iommu_group links), and a fake
// kernel that binds a device to the driver its driver_override names when
// drivers_probe is written.
package vfiotest

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"spectrum-os.org/netcfg/host/vfio"
)

// PCI classes for tests.
const (
	NIC    = 0x020000 // Ethernet controller
	WiFi   = 0x028000 // network controller, other
	USB    = 0x0c0330 // USB xHCI
	Bridge = 0x060400 // PCI bridge
	Audio  = 0x040300
)

// Host is a fake host in a temporary directory; its vfio.Host reads it.
type Host struct {
	t    testing.TB
	Root string
	vfio.Host
}

// Dev is one PCI device of a fake host.
type Dev struct {
	Addr   string
	Class  uint32
	Driver string // "" none
	Group  int    // -1 none
}

// D is a Dev.
func D(addr string, class uint32, driver string, group int) Dev {
	return Dev{Addr: addr, Class: class, Driver: driver, Group: group}
}

// New lays out a host with an IOMMU (intremap: with interrupt remapping)
// and devs.
func New(t testing.TB, intremap bool, devs ...Dev) *Host {
	t.Helper()
	root := t.TempDir()
	h := &Host{t: t, Root: root, Host: vfio.Host{Sys: filepath.Join(root, "sys"), Dev: filepath.Join(root, "dev"), Proc: filepath.Join(root, "proc")}}
	h.Mkdir("sys/bus/pci/devices")
	h.Mkdir("sys/kernel/iommu_groups")
	h.Mkdir("dev/vfio")
	h.Write("sys/bus/pci/drivers_probe", "")
	chip := "IO-APIC"
	if intremap {
		chip = "IR-IO-APIC"
	}
	h.Write("proc/interrupts", "           CPU0       CPU1\n  0:         33          0   "+chip+"   2-edge      timer\n")
	for _, d := range devs {
		h.Add(d)
	}
	return h
}

// Path is rel (slash-separated) under the host's root.
func (h *Host) Path(rel string) string { return filepath.Join(h.Root, filepath.FromSlash(rel)) }

// Mkdir makes the directory rel.
func (h *Host) Mkdir(rel string) {
	if err := os.MkdirAll(h.Path(rel), 0o755); err != nil {
		h.t.Fatal(err)
	}
}

// Write makes the file rel hold s.
func (h *Host) Write(rel, s string) {
	h.Mkdir(filepath.Dir(rel))
	if err := os.WriteFile(h.Path(rel), []byte(s), 0o644); err != nil {
		h.t.Fatal(err)
	}
}

// Read returns what the file rel holds.
func (h *Host) Read(rel string) string {
	b, err := os.ReadFile(h.Path(rel))
	if err != nil {
		h.t.Fatal(err)
	}
	return string(b)
}

// Link makes rel a symlink to target.
func (h *Host) Link(target, rel string) {
	h.Mkdir(filepath.Dir(rel))
	os.Remove(h.Path(rel))
	if err := os.Symlink(target, h.Path(rel)); err != nil {
		h.t.Fatal(err)
	}
}

// Add adds a device.
func (h *Host) Add(d Dev) {
	dev := "sys/devices/pci0000:00/" + d.Addr
	h.Write(dev+"/class", fmt.Sprintf("0x%06x\n", d.Class))
	h.Write(dev+"/vendor", "0x1af4\n")
	h.Write(dev+"/device", "0x1041\n")
	h.Write(dev+"/driver_override", "(null)\n")
	h.Link("../../../devices/pci0000:00/"+d.Addr, "sys/bus/pci/devices/"+d.Addr)
	if d.Driver != "" {
		h.SetDriver(d.Addr, d.Driver)
	}
	if d.Group >= 0 {
		g := strconv.Itoa(d.Group)
		h.Link("../../../kernel/iommu_groups/"+g, dev+"/iommu_group")
		h.Link("../../../../devices/pci0000:00/"+d.Addr, "sys/kernel/iommu_groups/"+g+"/devices/"+d.Addr)
	}
}

// SetDriver binds the device at addr to drv (which then exists).
func (h *Host) SetDriver(addr, drv string) {
	h.Write("sys/bus/pci/drivers/"+drv+"/unbind", "")
	h.Link("../../../bus/pci/drivers/"+drv, "sys/devices/pci0000:00/"+addr+"/driver")
}

// Driver is the driver of the device at addr now; "" none.
func (h *Host) Driver(addr string) string {
	d, err := h.Device(addr)
	if err != nil {
		h.t.Fatal(err)
	}
	return d.Driver
}

// LoadVFIOPCI makes the vfio-pci driver appear, as modprobe would.
func (h *Host) LoadVFIOPCI() {
	h.Write("sys/bus/pci/drivers/vfio-pci/unbind", "")
}

// Kernel plays the kernel's part of a bind: drivers_probe becomes a FIFO;
// each address written to it gets the driver its driver_override names,
// if that driver is in sysfs. It ends with the test.
func (h *Host) Kernel() {
	p := h.Path("sys/bus/pci/drivers_probe")
	os.Remove(p)
	if err := syscall.Mkfifo(p, 0o600); err != nil {
		h.t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		f, err := os.OpenFile(p, os.O_RDWR, 0) // RDWR: never EOF between writers
		if err != nil {
			return
		}
		defer f.Close()
		r := bufio.NewReader(f)
		for {
			var buf [12]byte
			if _, err := r.Read(buf[:]); err != nil {
				return
			}
			addr := string(buf[:])
			if addr == "000000000000" {
				return
			}
			over := strings.TrimSpace(h.Read("sys/devices/pci0000:00/" + addr + "/driver_override"))
			if _, err := os.Stat(h.Path("sys/bus/pci/drivers/" + over)); err == nil {
				h.SetDriver(addr, over)
			}
		}
	}()
	h.t.Cleanup(func() {
		if f, err := os.OpenFile(p, os.O_WRONLY, 0); err == nil {
			f.WriteString("000000000000")
			f.Close()
		}
		<-done
	})
}
