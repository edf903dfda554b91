package cli

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"os/user"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/vishvananda/netns"

	"spectrum-os.org/netcfg/host/alloc"
	"spectrum-os.org/netcfg/host/config"
	"spectrum-os.org/netcfg/host/control"
	"spectrum-os.org/netcfg/host/daemon"
	"spectrum-os.org/netcfg/host/link"
	"spectrum-os.org/netcfg/host/qemu"
	"spectrum-os.org/netcfg/host/vmlog"
)

// Serve implements `spectrumd serve`: it runs the daemon in the foreground
// until SIGTERM or SIGINT, then stops every VM (clients before providers),
// removes every link it made, and returns nil.
func Serve(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("spectrumd serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	data := fs.String("data", DefaultData, "data `DIR` holding one directory per VM")
	state := fs.String("state", DefaultState, "state `DIR`: link ids and per-VM logs")
	run := fs.String("run", DefaultRun, "run `DIR`: control socket and per-VM sockets")
	accel := fs.String("accel", "auto", "accelerator: auto (KVM only where it works), kvm or tcg")
	start := fs.String("start", "", "comma-separated `VMS` to start at once (with their providers)")
	stopTimeout := fs.Duration("stop-timeout", 10*time.Second, "how long a guest gets to power down before it is killed")
	memory := fs.Int("memory", qemu.DefaultMemoryMiB, "guest RAM in `MiB`")
	logJSON := fs.Bool("log-json", false, "log JSON lines instead of text")
	runAs := fs.String("runas", DefaultRunAs, "`USER` QEMU switches to once it has opened its files; \"\" keeps spectrumd's user (the default "+DefaultRunAs+" only where that user exists)")
	nicTimeout := fs.Duration("nic-timeout", DefaultNICTimeout, "how long a NIC hot-plug or unplug waits for the guest (an unplug the guest ignores leaves the device but frees the tap)")
	silentAfter := fs.Duration("silent-after", daemon.DefaultSilentAfter, "warn about a VM that has written nothing to its serial console this long after launch (0: never)")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: spectrumd serve [flags]\n\nRun the daemon in the foreground. VMs start with `spectrumd start NAME` (or -start).\nSIGTERM or SIGINT stops every VM and removes their links.\n\nflags:\n")
		fs.PrintDefaults()
	}
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		fs.Usage()
		return flag.ErrHelp
	}
	// A log reader that goes away (the terminal or pipe spectrumd's stderr
	// went to) must not kill the daemon with SIGPIPE and orphan its VMs:
	// the write fails and spectrumd carries on.
	signal.Ignore(syscall.SIGPIPE)
	var h slog.Handler = slog.NewTextHandler(stderr, nil)
	if *logJSON {
		h = slog.NewJSONHandler(stderr, nil)
	}
	log := slog.New(h)

	runAsSet := false
	fs.Visit(func(f *flag.Flag) { runAsSet = runAsSet || f.Name == "runas" })
	if *runAs != "" {
		if _, err := user.Lookup(*runAs); err != nil {
			if runAsSet {
				return fmt.Errorf("-runas %s: %w", *runAs, err)
			}
			log.Warn("QEMU runs as spectrumd's user: no user "+DefaultRunAs+" (make deps creates it; -runas USER picks another)", "err", err)
			*runAs = ""
		}
	}
	if *runAs != "" {
		log.Info("QEMU switches to an unprivileged user once it has opened its files", "user", *runAs)
	}
	if *silentAfter == 0 {
		*silentAfter = -1 // the daemon's "never"
	}

	acc, why, err := qemu.DetectAccel(*accel)
	if err != nil {
		return err
	}
	log.Info("accelerator", "accel", acc, "why", why)
	for _, d := range []string{*state, *run} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return err
		}
	}

	self, err := netns.Get()
	if err != nil {
		return fmt.Errorf("own network namespace: %w", err)
	}
	nw, err := link.Open(self, log)
	self.Close()
	if err != nil {
		return err
	}
	defer nw.Close()
	// A QEMU that still runs was left by a spectrumd that died: one that
	// switched user (-runas) lost its parent-death signal. Stop it before
	// its links go.
	killOrphans(*run, log)
	// Nothing runs now, so every link of ours is a stray from a daemon that
	// died (its QEMUs died with it or were just killed).
	if err := nw.Cleanup(nil); err != nil {
		log.Error("removing stray links", "err", err)
	}

	al, err := alloc.Open(*state, log)
	if err != nil {
		return err
	}
	d, err := daemon.New(daemon.Options{
		State: *state, Run: *run, Log: log, StopTimeout: *stopTimeout, SilentAfter: *silentAfter,
		VMM:   &qemuVMM{accel: acc, memory: *memory, runAs: *runAs, nicTimeout: *nicTimeout, log: log},
		Net:   nw,
		Links: &configSource{loader: config.NewLoader(*data), alloc: al},
	})
	if err != nil {
		return err
	}
	ln, err := control.Listen(ControlSocket(*run))
	if err != nil {
		return err
	}
	srv := &control.Server{Handler: d, Log: log, AllowUID: os.Getuid()}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	log.Info("spectrumd serving", "data", *data, "state", *state, "control", ControlSocket(*run))

	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(sigs)
	var startErr error
	if *start != "" {
		for _, name := range strings.Split(*start, ",") {
			if err := d.Start(name); err != nil {
				log.Error("start", "vm", name, "err", err)
				startErr = errors.Join(startErr, err)
			}
		}
	}
	select {
	case sig := <-sigs:
		log.Info("stopping every VM", "signal", sig.String())
	case err := <-served:
		log.Error("control socket failed", "err", err)
	}
	ln.Close()
	stopErr := d.StopAll()
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

// qemuVMM launches VMs as QEMU processes.
type qemuVMM struct {
	accel      string
	memory     int
	runAs      string
	nicTimeout time.Duration
	log        *slog.Logger
}

// killOrphans kills every QEMU still holding a pid file under run, then
// removes what VMs of a spectrumd that died left there (sockets of QEMUs
// killed with it): nothing runs yet.
func killOrphans(run string, log *slog.Logger) {
	vms := filepath.Join(run, "vms")
	files, _ := filepath.Glob(filepath.Join(vms, "*", daemon.PIDFile))
	killed := true
	for _, f := range files {
		vm := filepath.Base(filepath.Dir(f))
		pid, err := qemu.KillOrphan(f, 10*time.Second)
		if err != nil {
			log.Error("stopping an orphaned QEMU", "vm", vm, "err", err)
			killed = false
		} else if pid != 0 {
			log.Warn("killed an orphaned QEMU left by a spectrumd that died", "vm", vm, "pid", pid)
		}
	}
	if !killed {
		return // keep the pid file of a QEMU still running
	}
	left, _ := filepath.Glob(filepath.Join(vms, "*", "*"))
	if len(left) > 0 {
		log.Info("removing files of VMs of a spectrumd that died", "files", left)
	}
	if err := os.RemoveAll(vms); err != nil {
		log.Error("removing stale VM sockets", "err", err)
	}
}

func (v *qemuVMM) Launch(ctx context.Context, spec daemon.Spec) (daemon.Instance, error) {
	c := qemu.Config{
		Name: spec.VM.Name, Kernel: spec.VM.Kernel, Initramfs: spec.VM.Initramfs, Cmdline: spec.VM.Cmdline,
		Accel: v.accel, MemoryMiB: v.memory, Images: spec.VM.Images,
		QMPSocket: spec.QMPPath, ConsoleSocket: spec.ConsolePath,
		RunAs: v.runAs, PIDFile: spec.PIDPath,
	}
	for _, n := range spec.NICs {
		c.NICs = append(c.NICs, qemu.NIC{ID: n.ID, MAC: n.MAC, Tap: n.Tap})
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	log := v.log.With("vm", spec.VM.Name)
	p, err := qemu.Start(ctx, c, &lineLogger{log: log})
	if err != nil {
		return nil, err
	}
	log.Info("QEMU started", "cmd", qemu.Quote(p.Argv))
	return &qemuInstance{p: p, log: log, nicTimeout: v.nicTimeout}, nil
}

type qemuInstance struct {
	p          *qemu.Process
	log        *slog.Logger
	nicTimeout time.Duration
}

// DefaultNICTimeout bounds one hot-plug or unplug; an unplug waits for the
// guest to release the device.
const DefaultNICTimeout = 20 * time.Second

func (i *qemuInstance) PID() int          { return i.p.Pid() }
func (i *qemuInstance) Serial() io.Reader { return i.p.Serial }
func (i *qemuInstance) Wait() error {
	err := i.p.Wait()
	i.p.Serial.Close()
	return err
}

func (i *qemuInstance) Hotplug(n daemon.NIC) error {
	ctx, cancel := context.WithTimeout(context.Background(), i.nicTimeout)
	defer cancel()
	return i.p.QMP.HotplugNIC(ctx, n.Tap, n.ID, n.MAC)
}

func (i *qemuInstance) Unplug(id string) error {
	ctx, cancel := context.WithTimeout(context.Background(), i.nicTimeout)
	defer cancel()
	return i.p.QMP.UnplugNIC(ctx, id)
}

func (i *qemuInstance) Shutdown(timeout time.Duration) error {
	if !i.p.Stop(timeout) {
		i.log.Warn("guest did not power down in time; killed", "timeout", timeout)
	}
	return nil
}

// lineLogger logs what QEMU writes to its stderr, a line at a time.
type lineLogger struct {
	log *slog.Logger
	buf []byte
}

func (l *lineLogger) Write(b []byte) (int, error) {
	l.buf = append(l.buf, b...)
	for {
		i := bytes.IndexByte(l.buf, '\n')
		if i < 0 {
			if len(l.buf) > 4096 {
				l.log.Warn("qemu: " + vmlog.Sanitize(string(l.buf)))
				l.buf = l.buf[:0]
			}
			return len(b), nil
		}
		l.log.Warn("qemu: " + vmlog.Sanitize(string(l.buf[:i])))
		l.buf = l.buf[i+1:]
	}
}
