package cli

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/vishvananda/netns"

	"spectrum-os.org/netcfg/host/alloc"
	"spectrum-os.org/netcfg/host/config"
	"spectrum-os.org/netcfg/host/control"
	"spectrum-os.org/netcfg/host/daemon"
	"spectrum-os.org/netcfg/host/hostlog"
	"spectrum-os.org/netcfg/host/link"
	"spectrum-os.org/netcfg/host/qemu"
	"spectrum-os.org/netcfg/host/vfio"
	"spectrum-os.org/netcfg/host/vmm"
)

// Serve implements `spectrumd serve`: it runs the daemon in the foreground
// until SIGTERM or SIGINT, then stops every VM (clients before providers),
// removes every link it made, and returns nil.
func Serve(args []string, stdout, stderr io.Writer) error {
	return serveCmd.Run(args, Stdio{Out: stdout, Err: stderr})
}

var serveCmd = &Command{
	Name:    "serve",
	Summary: "run the daemon in the foreground",
	About: `Run the daemon in the foreground. VMs start with ` + "`spectrumd start NAME`" + ` (or -start).
SIGTERM or SIGINT stops every VM and removes their links.`,
	Define: func(fs *flag.FlagSet) Runner {
		var f serveFlags
		fs.StringVar(&f.data, "data", DefaultData, "data `DIR` holding one directory per VM")
		fs.StringVar(&f.state, "state", DefaultState, "state `DIR`: link ids and per-VM logs")
		fs.StringVar(&f.run, "run", DefaultRun, "run `DIR`: control socket and per-VM sockets")
		fs.StringVar(&f.accel, "accel", "auto", "accelerator: `auto|kvm|tcg` (auto: KVM only where it works)")
		fs.StringVar(&f.start, "start", "", "comma-separated `VMS` to start at once (with their providers)")
		fs.DurationVar(&f.stopTimeout, "stop-timeout", 10*time.Second, "how long a guest gets to power down before it is killed")
		fs.IntVar(&f.memory, "memory", qemu.DefaultMemoryMiB, "guest RAM in `MiB`")
		fs.StringVar(&f.logTo, "log", hostlog.Auto, "where the log goes: `auto|journal|stderr` (auto: the journal when stderr is the journal's stream, as under systemd; stderr otherwise)")
		fs.BoolVar(&f.logJSON, "log-json", false, "log to stderr as JSON lines instead of text")
		fs.StringVar(&f.vmUIDs, "vm-uids", vmm.DefaultUIDs, "`FIRST-LAST`: the uids (and gids of the same numbers) QEMU runs under, one per VM, kept in STATE/"+vmm.UIDFile+"; no user database entry needed, and none may hold them (/etc/passwd, group, subuid, subgid)")
		fs.DurationVar(&f.nicTimeout, "nic-timeout", daemon.DefaultNICTimeout, "how long a NIC hot-plug or unplug waits for the guest (an unplug the guest ignores leaves the device but frees the tap)")
		fs.DurationVar(&f.silentAfter, "silent-after", daemon.DefaultSilentAfter, "warn about a VM that has written nothing to its serial console this long after launch (0: never)")
		return func(_ []string, s Stdio) error { return serve(f, s.Err) }
	},
}

// serveFlags are serve's flags.
type serveFlags struct {
	data, state, run, accel, start, vmUIDs, logTo string
	stopTimeout, nicTimeout, silentAfter          time.Duration
	memory                                        int
	logJSON                                       bool
}

func serve(f serveFlags, stderr io.Writer) error {
	// A log reader that goes away (the terminal or pipe spectrumd's stderr
	// went to) must not kill the daemon with SIGPIPE and orphan its VMs:
	// the write fails and spectrumd carries on.
	signal.Ignore(syscall.SIGPIPE)
	h, chose, err := hostlog.New(f.logTo, stderr, f.logJSON)
	if err != nil {
		return err
	}
	log := slog.New(h)
	log.Info("log", "to", chose)

	uidRange, err := vmm.ParseUIDRange(f.vmUIDs)
	if err != nil {
		return fmt.Errorf("-vm-uids: %w", err)
	}
	// A user, group or user namespace holding a VM's uid could signal or
	// trace its QEMU: refuse the range rather than share it.
	if err := vmm.CheckUIDRange("/", uidRange); err != nil {
		return fmt.Errorf("-vm-uids:\n%w", err)
	}
	if f.silentAfter == 0 {
		f.silentAfter = -1 // the daemon's "never"
	}

	acc, why, err := qemu.DetectAccel(f.accel)
	if err != nil {
		return err
	}
	log.Info("accelerator", "accel", acc, "why", why)
	var kvmGroup uint32
	if acc == "kvm" {
		// QEMU opens /dev/kvm itself, as its own uid: the device's group
		// (kvm) is its one supplementary group, if it needs one.
		g, err := vmm.DeviceGroup(vmm.KVMDevice)
		if err != nil {
			return fmt.Errorf("accel kvm: %w", err)
		}
		kvmGroup = g
	}
	// Under KVM, virtio-net goes through the kernel's vhost-net when
	// spectrumd can open it (the unit allows the device); otherwise QEMU's
	// own backend carries the packets, slower, and that is said once.
	vhost := false
	if acc == "kvm" {
		if f, err := vmm.OpenVhostNet(); err != nil {
			log.Warn("virtio-net without vhost-net: QEMU's userspace backend carries every packet", "err", err)
		} else {
			f.Close()
			vhost = true
			log.Info("virtio-net with vhost-net", "device", vmm.VhostNetDevice)
		}
	}
	for _, d := range []string{f.state, f.run} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return err
		}
	}

	self, err := netns.Get()
	if err != nil {
		return fmt.Errorf("own network namespace: %w", err)
	}
	// The links get a network namespace of their own, so nothing of the
	// host meets a guest's frames; uplinks join the user's bridges here.
	nw, err := link.OpenHost(self, log)
	self.Close()
	if err != nil {
		return err
	}
	defer nw.Close()
	log.Info("links live in a network namespace of their own", "netns_fd", int(nw.Namespace()),
		"inspect", fmt.Sprintf("nsenter --net=/proc/%d/fd/%d ip link", os.Getpid(), int(nw.Namespace())))
	// A QEMU that still runs was left by a spectrumd that died (its
	// parent-death signal normally takes it along; this is the backstop).
	// Stop it before its links go.
	vmm.KillOrphans(f.run, log)
	// Nothing runs now, so every link of ours is a stray from a daemon that
	// died (its QEMUs died with it or were just killed).
	if err := nw.Cleanup(nil); err != nil {
		log.Error("removing stray links", "err", err)
	}

	al, err := alloc.Open(f.state, log)
	if err != nil {
		return err
	}
	uids, err := vmm.OpenUIDs(f.state, uidRange, log)
	if err != nil {
		return err
	}
	host := vfio.System
	host.Modprobe = modprobe
	// A spectrumd that died left its QEMUs' IOMMU groups granted; they
	// were killed above.
	if had, err := host.RevokeAll(); err != nil {
		log.Error("taking back IOMMU groups a former spectrumd granted", "err", err)
	} else if len(had) > 0 {
		log.Info("took back IOMMU groups a former spectrumd granted", "groups", had)
	}
	qemus, err := vmm.New(vmm.Options{Accel: acc, MemoryMiB: f.memory, UIDs: uids, KVMGroup: kvmGroup, VhostNet: vhost, VFIO: &host, Log: log})
	if err != nil {
		return err
	}
	log.Info("QEMU runs under a uid of its own per VM, in an empty network namespace", "uids", uidRange.String())
	d, err := daemon.New(daemon.Options{
		State: f.state, Run: f.run, Log: log, StopTimeout: f.stopTimeout, SilentAfter: f.silentAfter, NICTimeout: f.nicTimeout,
		VMM:     qemus,
		Net:     nw,
		Links:   &configSource{loader: config.NewLoader(f.data), alloc: al},
		Devices: vmm.Devices{Host: host},
	})
	if err != nil {
		return err
	}
	var startNames []string
	if f.start != "" {
		startNames = strings.Split(f.start, ",")
	}
	for _, name := range startNames {
		// A name no VM directory has is a mistake in the command line
		// (or the unit), not a VM that failed.
		if !d.Configured(name) {
			return fmt.Errorf("-start %s: no VM directory of that name in %s", name, f.data)
		}
	}
	ln, err := control.Listen(ControlSocket(f.run))
	if err != nil {
		return err
	}
	srv := &control.Server{Handler: d, Log: log, AllowUID: os.Getuid()}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	log.Info("spectrumd serving", "data", f.data, "state", f.state, "control", ControlSocket(f.run))

	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(sigs)
	// The VMs of -start start in the background, so that a signal meanwhile
	// is handled. A VM that fails to start does not stop the daemon (nor
	// the VMs that did start): it is logged and stays "failed", with its
	// error, in list and status, until a start succeeds.
	startsDone := make(chan struct{})
	go func() {
		defer close(startsDone)
		for _, name := range startNames {
			if err := d.Start(name); err != nil {
				log.Error("-start: VM failed to start; spectrumd status shows it", "vm", name, "err", err)
			}
		}
	}()
	select {
	case sig := <-sigs:
		log.Info("stopping every VM", "signal", sig.String())
	case err := <-served:
		log.Error("control socket failed", "err", err)
	}
	ln.Close()
	stopErr := d.Close()
	<-startsDone // refused by now, if not done
	if err := nw.Cleanup(nil); err != nil {
		stopErr = errors.Join(stopErr, err)
	}
	if stopErr != nil {
		log.Error("stopping", "err", stopErr)
		return stopErr
	}
	log.Info("spectrumd stopped")
	return nil
}

// configSource loads the data directory and keeps the link ids. One Loader
// across reloads reads again only the VM directories that changed.
type configSource struct {
	loader *config.Loader
	alloc  *alloc.Allocator
}

func (s *configSource) Load(held []alloc.Link) (*config.Config, []alloc.Link, error) {
	cfg := s.loader.Load()
	links, err := s.alloc.Sync(alloc.Pairs(cfg), held)
	return cfg, links, err
}

// modprobe loads a kernel module (vfio-pci, for a VM's first PCI uplink).
// Under the systemd unit it fails (ProtectKernelModules=): the error says
// to load vfio-pci at boot.
func modprobe(module string) error {
	out, err := exec.Command("modprobe", "--", module).CombinedOutput()
	if err != nil {
		return fmt.Errorf("modprobe %s: %w: %s", module, err, strings.TrimSpace(string(out)))
	}
	return nil
}
