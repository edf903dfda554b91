package daemon

import (
	"context"
	"io"
	"net"
	"os"
	"strconv"

	"spectrum-os.org/netcfg/host/alloc"
	"spectrum-os.org/netcfg/host/config"
	"spectrum-os.org/netcfg/internal/mac"
)

// VMM launches VM processes. The real one runs QEMU; tests use a fake.
type VMM interface {
	// Launch starts one VM's process and returns once it runs and answers
	// its control protocol, or with an error. It gives up when ctx is done
	// (the daemon passes Options.LaunchTimeout).
	Launch(ctx context.Context, spec Spec) (Instance, error)
}

// Spec is everything needed to launch one VM.
type Spec struct {
	VM   *config.VM
	NICs []NIC // present from boot (cold-plugged)
	// PCI are the host devices it gets by VFIO, from boot, in its
	// configuration's order (by address).
	PCI []PCIDevice
	// ConsolePath is the unix socket of the VM's virtio-console.
	ConsolePath string
	// QMPPath is the unix socket of the VMM's control protocol.
	QMPPath string
	// PIDPath is where the launcher records the VMM's pid and start
	// time (the VMM itself has no descriptor of it), so a spectrumd
	// started after one that died can find and stop it.
	PIDPath string
}

// PCIDevice is a host PCI device a VM gets by VFIO (uplinks/pci), bound
// to vfio-pci already (Devices.Claim).
type PCIDevice struct {
	Addr  string // its PCI address, 0000:03:00.0
	Group int    // its IOMMU group: QEMU opens /dev/vfio/<Group>
}

// Devices hands host PCI devices to VMs. The real one is host/vfio's.
type Devices interface {
	// Claim checks that the device at addr can go to a VM (an IOMMU
	// with interrupt remapping, a network controller, no other member
	// of its IOMMU group driven by the host) and binds it to vfio-pci.
	// what says what it changed ("" nothing), for the log.
	Claim(addr string) (dev PCIDevice, what string, err error)
}

// NIC is one virtio-net device backed by a tap.
type NIC struct {
	ID  string // unique within the VM; derived from the link id
	MAC net.HardwareAddr
	Tap *os.File // the launcher passes it on and the caller closes its copy
}

// Instance is one running VM process. The daemon bounds every call that
// waits on the process with a context: a VMM that hangs (a frozen QEMU)
// costs a timeout, never a blocked daemon.
type Instance interface {
	PID() int
	// Serial is the read end of the VM's serial console. It reaches EOF
	// once the process has exited and everything it wrote has been read;
	// the daemon reads it to EOF and then closes it. Nothing else closes
	// it: lines still in the pipe when the process exits (a crashing
	// guest's last words) would be lost.
	Serial() io.ReadCloser
	// Wait blocks until the process has exited.
	Wait() error
	// Hotplug adds a NIC to the running VM; Unplug removes it, waiting for
	// the guest to release the device. Both give up when ctx is done.
	Hotplug(ctx context.Context, nic NIC) error
	Unplug(ctx context.Context, id string) error
	// Shutdown asks the guest to power down and kills the process if it
	// has not exited when ctx is done. It returns once the process has
	// exited, or with an error saying why it could not be stopped.
	Shutdown(ctx context.Context) error
}

// Network wires links on the host.
type Network interface {
	// Create makes the link's bridge and both taps; it is idempotent.
	Create(id mac.LinkID) error
	// OpenTap opens one side's tap for a VMM.
	OpenTap(id mac.LinkID, side mac.Side) (*os.File, error)
	// Delete removes the link's bridge and taps; a missing link is not an error.
	Delete(id mac.LinkID) error
	// Cleanup deletes every link of ours not in keep (strays from a
	// daemon that died).
	Cleanup(keep map[mac.LinkID]bool) error

	// CreateUplink makes the tap of a VM's uplink NIC with MAC m a port
	// of the host bridge br; it is idempotent. A br that is missing or not
	// a bridge is an error naming it.
	CreateUplink(br string, m net.HardwareAddr) error
	// OpenUplink opens the tap of the uplink NIC with MAC m for a VMM.
	OpenUplink(m net.HardwareAddr) (*os.File, error)
	// DeleteUplink removes that tap; a missing one is not an error.
	DeleteUplink(m net.HardwareAddr) error
}

// LinkSource loads the configuration and gives every (client, provider)
// pair its stable link id.
type LinkSource interface {
	// Load reads the data directory. held are the links that exist now:
	// their ids must not change even if the pair left the configuration.
	// The daemon never runs two Loads at once.
	Load(held []alloc.Link) (*config.Config, []alloc.Link, error)
}

// UplinkNICID is the VMM-side name of a VM's i-th uplink NIC (in its
// configuration's order, by interface name).
func UplinkNICID(i int) string { return "uplink" + strconv.Itoa(i) }

// NICID is the VMM-side name of the NIC of link id, the same on both ends.
func NICID(id mac.LinkID) string {
	s := id.String()
	return "net" + s[:2] + s[3:]
}
