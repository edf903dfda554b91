package qemu

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"spectrum-os.org/netcfg/internal/mac"
)

// testFile is a stand-in for an open file in Args tests: Args only counts
// files, it never looks inside them.
func testFile(t *testing.T) *os.File {
	t.Helper()
	f, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

func TestArgs(t *testing.T) {
	f := testFile(t)
	base := func() Config {
		return Config{
			Name:   "app",
			Kernel: f,
			Images: []*os.File{f},
			Accel:  "tcg",
			UID:    327680, GID: 327680,
		}
	}
	common := func(name string, extra ...string) []string {
		return append([]string{
			"-name", "guest=" + name,
			"-nodefaults", "-no-user-config", "-display", "none", "-no-reboot", "-S",
			"-machine", "q35,vmport=off,sata=off,smbus=off,i8042=off", "-accel", "tcg", "-cpu", "max", "-m", "256", "-smp", "1",
			"-sandbox", "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny",
		}, extra...)
	}
	plumbing := []string{
		"-add-fd", "fd=5,set=5,opaque=serial",
		"-chardev", "file,id=serial,path=/dev/fdset/5,append=on",
		"-serial", "chardev:serial",
		"-chardev", "socket,id=qmp,fd=3,server=on,wait=off",
		"-mon", "chardev=qmp,mode=control",
		"-device", "virtio-serial-pci,id=virtio-serial",
		"-chardev", "socket,id=console,fd=4,server=on,wait=off",
		"-device", "virtconsole,chardev=console,id=console",
	}
	cat := func(parts ...[]string) []string {
		var out []string
		for _, p := range parts {
			out = append(out, p...)
		}
		return out
	}
	disk := func(i, fd string) []string {
		return []string{
			"-add-fd", "fd=" + fd + ",set=" + fd + ",opaque=disk" + i,
			"-blockdev", "driver=raw,node-name=disk" + i + ",read-only=on,file.driver=file,file.filename=/dev/fdset/" + fd + ",file.read-only=on",
			"-device", "virtio-blk-pci,drive=disk" + i + ",id=disk" + i,
		}
	}
	bridges := func(n int) []string {
		var out []string
		for i := range n {
			out = append(out, "-device", fmt.Sprintf("pcie-pci-bridge,id=nics%d,bus=pcie.0", i))
		}
		return out
	}
	for _, tt := range []struct {
		name string
		edit func(*Config)
		want []string
	}{
		{
			name: "minimal",
			edit: func(*Config) {},
			want: cat(common("app", "-kernel", "/proc/self/fd/6", "-append", DefaultCmdline), plumbing, disk("0", "7"), bridges(1)),
		},
		{
			name: "everything",
			edit: func(c *Config) {
				c.Initramfs = f
				c.Cmdline = "console=ttyS0 quiet spectrum.x=1"
				c.Accel = "kvm"
				c.MemoryMiB = 512
				c.CPUs = 2
				c.Images = append(c.Images, f)
				c.NICs = []NIC{
					{ID: "link-a546", MAC: mac.LinkID(0xa546).MAC(mac.Client), Tap: f},
					{ID: "link-0001", MAC: mac.LinkID(1).MAC(mac.Provider), Tap: f},
				}
			},
			want: cat([]string{
				"-name", "guest=app",
				"-nodefaults", "-no-user-config", "-display", "none", "-no-reboot", "-S",
				"-machine", "q35,vmport=off,sata=off,smbus=off,i8042=off", "-accel", "kvm", "-cpu", "max", "-m", "512", "-smp", "2",
				"-sandbox", "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny",
				"-kernel", "/proc/self/fd/6", "-initrd", "/proc/self/fd/7",
				"-append", "console=ttyS0 quiet spectrum.x=1",
			}, plumbing,
				disk("0", "8"), disk("1", "9"), bridges(2),
				[]string{
					"-netdev", "tap,id=link-a546,fd=10",
					"-device", "virtio-net-pci,netdev=link-a546,id=link-a546,mac=0a:b3:ec:00:a5:46,romfile=,bus=nics0,addr=0x0",
					"-netdev", "tap,id=link-0001,fd=11",
					"-device", "virtio-net-pci,netdev=link-0001,id=link-0001,mac=0a:b3:ec:80:00:01,romfile=,bus=nics0,addr=0x1",
				}),
		},
		{
			// Neither appears on the command line: Start sets the
			// credentials and writes the pid file itself.
			name: "user, groups and pid file",
			edit: func(c *Config) {
				c.Groups = []uint32{107}
				c.PIDFile = "/run/spectrumd/vms/app/qemu.pid"
			},
			want: cat(common("app", "-kernel", "/proc/self/fd/6", "-append", DefaultCmdline), plumbing, disk("0", "7"), bridges(1)),
		},
		{
			name: "commas escaped in option values",
			edit: func(c *Config) { c.Name = "a,b" },
			want: cat(common("a,,b", "-kernel", "/proc/self/fd/6", "-append", DefaultCmdline), plumbing, disk("0", "7"), bridges(1)),
		},
		{
			// Under KVM each NIC may bring its /dev/vhost-net: its
			// descriptor follows its tap's.
			name: "vhost-net under KVM",
			edit: func(c *Config) {
				c.Accel = "kvm"
				c.NICs = []NIC{
					{ID: "a", MAC: mac.LinkID(1).MAC(mac.Client), Tap: f, Vhost: f},
					{ID: "b", MAC: mac.LinkID(2).MAC(mac.Provider), Tap: f},
					{ID: "c", MAC: mac.LinkID(3).MAC(mac.Provider), Tap: f, Vhost: f},
				}
			},
			want: cat([]string{
				"-name", "guest=app",
				"-nodefaults", "-no-user-config", "-display", "none", "-no-reboot", "-S",
				"-machine", "q35,vmport=off,sata=off,smbus=off,i8042=off", "-accel", "kvm", "-cpu", "max", "-m", "256", "-smp", "1",
				"-sandbox", "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny",
				"-kernel", "/proc/self/fd/6", "-append", DefaultCmdline,
			}, plumbing, disk("0", "7"), bridges(2),
				[]string{
					"-netdev", "tap,id=a,fd=8,vhost=on,vhostfd=9",
					"-device", "virtio-net-pci,netdev=a,id=a,mac=0a:b3:ec:00:00:01,romfile=,bus=nics0,addr=0x0",
					"-netdev", "tap,id=b,fd=10",
					"-device", "virtio-net-pci,netdev=b,id=b,mac=0a:b3:ec:80:00:02,romfile=,bus=nics0,addr=0x1",
					"-netdev", "tap,id=c,fd=11,vhost=on,vhostfd=12",
					"-device", "virtio-net-pci,netdev=c,id=c,mac=0a:b3:ec:80:00:03,romfile=,bus=nics0,addr=0x2",
				}),
		},
		{
			// Host PCI devices by VFIO: after the NICs, on the root
			// bus; the memlock limit is not an argument.
			name: "host PCI devices",
			edit: func(c *Config) {
				c.NICs = []NIC{{ID: "uplink0", MAC: mac.LinkID(1).MAC(mac.Client), Tap: f}}
				c.PCI = []string{"0000:00:03.0", "0000:03:00.1"}
				c.Memlock = 256<<20 + 1<<30
			},
			want: cat(common("app", "-kernel", "/proc/self/fd/6", "-append", DefaultCmdline), plumbing, disk("0", "7"), bridges(2),
				[]string{
					"-netdev", "tap,id=uplink0,fd=8",
					"-device", "virtio-net-pci,netdev=uplink0,id=uplink0,mac=0a:b3:ec:00:00:01,romfile=,bus=nics0,addr=0x0",
					"-device", "vfio-pci,host=0000:00:03.0,id=hostpci0,bus=pcie.0",
					"-device", "vfio-pci,host=0000:03:00.1,id=hostpci1,bus=pcie.0",
				}),
		},
		{
			// 33 NICs fill a bridge and start the next; a third
			// keeps 31 slots free for hot-plug.
			name: "a bridge per 32 NICs",
			edit: func(c *Config) {
				for i := range 33 {
					c.NICs = append(c.NICs, NIC{ID: fmt.Sprintf("n%d", i), MAC: mac.LinkID(i + 1).MAC(mac.Provider), Tap: f})
				}
			},
			want: func() []string {
				w := cat(common("app", "-kernel", "/proc/self/fd/6", "-append", DefaultCmdline), plumbing, disk("0", "7"), bridges(3))
				for i := range 33 {
					w = append(w, "-netdev", fmt.Sprintf("tap,id=n%d,fd=%d", i, 8+i),
						"-device", fmt.Sprintf("virtio-net-pci,netdev=n%d,id=n%d,mac=%s,romfile=,bus=nics%d,addr=%#x",
							i, i, mac.LinkID(i+1).MAC(mac.Provider), i/32, i%32))
				}
				return w
			}(),
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := base()
			tt.edit(&c)
			got, err := c.Args()
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("Args (-want +got):\n%s", diff)
			}
			// Start hands the files over in the order Args numbers them.
			files := c.files(nil, nil, nil)
			for i, x := range files {
				if i+3 >= fdKernel && x != f {
					t.Errorf("descriptor %d has no file", i+3)
				}
			}
		})
	}
}

func TestArgsRefused(t *testing.T) {
	f := testFile(t)
	for _, tt := range []struct {
		name string
		edit func(*Config)
		want string // substring of the error
	}{
		{"no name", func(c *Config) { c.Name = "" }, "name: empty"},
		{"root", func(c *Config) { c.UID = 0 }, "never runs as root"},
		{"root group", func(c *Config) { c.GID = 0 }, "never runs as root"},
		{"root supplementary group", func(c *Config) { c.Groups = []uint32{107, 0} }, "never gets the root group"},
		{"relative pidfile", func(c *Config) { c.PIDFile = "qemu.pid" }, "not an absolute path"},
		{"newline in name", func(c *Config) { c.Name = "a\nb" }, "control character"},
		{"no kernel", func(c *Config) { c.Kernel = nil }, "kernel: none"},
		{"escape in cmdline", func(c *Config) { c.Cmdline = "console=ttyS0\x1b[2J" }, "control character"},
		{"C1 control", func(c *Config) { c.Cmdline = "a\u0085b" }, "control character"},
		{"invalid utf8", func(c *Config) { c.Cmdline = "a\xffb" }, "UTF-8"},
		{"no images", func(c *Config) { c.Images = nil }, "at least one disk"},
		{"an image without a file", func(c *Config) { c.Images = []*os.File{f, nil} }, "image 1: no file"},
		{"bad accel", func(c *Config) { c.Accel = "auto" }, "want kvm or tcg"},
		{"negative memory", func(c *Config) { c.MemoryMiB = -1 }, "negative"},
		{"bad nic id", func(c *Config) { c.NICs = []NIC{{ID: "a,b", MAC: mac.LinkID(1).MAC(mac.Client), Tap: f}} }, "not allowed"},
		{"nic id not a letter first", func(c *Config) { c.NICs = []NIC{{ID: "1a", MAC: mac.LinkID(1).MAC(mac.Client), Tap: f}} }, "start with a letter"},
		{"duplicate nic id", func(c *Config) {
			c.NICs = []NIC{{ID: "n", MAC: mac.LinkID(1).MAC(mac.Client), Tap: f}, {ID: "n", MAC: mac.LinkID(2).MAC(mac.Client), Tap: f}}
		}, "used twice"},
		{"short mac", func(c *Config) { c.NICs = []NIC{{ID: "n", MAC: []byte{1, 2}, Tap: f}} }, "not 6 octets"},
		{"nic without tap", func(c *Config) { c.NICs = []NIC{{ID: "n", MAC: mac.LinkID(1).MAC(mac.Client)}} }, "nic n: no tap"},
		{"PCI address with an option", func(c *Config) { c.PCI = []string{"0000:00:03.0,rombar=1"}; c.Memlock = 2 << 30 }, "not a PCI address"},
		{"PCI address as a path", func(c *Config) { c.PCI = []string{"../../0000:00"}; c.Memlock = 2 << 30 }, "not a PCI address"},
		{"PCI without memlock", func(c *Config) { c.PCI = []string{"0000:00:03.0"} }, "below the guest's RAM"},
		{"vhost-net under TCG", func(c *Config) { c.NICs = []NIC{{ID: "n", MAC: mac.LinkID(1).MAC(mac.Client), Tap: f, Vhost: f}} }, "vhost-net needs KVM"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := Config{Name: "vm", Kernel: f, Images: []*os.File{f}, Accel: "tcg", UID: 327680, GID: 327680}
			tt.edit(&c)
			_, err := c.Args()
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Args error = %v, want one containing %q", err, tt.want)
			}
		})
	}
}

func TestQuote(t *testing.T) {
	got := Quote([]string{"qemu-system-x86_64", "-append", "console=ttyS0 panic=-1", "-name", "guest=it's", "-x", ""})
	want := `qemu-system-x86_64 -append 'console=ttyS0 panic=-1' -name 'guest=it'\''s' -x ''`
	if got != want {
		t.Errorf("Quote = %s, want %s", got, want)
	}
}

func TestDetectAccel(t *testing.T) {
	vmx := []byte("processor\t: 0\nflags\t\t: fpu vme vmx sse\n\nprocessor\t: 1\nflags\t\t: fpu vme vmx sse\n")
	svm := []byte("flags\t: fpu svm\n")
	none := []byte("flags\t: fpu hypervisor sse\n")
	opens := func() error { return nil }
	missing := func() error { return os.ErrNotExist }
	info := func(b []byte) func() ([]byte, error) { return func() ([]byte, error) { return b, nil } }
	for _, tt := range []struct {
		name    string
		pref    string
		host    AccelHost
		want    string
		wantErr bool
	}{
		{"auto vmx", "auto", AccelHost{opens, info(vmx)}, "kvm", false},
		{"auto svm", "auto", AccelHost{opens, info(svm)}, "kvm", false},
		{"auto no flag", "auto", AccelHost{opens, info(none)}, "tcg", false},
		{"auto no device", "auto", AccelHost{missing, info(vmx)}, "tcg", false},
		{"auto no cpuinfo", "auto", AccelHost{opens, func() ([]byte, error) { return nil, os.ErrNotExist }}, "tcg", false},
		{"cpuinfo unreadable", "auto", AccelHost{opens, func() ([]byte, error) { return nil, errors.New("EIO") }}, "", true},
		{"empty is auto", "", AccelHost{missing, info(vmx)}, "tcg", false},
		{"explicit kvm", "kvm", AccelHost{missing, info(none)}, "kvm", false},
		{"explicit tcg", "tcg", AccelHost{opens, info(vmx)}, "tcg", false},
		{"bad", "xen", AccelHost{opens, info(vmx)}, "", true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, why, err := tt.host.DetectAccel(tt.pref)
			if (err != nil) != tt.wantErr || got != tt.want {
				t.Errorf("DetectAccel(%q) = %q (%s), %v; want %q, error %v", tt.pref, got, why, err, tt.want, tt.wantErr)
			}
		})
	}
}

// TestDetectAccelHost checks auto's answer on this machine against the
// shell's reading of the same two facts: /dev/kvm opens read-write, and
// /proc/cpuinfo lists vmx or svm. (On this project's build and CI machines
// /dev/kvm opens but the CPU lacks both: auto must choose TCG there.)
func TestDetectAccelHost(t *testing.T) {
	got, why, err := DetectAccel("auto")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("auto -> %s (%s)", got, why)
	kvmOpens := exec.Command("sh", "-c", "exec 3<>/dev/kvm").Run() == nil
	virt := exec.Command("grep", "-qwE", "vmx|svm", "/proc/cpuinfo").Run() == nil
	want := "tcg"
	if kvmOpens && virt {
		want = "kvm"
	}
	if got != want {
		t.Errorf("DetectAccel(auto) = %s (%s); want %s: /dev/kvm opens read-write: %t, cpuinfo has vmx or svm: %t",
			got, why, want, kvmOpens, virt)
	}
}
