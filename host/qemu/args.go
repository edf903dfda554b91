package qemu

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"unicode/utf8"

	"spectrum-os.org/netcfg/host/qmp"
	"spectrum-os.org/netcfg/host/vfio"
)

// DefaultCmdline is the kernel command line when Config.Cmdline is empty:
// the console on the serial port (spectrumd logs it), and reboot at once on a
// panic, which -no-reboot turns into QEMU exiting, so the supervisor sees the
// crash and restarts the VM with backoff instead of the guest looping
// silently.
const DefaultCmdline = "console=ttyS0 panic=-1"

// Defaults for zero Config fields.
const (
	DefaultMemoryMiB = 256
	DefaultCPUs      = 1
	// DefaultBinary is run from $PATH when Config.Binary is empty.
	DefaultBinary = "qemu-system-x86_64"
)

// Config describes one QEMU process. It is plain data; Args turns it into a
// command line and Start runs it.
type Config struct {
	Name   string // VM name; names the QEMU process (-name). Required.
	Binary string // QEMU binary; "" means DefaultBinary from $PATH
	// Kernel is the open uncompressed ELF vmlinux (config.Open), booted
	// through its PVH entry. Required. QEMU gets the descriptor and opens
	// it as /proc/self/fd/N: it never resolves a path of the VM's
	// directory itself (see the package doc).
	Kernel *os.File
	// Initramfs is the open initramfs, passed like Kernel; nil means none.
	Initramfs *os.File
	Cmdline   string // kernel command line; "" means DefaultCmdline
	Accel     string // "kvm" or "tcg" (resolve "auto" with DetectAccel first). Required.
	MemoryMiB int    // guest RAM; 0 means DefaultMemoryMiB
	CPUs      int    // vCPUs; 0 means DefaultCPUs
	// Images are the open raw disk images (config.Open), each a read-only
	// virtio-blk device in this order, handed to QEMU's block layer as a
	// descriptor in an fd set (-add-fd, /dev/fdset/N), which QEMU dups and
	// never resolves as a path. Read-only because the images live on
	// the user partition as the VM's definition: a compromised or crashing
	// guest must not be able to alter what it boots next time, a VM killed
	// mid-write cannot corrupt them, and a restart always starts from the
	// same state. A guest that needs writable storage uses a tmpfs or
	// overlay in its own RAM.
	Images []*os.File
	NICs   []NIC // cold-plugged NICs, in this order
	// PCI are host PCI devices (addresses, 0000:03:00.0) the guest gets by
	// VFIO, bound to vfio-pci and their IOMMU groups' nodes open to UID
	// already: QEMU 7.2 opens /dev/vfio/<group> itself (its vfio-pci has
	// no descriptor option).
	PCI []string
	// Memlock is QEMU's RLIMIT_MEMLOCK (soft and hard), in bytes: VFIO
	// pins the guest's RAM against it. 0 leaves spectrumd's own.
	Memlock uint64

	// QMPSocket and ConsoleSocket are the paths Start binds (mode 0600):
	// QMP for spectrumd, the virtio-console (hvc0) for `spectrumd console`.
	// Args does not use them: QEMU receives the bound sockets as fds.
	QMPSocket     string
	ConsoleSocket string

	// UID and GID are the user and group QEMU runs as from its first
	// instruction: Start sets them between fork and exec, so QEMU never
	// runs as root, not even while it parses the kernel. Never 0. Each VM
	// gets its own (host/vmm allocates them from a range), so one QEMU
	// cannot signal, trace or read the memory of another. QEMU needs no
	// permission on any file: everything it uses is an inherited
	// descriptor, or arrives over QMP.
	UID, GID uint32
	// Groups are QEMU's supplementary groups: the group of /dev/kvm under
	// KVM (QEMU opens it itself), none under TCG.
	Groups []uint32
	// PIDFile is where Start records QEMU's pid and start time, so that a
	// spectrumd started after one that died can find and kill a QEMU left
	// running (KillOrphan); "" means none. spectrumd writes and removes it;
	// QEMU has no descriptor of it.
	PIDFile string

	// Log gets what QMP drops from QEMU (replies that answer nothing,
	// malformed events, events nobody had room for: see host/qmp), rate
	// limited by host/qmp, with whatever the logger carries (host/vmm's
	// has the VM's name); nil means they are only counted. Args does not
	// use it.
	Log *slog.Logger
}

// File descriptor numbers in QEMU's process. Start puts ExtraFiles in the
// order layout gives; Args refers to them. They are the one place both agree
// on.
const (
	fdQMP     = 3 // listening unix socket, QMP
	fdConsole = 4 // listening unix socket, virtio-console
	fdSerial  = 5 // write end of the serial pipe
	fdKernel  = 6 // the kernel; then the initramfs, the images, the taps
)

// fdLayout is where layout puts c's files in QEMU's descriptor table.
type fdLayout struct {
	initramfs int // 0: none
	images    []int
	taps      []int
	vhosts    []int // 0: that NIC has none
	n         int   // descriptors 3 to n-1 are used
}

// layout numbers c's files from fdKernel on: kernel, initramfs (if any),
// images, taps.
func (c Config) layout() fdLayout {
	l := fdLayout{n: fdKernel + 1}
	next := func() int { l.n++; return l.n - 1 }
	if c.Initramfs != nil {
		l.initramfs = next()
	}
	for range c.Images {
		l.images = append(l.images, next())
	}
	for _, n := range c.NICs {
		l.taps = append(l.taps, next())
		v := 0
		if n.Vhost != nil {
			v = next()
		}
		l.vhosts = append(l.vhosts, v)
	}
	return l
}

// files returns what goes into the child's descriptors 3 and up, as layout
// numbers them; qmp, console and serial are the sockets and the pipe.
func (c Config) files(qmp, console, serial *os.File) []*os.File {
	l := c.layout()
	f := make([]*os.File, l.n-3)
	f[fdQMP-3], f[fdConsole-3], f[fdSerial-3], f[fdKernel-3] = qmp, console, serial, c.Kernel
	if l.initramfs != 0 {
		f[l.initramfs-3] = c.Initramfs
	}
	for i, fd := range l.images {
		f[fd-3] = c.Images[i]
	}
	for i, fd := range l.taps {
		f[fd-3] = c.NICs[i].Tap
		if v := l.vhosts[i]; v != 0 {
			f[v-3] = c.NICs[i].Vhost
		}
	}
	return f
}

// Args returns QEMU's arguments (without the binary's name) for c. It checks
// c and refuses values QEMU would misparse: control characters anywhere,
// relative paths, ids QEMU rejects, a missing file. Commas in option values
// are escaped by doubling them, QEMU's own syntax. Files appear as the
// descriptor numbers Start gives them (layout); Args never looks inside them.
func (c Config) Args() ([]string, error) {
	var errs []error
	check := func(what, v string) {
		if err := checkText(v); err != nil {
			errs = append(errs, fmt.Errorf("%s %q: %w", what, v, err))
		}
	}
	checkPath := func(what, p string) {
		check(what, p)
		if !filepath.IsAbs(p) {
			errs = append(errs, fmt.Errorf("%s %q: not an absolute path", what, p))
		}
	}
	if c.Name == "" {
		errs = append(errs, errors.New("name: empty"))
	}
	check("name", c.Name)
	if c.Kernel == nil {
		errs = append(errs, errors.New("kernel: none"))
	}
	cmdline := c.Cmdline
	if cmdline == "" {
		cmdline = DefaultCmdline
	}
	check("cmdline", cmdline)
	if c.Accel != "kvm" && c.Accel != "tcg" {
		errs = append(errs, fmt.Errorf("accel %q: want kvm or tcg", c.Accel))
	}
	mem, cpus := c.MemoryMiB, c.CPUs
	if mem == 0 {
		mem = DefaultMemoryMiB
	}
	if cpus == 0 {
		cpus = DefaultCPUs
	}
	if mem < 0 || cpus < 0 {
		errs = append(errs, fmt.Errorf("memory %d MiB, %d CPUs: negative", mem, cpus))
	}
	if len(c.Images) == 0 {
		errs = append(errs, errors.New("images: none (a VM needs at least one disk)"))
	}
	for i, img := range c.Images {
		if img == nil {
			errs = append(errs, fmt.Errorf("image %d: no file", i))
		}
	}
	ids := map[string]bool{}
	for _, n := range c.NICs {
		if err := qmp.CheckID(n.ID); err != nil {
			errs = append(errs, err)
		}
		if ids[n.ID] {
			errs = append(errs, fmt.Errorf("nic id %q: used twice", n.ID))
		}
		ids[n.ID] = true
		if len(n.MAC) != 6 {
			errs = append(errs, fmt.Errorf("nic %s: MAC %v is not 6 octets", n.ID, n.MAC))
		}
		if n.Tap == nil {
			errs = append(errs, fmt.Errorf("nic %s: no tap", n.ID))
		}
		if n.Vhost != nil && c.Accel != "kvm" {
			errs = append(errs, fmt.Errorf("nic %s: vhost-net needs KVM (accel %s)", n.ID, c.Accel))
		}
	}
	for _, a := range c.PCI {
		if err := vfio.CheckAddr(a); err != nil {
			errs = append(errs, fmt.Errorf("pci: %w", err))
		}
	}
	if len(c.PCI) > 0 && c.Memlock < uint64(mem)<<20 {
		errs = append(errs, fmt.Errorf("pci: memlock %d bytes is below the guest's RAM (%d MiB), which VFIO pins", c.Memlock, mem))
	}
	if c.UID == 0 || c.GID == 0 {
		errs = append(errs, fmt.Errorf("uid %d, gid %d: QEMU never runs as root", c.UID, c.GID))
	}
	for _, g := range c.Groups {
		if g == 0 {
			errs = append(errs, errors.New("groups: QEMU never gets the root group"))
		}
	}
	if c.PIDFile != "" {
		checkPath("pidfile", c.PIDFile)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("qemu config for %q: %w", c.Name, err)
	}
	fds := c.layout()

	a := []string{
		"-name", "guest=" + esc(c.Name),
		"-nodefaults", "-no-user-config",
		"-display", "none",
		// A guest reboot ends QEMU: the supervisor restarts the VM, and sees
		// and logs a panic or a reboot loop.
		"-no-reboot",
		// Paused: Start resumes the guest (cont) after the QMP handshake,
		// so the greeting is read from a QEMU no guest code has run in.
		"-S",
		"-machine", Machine,
		"-accel", c.Accel,
		// "max" is the host CPU under KVM and every emulated feature under
		// TCG, so guest kernels built for newer x86-64 levels boot on both.
		"-cpu", "max",
		"-m", strconv.Itoa(mem),
		"-smp", strconv.Itoa(cpus),
		// Seccomp: no obsolete syscalls, no set*id or other privilege
		// changes (QEMU has its uid from the start and never switches),
		// no fork/exec, no scheduler or affinity changes.
		"-sandbox", "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny",
		// -kernel, -initrd and -append take their value verbatim (no
		// option syntax): no comma escaping. QEMU 7.2 loads the kernel
		// and initrd with plain open(2), not through its fd sets, so
		// they are named by the descriptor QEMU inherited.
		"-kernel", procFD(fdKernel),
	}
	if c.Initramfs != nil {
		a = append(a, "-initrd", procFD(fds.initramfs))
	}
	a = append(a, "-append", cmdline)

	// Serial: a file chardev on the pipe's write end. append=on because
	// QEMU refuses to open an fdset fd with O_TRUNC.
	a = append(a,
		"-add-fd", fmt.Sprintf("fd=%d,set=%d,opaque=serial", fdSerial, fdSerial),
		"-chardev", "file,id=serial,path="+fdset(fdSerial)+",append=on",
		"-serial", "chardev:serial",
	)
	// QMP and the virtio-console on sockets Start has already bound.
	a = append(a,
		"-chardev", fmt.Sprintf("socket,id=qmp,fd=%d,server=on,wait=off", fdQMP),
		"-mon", "chardev=qmp,mode=control",
		"-device", "virtio-serial-pci,id=virtio-serial",
		"-chardev", fmt.Sprintf("socket,id=console,fd=%d,server=on,wait=off", fdConsole),
		"-device", "virtconsole,chardev=console,id=console",
	)
	for i, fd := range fds.images {
		// -blockdev with an explicit file driver: the name is never
		// parsed for a protocol prefix ("nbd:", "json:"), and format raw
		// is never probed. The fd set's number is the descriptor's, and
		// QEMU's block layer opens /dev/fdset/N by dup'ing it.
		node := "disk" + strconv.Itoa(i)
		a = append(a,
			"-add-fd", fmt.Sprintf("fd=%d,set=%d,opaque=%s", fd, fd, node),
			"-blockdev", "driver=raw,node-name="+node+",read-only=on,"+
				"file.driver=file,file.filename="+fdset(fd)+",file.read-only=on",
			"-device", "virtio-blk-pci,drive="+node+",id="+node,
		)
	}
	// Every NIC, cold-plugged or not, sits behind a PCIe-to-PCI bridge:
	// the root bus takes no hot-plug, and a provider's cold-plugged NIC
	// of a client that stops is unplugged like a hot-plugged one.
	for b := range c.nicBridges() {
		a = append(a, "-device", "pcie-pci-bridge,id="+bridgeID(b)+",bus=pcie.0")
	}
	for i, n := range c.NICs {
		a = append(a,
			"-netdev", cli(nicNetdev(n.ID, strconv.Itoa(fds.taps[i]), vhostFD(fds.vhosts[i]))),
			"-device", cli(nicDevice(n, bridgeID(i/BridgeSlots), i%BridgeSlots)),
		)
	}
	// Host PCI devices, on the root bus (integrated endpoints): QEMU
	// opens each one's IOMMU group node and the VFIO container itself.
	for i, addr := range c.PCI {
		a = append(a, "-device", "vfio-pci,host="+addr+",id="+PCIID(i)+",bus=pcie.0")
	}
	return a, nil
}

// PCIID is QEMU's id of a VM's i-th host PCI device.
func PCIID(i int) string { return "hostpci" + strconv.Itoa(i) }

// Machine is QEMU's machine type: q35 without the devices no spectrum
// guest uses (vmport, the SATA controller, SMBus, the PS/2 controller).
// Unlike "pc" it has no floppy or IDE controller at all. Measured with the
// Debian test kernel under TCG, it boots as fast as "pc" (docs/BENCHMARKS.md).
const Machine = "q35,vmport=off,sata=off,smbus=off,i8042=off"

// BridgeSlots is how many NICs one of a VM's PCIe-to-PCI bridges holds.
// A VM gets enough bridges for its cold-plugged NICs and BridgeSlots more
// for hot-plug; one more bridge costs the guest's boot nothing measurable.
const BridgeSlots = 32

// nicBridges is how many bridges c's VM gets.
func (c Config) nicBridges() int { return (len(c.NICs)+BridgeSlots-1)/BridgeSlots + 1 }

// vhostFD is the vhostfd option's value for descriptor fd, "" for none.
func vhostFD(fd int) string {
	if fd == 0 {
		return ""
	}
	return strconv.Itoa(fd)
}

// bridgeID names the i-th bridge.
func bridgeID(i int) string { return "nics" + strconv.Itoa(i) }

// procFD names descriptor fd of QEMU's own process as a path.
func procFD(fd int) string { return "/proc/self/fd/" + strconv.Itoa(fd) }

// fdset names fd set n (QEMU's -add-fd) as a path.
func fdset(n int) string { return "/dev/fdset/" + strconv.Itoa(n) }

// esc escapes a value for QEMU's option syntax (QemuOpts and keyval), where
// ',' separates options and ",," is a literal comma.
func esc(v string) string { return strings.ReplaceAll(v, ",", ",,") }

// checkText refuses what no QEMU option value should carry: invalid UTF-8,
// control characters (a newline could forge a line in a log or in QEMU's
// own parsing), and DEL.
func checkText(v string) error {
	if !utf8.ValidString(v) {
		return errors.New("not valid UTF-8")
	}
	for _, r := range v {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			return fmt.Errorf("control character %U", r)
		}
	}
	return nil
}

// Quote renders argv (binary first) as one shell command line, for logging
// the exact command so a failure can be reproduced by hand. File descriptors
// 3 and up must be provided too (see Start).
func Quote(argv []string) string {
	var b strings.Builder
	for i, a := range argv {
		if i > 0 {
			b.WriteByte(' ')
		}
		if a != "" && strings.Trim(a, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_=,.:/+@%") == "" {
			b.WriteString(a)
			continue
		}
		b.WriteString("'" + strings.ReplaceAll(a, "'", `'\''`) + "'")
	}
	return b.String()
}
