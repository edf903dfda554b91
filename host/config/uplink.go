package config

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"path/filepath"
	"strings"
	"unicode"
	"unicode/utf8"

	"spectrum-os.org/netcfg/host/link"
	"spectrum-os.org/netcfg/host/vfio"
	"spectrum-os.org/netcfg/internal/mac"
)

// Uplink is one NIC a VM gets on a host network interface:
// uplinks/net/<Iface>. The interface is a bridge in spectrumd's network
// namespace (the user's LAN bridge); spectrumd adds a tap of its own to it
// while the VM runs. The guest configures the NIC itself (DHCP and the
// like): its MAC is never in the inter-guest OUI, so the agent leaves it
// alone, as it would a hardware NIC.
type Uplink struct {
	Iface string           // the host interface: the file's name
	MAC   net.HardwareAddr // the NIC's MAC: the file's, or DeriveUplink's when the file is empty
	// Derived tells that the file is empty (or blank), so MAC was derived
	// from the VM's and the interface's names.
	Derived bool
}

const (
	// maxIface is the longest interface name Linux allows (IFNAMSIZ-1).
	maxIface = 15
	// maxMACFile is the largest uplink file: one MAC and some blank
	// space around it; anything longer is not what the file is for.
	maxMACFile = 64
)

// checkIface tells why s cannot be the name of a host interface: Linux
// allows 1 to 15 bytes without '/', ':' or white space, other than "." and
// "..". spectrumd is stricter, so a name is never misread anywhere it goes
// (logs, iproute2, QEMU ids): valid UTF-8, no control character or ',',
// not starting with '.' or '-'. Neither can it be an interface spectrumd
// makes itself: a VM on a link's bridge would bypass the link's lock.
func checkIface(s string) error {
	switch {
	case s == "":
		return fmt.Errorf("%w: empty", ErrIface)
	case len(s) > maxIface:
		return fmt.Errorf("%w %q: %d bytes, at most %d", ErrIface, s, len(s), maxIface)
	case !utf8.ValidString(s):
		return fmt.Errorf("%w %q: not UTF-8", ErrIface, s)
	case s[0] == '.' || s[0] == '-':
		return fmt.Errorf("%w %q: starts with %q", ErrIface, s, s[0])
	case link.IsOurs(s):
		return fmt.Errorf("%w %q: one of spectrumd's own interfaces, not a host bridge", ErrIface, s)
	}
	for _, r := range s {
		switch {
		case r == '/' || r == ':' || r == ',':
			return fmt.Errorf("%w %q: holds %q", ErrIface, s, r)
		case unicode.IsControl(r) || unicode.IsSpace(r):
			return fmt.Errorf("%w %q: holds a control or space character", ErrIface, s)
		}
	}
	return nil
}

// readUplinkMAC reads the uplink file at p: empty or blank (the MAC is then
// derived: nil), or one MAC (mac.Parse's syntax) with blank space around it
// allowed, which mac.CheckUplink must accept.
func readUplinkMAC(p string) (net.HardwareAddr, error) {
	var buf [maxMACFile + 1]byte
	n, err := readHead(p, buf[:])
	if err != nil {
		return nil, err
	}
	if n > maxMACFile {
		return nil, fmt.Errorf("%w: over %d bytes (the file holds one MAC or nothing)", ErrMAC, maxMACFile)
	}
	s := strings.TrimSpace(string(buf[:n]))
	if s == "" {
		return nil, nil
	}
	hw, err := mac.Parse(s)
	if err == nil {
		err = mac.CheckUplink(hw)
	}
	if err != nil {
		if !utf8.ValidString(s) || strings.ContainsFunc(s, unicode.IsControl) {
			// Never echo what the terminal could take for commands.
			err = fmt.Errorf("%q: %w", s, mac.ErrSyntax)
		}
		return nil, fmt.Errorf("%w: %w", ErrMAC, err)
	}
	return hw, nil
}

// loadUplinks reads uplinks/net/* of the VM whose real directory is root
// into vm.Uplinks, sorted by interface name. Each entry must be a regular
// file (a symlink is followed inside the VM's directory only). A VM's own
// uplinks must have distinct MACs; across VMs, claimMACs checks.
func loadUplinks(vm *VM, root string, ents map[string]fs.FileMode, rec *deps, fail func(string, error) (*VM, *VMError)) (*VM, *VMError) {
	typ, ok := ents["uplinks"]
	if !ok {
		return vm, nil
	}
	up, mode, err := follow(root, filepath.Join(root, "uplinks"), typ, rec)
	if err == nil && !mode.IsDir() {
		err = fmt.Errorf("%w: %s", ErrNotDir, kind(mode))
	}
	if err != nil {
		return fail("uplinks", err)
	}
	if vm, err := loadPCI(vm, root, up, rec, fail); err != nil {
		return vm, err
	}
	netPath := filepath.Join(up, "net")
	fi, err := rec.osLstat(netPath)
	if errors.Is(err, fs.ErrNotExist) {
		return vm, nil
	}
	var dir string
	if err == nil {
		dir, mode, err = follow(root, netPath, fi.Mode(), rec)
	}
	var names map[string]fs.FileMode
	if err == nil {
		names, err = readDirMode(dir, mode, rec)
	}
	if err != nil {
		return fail(filepath.Join("uplinks", "net"), err)
	}
	mine := map[string]string{} // MAC -> interface, within this VM
	for _, iface := range sortedKeys(names) {
		rel := filepath.Join("uplinks", "net", iface)
		if err := checkIface(iface); err != nil {
			return fail(rel, err)
		}
		p, mode, err := follow(root, filepath.Join(dir, iface), names[iface], rec)
		if err == nil && !mode.IsRegular() {
			err = fmt.Errorf("%w: %s", ErrNotRegular, kind(mode))
		}
		var hw net.HardwareAddr
		if err == nil {
			rec.stat(p)
			hw, err = readUplinkMAC(p)
		}
		if err != nil {
			return fail(rel, err)
		}
		u := Uplink{Iface: iface, MAC: hw}
		if hw == nil {
			u.MAC, u.Derived = mac.DeriveUplink(vm.Name, iface), true
		}
		if other, ok := mine[u.MAC.String()]; ok {
			return fail(rel, fmt.Errorf("%w: MAC %s is also the one of uplinks/net/%s", ErrMACInUse, u.MAC, other))
		}
		mine[u.MAC.String()] = iface
		vm.Uplinks = append(vm.Uplinks, u)
	}
	return vm, nil
}

// claimMACs rejects every VM (of those valid so far, in name order) that has
// an uplink MAC an earlier one has: two NICs with one MAC on a LAN would
// steal each other's frames. The first VM in name order keeps it, so the
// same directories always give the same answer. It runs on every load,
// across VMs, like the rest of the linker's checks.
func (l *linker) claimMACs() {
	type owner struct{ vm, iface string }
	owners := map[string]owner{}
	for _, name := range l.names {
		vm := l.vms[name]
		if vm == nil {
			continue
		}
		for _, u := range vm.Uplinks {
			if o, ok := owners[u.MAC.String()]; ok {
				l.reject(name, filepath.Join(l.dataDir, name, "uplinks", "net", u.Iface),
					fmt.Errorf("%w: MAC %s is already VM %s's, on %s (%s)", ErrMACInUse, u.MAC, o.vm, o.iface,
						filepath.Join(l.dataDir, o.vm, "uplinks", "net", o.iface)))
				delete(l.vms, name)
				break
			}
		}
		if l.vms[name] == nil {
			continue
		}
		for _, u := range vm.Uplinks {
			owners[u.MAC.String()] = owner{name, u.Iface}
		}
	}
}

// PCIUplink is a host PCI NIC the VM gets by VFIO: uplinks/pci/<Addr>, an
// empty file named by the device's address as sysfs names it
// (0000:03:00.0). spectrumd checks the device and binds it to vfio-pci
// when the VM starts (host/vfio); the loader checks the name only.
type PCIUplink struct {
	Addr string
}

// maxPCIFile is the largest uplinks/pci file: empty, or blank space.
const maxPCIFile = 64

// loadPCI reads uplinks/pci/* (under up, the VM's real uplinks directory)
// into vm.PCI, sorted by address. Each entry is a regular file, empty or
// blank, named by a PCI address in sysfs's form.
func loadPCI(vm *VM, root, up string, rec *deps, fail func(string, error) (*VM, *VMError)) (*VM, *VMError) {
	pciPath := filepath.Join(up, "pci")
	fi, err := rec.osLstat(pciPath)
	if errors.Is(err, fs.ErrNotExist) {
		return vm, nil
	}
	var dir string
	var mode fs.FileMode
	if err == nil {
		dir, mode, err = follow(root, pciPath, fi.Mode(), rec)
	}
	var names map[string]fs.FileMode
	if err == nil {
		names, err = readDirMode(dir, mode, rec)
	}
	if err != nil {
		return fail(filepath.Join("uplinks", "pci"), err)
	}
	for _, addr := range sortedKeys(names) {
		rel := filepath.Join("uplinks", "pci", addr)
		if err := vfio.CheckAddr(addr); err != nil {
			return fail(rel, fmt.Errorf("%w: %w", ErrPCIAddr, err))
		}
		p, mode, err := follow(root, filepath.Join(dir, addr), names[addr], rec)
		if err == nil && !mode.IsRegular() {
			err = fmt.Errorf("%w: %s", ErrNotRegular, kind(mode))
		}
		if err == nil {
			rec.stat(p)
			var buf [maxPCIFile + 1]byte
			var n int
			n, err = readHead(p, buf[:])
			if err == nil && (n > maxPCIFile || strings.TrimSpace(string(buf[:n])) != "") {
				err = fmt.Errorf("%w: the file holds something; it is empty, the device's address is its name", ErrPCIAddr)
			}
		}
		if err != nil {
			return fail(rel, err)
		}
		vm.PCI = append(vm.PCI, PCIUplink{Addr: addr})
	}
	return vm, nil
}

// claimPCI rejects every VM (of those valid so far, in name order) that
// names a PCI device an earlier one names: a device goes to one VM. The
// first VM in name order keeps it.
func (l *linker) claimPCI() {
	owners := map[string]string{}
	for _, name := range l.names {
		vm := l.vms[name]
		if vm == nil {
			continue
		}
		for _, u := range vm.PCI {
			if o, ok := owners[u.Addr]; ok {
				l.reject(name, filepath.Join(l.dataDir, name, "uplinks", "pci", u.Addr),
					fmt.Errorf("%w: PCI device %s is VM %s's (%s)", ErrPCIInUse, u.Addr, o,
						filepath.Join(l.dataDir, o, "uplinks", "pci", u.Addr)))
				delete(l.vms, name)
				break
			}
		}
		if l.vms[name] == nil {
			continue
		}
		for _, u := range vm.PCI {
			owners[u.Addr] = name
		}
	}
}
