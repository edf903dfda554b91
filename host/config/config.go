// Package config turns the VM directories under svc/data into a validated
// model. It reads the file system and nothing else: no QEMU, no netlink, no
// writes. It never follows a symlink out of a VM's directory and never hands
// on a name or path that QEMU's option syntax or a file name could misread.
package config

import (
	"errors"
	"slices"
	"strings"

	"spectrum-os.org/netcfg/internal/printable"
)

// VM is one valid VM directory. Its paths are absolute and real (symlinks
// resolved, every one of them inside Dir), free of ',' and control
// characters, so they can go into QEMU's options as they are.
type VM struct {
	Name      string      // the directory's name
	Dir       string      // absolute real path of the directory (its target, if the entry is a symlink)
	Kernel    string      // absolute path of vmlinux
	Images    []string    // absolute paths of blk/*.img, sorted by name
	Initramfs string      // absolute path of the optional initramfs; "" means none
	Cmdline   string      // the optional cmdline file's line; "" (no file, or an empty one) means the default (console on ttyS0)
	Providers []string    // names of the VMs in providers/net, sorted
	Uplinks   []Uplink    // NICs on host bridges (uplinks/net), sorted by interface; their MACs are unique on the host
	PCI       []PCIUplink // host PCI NICs by VFIO (uplinks/pci), sorted by address; no two VMs name one
	Warnings  []Warning   // entries of the directory that are not used, by path; nil: none
}

// Config is the result of loading a data directory: the good VMs and an error
// per broken one. One broken VM never stops the others from loading.
type Config struct {
	VMs    map[string]*VM // valid VMs by name
	Order  []string       // names of valid VMs, each after its providers; deterministic
	Errors []error        // one per rejected VM; each names the VM and the path at fault
}

// Clients returns the names of the valid VMs that name vm as a provider,
// sorted.
func (c *Config) Clients(vm string) []string {
	var out []string
	for _, name := range c.Order {
		if slices.Contains(c.VMs[name].Providers, vm) {
			out = append(out, name)
		}
	}
	slices.Sort(out)
	return out
}

// Why a VM is rejected. Each is wrapped in a *VMError; compare with errors.Is.
var (
	// ErrName: a VM name or file name that is empty, over its length limit,
	// not UTF-8, or holds '/', ',', a control, format (bidi, zero-width) or
	// space character, or starts with '.' or '-'.
	ErrName = errors.New("unsafe name")
	// ErrPath: an absolute path handed to QEMU holds ',' or a control
	// character (QEMU's option syntax would misread it).
	ErrPath = errors.New("unsafe path")
	// ErrNotELF: vmlinux is not an ELF executable.
	ErrNotELF = errors.New("not an ELF executable")
	// ErrNotRegular: a file that must be a regular file is something else.
	ErrNotRegular = errors.New("not a regular file")
	// ErrNotDir: blk, providers, providers/net, uplinks or uplinks/net is
	// not a directory.
	ErrNotDir = errors.New("not a directory")
	// ErrNoImages: blk/ holds no *.img.
	ErrNoImages = errors.New("no *.img disk image")
	// ErrEscape: a symlink leads out of the VM's directory.
	ErrEscape = errors.New("symlink leads out of the VM's directory")
	// ErrCmdline: cmdline holds a newline (other than one at the end) or a
	// control character, or is over MaxCmdline bytes.
	ErrCmdline = errors.New("bad kernel command line")
	// ErrSharedDir: the VM's directory is a symlink to the directory of
	// another VM.
	ErrSharedDir = errors.New("same directory as VM")
	// ErrNoProvider: providers/net names no VM in the data directory.
	ErrNoProvider = errors.New("no such VM")
	// ErrSelfProvider: a VM names itself in providers/net.
	ErrSelfProvider = errors.New("a VM cannot provide to itself")
	// ErrCycle: the VM is on a provider cycle. The error names the cycle.
	ErrCycle = errors.New("provider cycle")
	// ErrProviderInvalid: a provider of the VM is itself invalid, so the VM
	// could never start.
	ErrProviderInvalid = errors.New("provider is invalid")
	// ErrIface: a file name in uplinks/net is not a host interface's name
	// (see checkIface).
	ErrIface = errors.New("not a valid host interface name")
	// ErrMAC: an uplink file holds something other than nothing or one
	// MAC an uplink NIC may have (unicast, not all zeros, not in the
	// inter-guest OUI 0a:b3:ec).
	ErrMAC = errors.New("bad uplink MAC")
	// ErrMACInUse: an uplink's MAC, given or derived, is another uplink's
	// already, of this VM or of a VM before it in name order.
	ErrMACInUse = errors.New("uplink MAC in use")
	// ErrPCIAddr: a file in uplinks/pci is not named by a PCI address in
	// sysfs's form (0000:03:00.0), or is not empty.
	ErrPCIAddr = errors.New("bad PCI uplink")
	// ErrPCIInUse: a PCI device a VM before it in name order names too.
	ErrPCIInUse = errors.New("PCI device in use")
)

// VMError is why one VM was rejected. Path is the file at fault (under the
// data directory as given to Load); VM is "" only when the data directory
// itself cannot be read.
type VMError struct {
	VM   string
	Path string
	Err  error
	// Warnings are those of the VM's directory found before the fault
	// (see VM.Warnings).
	Warnings []Warning
}

// Error says which VM and file, escaped (printable.String): a directory's
// name, a file's or a symlink's target is anyone's to choose, and the
// message is shown on terminals.
func (e *VMError) Error() string {
	var b strings.Builder
	if e.VM != "" {
		b.WriteString("VM ")
		b.WriteString(printable.String(e.VM))
		b.WriteString(": ")
	}
	b.WriteString(printable.String(e.Path))
	b.WriteString(": ")
	b.WriteString(printable.Lines(e.Err.Error()))
	return b.String()
}

// Unwrap returns the reason, one of the Err values above or an fs error.
func (e *VMError) Unwrap() error { return e.Err }
