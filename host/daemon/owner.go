package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync/atomic"
	"time"

	"spectrum-os.org/netcfg/host/alloc"
	"spectrum-os.org/netcfg/host/config"
	"spectrum-os.org/netcfg/host/vmlog"
	"spectrum-os.org/netcfg/internal/mac"
)

// The states a VM is in, as list and status show them.
const (
	stateStopped  = "stopped"
	stateStarting = "starting" // its links are being made and its process launched
	stateRunning  = "running"
	stateBackoff  = "backoff"  // it exited or failed to relaunch; it restarts after a delay
	stateStopping = "stopping" // it is being powered down
	// stateFailed: its first launch failed, or it became invalid before a
	// relaunch. Nothing is retried until the next start; status says why.
	stateFailed = "failed"
)

// ctlOp is what a user asks of a VM's owner.
type ctlOp int

const (
	opStart ctlOp = iota
	opStop
)

type ctlReq struct {
	op    ctlOp
	reply chan<- error
}

// nicReq asks a provider's owner to plug the provider side of one of its
// clients' links into the running VM, or to unplug it.
type nicReq struct {
	plug   bool
	id     mac.LinkID
	client string
	reply  chan<- error
}

// exit reports that an instance's process has exited and its serial
// console has been read to its end.
type exit struct {
	inst Instance
	err  error
}

// owner is the one goroutine that drives a VM's lifecycle. It takes user
// requests (start, stop) on ctl and its clients' NIC requests on nic, and
// learns of its process's exit on exited. It runs every slow call on its
// own VM itself (launch, hot-plug, unplug, shutdown), each bounded by a
// deadline, and while it waits for a provider's answer it keeps answering
// its own clients: those waits are the only ones between owners, and an
// owner that waits has no running instance, so it answers at once and no
// two owners can wait on each other for good.
//
// It ends when its VM is stopped or failed and no request is on its way;
// the VM's next start makes a new one.
type owner struct {
	d    *Daemon
	e    *vmEntry // its table entry: the owner writes its snapshot under d.mu
	name string
	log  *slog.Logger

	// inflight counts requests sent, or about to be sent, and not yet
	// received: senders count themselves in under d.mu, where the owner
	// checks that it is zero before it ends, so no request is left unread.
	inflight atomic.Int32
	ctl      chan ctlReq
	nic      chan nicReq
	exited   chan exit // one instance at a time: buffered, the watcher never blocks

	// Owned by the goroutine alone.
	want    bool       // supervise: restart after a crash
	vm      *config.VM // the configuration of the running or next instance
	inst    Instance
	started time.Time                 // when inst was launched
	plugged map[mac.LinkID]string     // provider side: the NIC id of each client's link in inst
	stuck   map[string]bool           // NIC ids inst still holds after an unplug the guest ignored
	mine    map[alloc.Pair]mac.LinkID // client side: the links this VM made to its providers
	ups     map[string]config.Uplink  // its uplink taps, by MAC
	series  int                       // restarts in the current crash series
	retry   *time.Timer               // the backoff before the next relaunch
}

func newOwner(d *Daemon, e *vmEntry) *owner {
	return &owner{d: d, e: e, name: e.name, log: d.log.With("vm", e.name),
		ctl: make(chan ctlReq), nic: make(chan nicReq), exited: make(chan exit, 1),
		mine: map[alloc.Pair]mac.LinkID{}, ups: map[string]config.Uplink{}}
}

func (o *owner) run() {
	for {
		var retry <-chan time.Time
		if o.retry != nil {
			retry = o.retry.C
		}
		// A request's answer goes out after the owner has decided whether
		// it ends, so whoever sees a stop return sees the VM's entry as
		// it now is (gone, if the VM left the configuration).
		var reply chan<- error
		var err error
		select {
		case r := <-o.ctl:
			o.inflight.Add(-1)
			reply = r.reply
			switch r.op {
			case opStart:
				err = o.start()
			case opStop:
				err = o.stop()
			}
		case r := <-o.nic:
			o.inflight.Add(-1)
			reply, err = r.reply, o.plug(r)
		case x := <-o.exited:
			o.exitedByItself(x)
		case <-retry:
			o.retry = nil
			o.relaunch()
		}
		done := o.retire()
		if reply != nil {
			reply <- err
		}
		if done {
			return
		}
	}
}

// retire ends the owner if it has nothing left to do and no request is on
// its way to it.
func (o *owner) retire() bool {
	if o.want || o.inst != nil || o.retry != nil || len(o.mine) > 0 || len(o.ups) > 0 {
		return false
	}
	d := o.d
	d.mu.Lock()
	defer d.mu.Unlock()
	if o.inflight.Load() != 0 {
		return false
	}
	o.e.owner = nil
	if !d.configuredLocked(o.name) {
		d.dropLocked(o.e)
	}
	return true
}

func (o *owner) publish(f func(*snapshot)) {
	o.d.mu.Lock()
	f(&o.e.snap)
	o.d.mu.Unlock()
}

// start launches the VM after making its links. It returns the first
// failure, after undoing what it made: a VM whose first launch fails is
// not retried behind the user's back.
func (o *owner) start() error {
	if o.want {
		return nil // running, or waiting to restart
	}
	if o.inst != nil {
		return fmt.Errorf("%s is still stopping: its process %d has not exited", o.name, o.inst.PID())
	}
	o.d.mu.Lock()
	closing := o.d.closing
	o.d.mu.Unlock()
	if closing {
		return errClosing
	}
	vm, err := o.d.vmConfig(o.name)
	if err != nil {
		return err
	}
	o.vm, o.want, o.series = vm, true, 0
	o.publish(func(s *snapshot) { s.state, s.err, s.vm = stateStarting, "", vm })
	err = o.prepare()
	if err == nil {
		err = o.launch()
	}
	if err != nil {
		err = fmt.Errorf("start %s: %w", o.name, err)
		o.want = false
		o.unwireAll()
		o.deleteUplinks()
		o.publish(func(s *snapshot) { s.state, s.err, s.vm = stateFailed, err.Error(), nil })
		o.log.Error("VM failed to start; it is not retried until the next start", "err", err)
		o.releaseLog()
		return err
	}
	return nil
}

// stop powers the VM down and removes its links. If its process does not
// exit in time, stop returns an error and the exit, when it comes,
// finishes the stop.
func (o *owner) stop() error {
	if !o.want && o.inst == nil {
		return nil // stopped or failed
	}
	o.want = false
	if o.retry != nil {
		o.retry.Stop()
		o.retry = nil
	}
	if o.inst != nil {
		o.publish(func(s *snapshot) { s.state = stateStopping })
		if err := o.shutdown(); err != nil {
			return err
		}
	}
	o.finishStop()
	return nil
}

// callGrace is how long after its deadline a call on an instance may take
// to return (a kill and its reaping) before the daemon stops waiting for it.
const callGrace = 5 * time.Second

// bounded runs f, which should give up when ctx is done, and returns its
// error; if f has not returned callGrace after that, bounded stops waiting
// (f's result is dropped) and says so.
func bounded(ctx context.Context, f func() error) error {
	done := make(chan error, 1)
	go func() { done <- f() }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
	}
	t := time.NewTimer(callGrace)
	defer t.Stop()
	select {
	case err := <-done:
		return err
	case <-t.C:
		return fmt.Errorf("no answer %v after %w", callGrace, ctx.Err())
	}
}

// shutdown powers the running instance down and waits for the watcher to
// report its exit (its serial console read to the end).
func (o *owner) shutdown() error {
	inst := o.inst
	ctx, cancel := context.WithTimeout(context.Background(), o.d.opt.StopTimeout)
	defer cancel()
	serr := bounded(ctx, func() error { return inst.Shutdown(ctx) })
	t := time.NewTimer(o.d.opt.DrainTimeout + callGrace)
	defer t.Stop()
	select {
	case x := <-o.exited:
		if serr != nil {
			o.log.Warn("shutting the VM down", "err", serr)
		}
		o.reap(x)
		return nil
	case <-t.C:
		err := fmt.Errorf("process %d has not exited: %v", inst.PID(), serr)
		o.log.Error("VM did not stop; its stop completes when it exits", "err", err)
		return err
	}
}

// reap forgets an instance that has exited.
func (o *owner) reap(x exit) {
	o.inst, o.plugged, o.stuck = nil, nil, nil
	o.publish(func(s *snapshot) { s.pid, s.lastExit, s.output = 0, exitString(x.err), nil })
}

func (o *owner) finishStop() {
	o.unwireAll()
	o.deleteUplinks()
	o.publish(func(s *snapshot) { s.state, s.vm = stateStopped, nil })
	o.d.mu.Lock()
	lastExit := o.e.snap.lastExit
	o.d.mu.Unlock()
	o.log.Info("VM stopped", "exit", lastExit)
	// The VMM removed its sockets; the per-VM directory goes too.
	os.Remove(filepath.Join(o.d.opt.Run, "vms", o.name))
	o.releaseLog()
}

// releaseLog closes the VM's log file while nothing runs (its followers
// stay; the next line opens it again).
func (o *owner) releaseLog() {
	if err := o.e.log.Release(); err != nil {
		o.log.Warn("closing VM log file", "err", err)
	}
}

// exitedByItself handles an exit nobody asked for: a crash, a guest that
// powered off, or the end of a stop that had given up waiting.
func (o *owner) exitedByItself(x exit) {
	o.reap(x)
	if !o.want {
		o.finishStop()
		return
	}
	if time.Since(o.started) >= o.d.opt.StableAfter {
		o.series = 0
	}
	o.series++
	delay := o.d.opt.Backoff(o.series)
	o.log.Error("VM exited unexpectedly; restarting", "exit", exitString(x.err), "in", delay, "restarts_in_a_row", o.series)
	o.backoff(delay)
}

func (o *owner) backoff(delay time.Duration) {
	if o.series >= 5 {
		o.log.Error("VM is crash-looping", "restarts_in_a_row", o.series)
	}
	o.publish(func(s *snapshot) { s.state = stateBackoff; s.restarts++ })
	o.retry = time.NewTimer(delay)
}

// relaunch starts the VM again after a crash. Its directory is validated
// again first: a VM that has become invalid is not relaunched.
func (o *owner) relaunch() {
	if err := o.d.reloadConfig(); err != nil {
		o.series++
		delay := o.d.opt.Backoff(o.series)
		o.log.Error("VM not relaunched: the configuration cannot be read; retrying", "err", err, "in", delay)
		o.publish(func(s *snapshot) { s.err = err.Error() })
		o.backoff(delay)
		return
	}
	vm, err := o.d.vmConfig(o.name)
	if err != nil {
		o.want = false
		o.unwireAll()
		o.deleteUplinks()
		err = fmt.Errorf("not relaunched: %w", err)
		o.publish(func(s *snapshot) { s.state, s.err, s.vm = stateFailed, err.Error(), nil })
		o.log.Error("VM is no longer valid; not relaunched", "err", err)
		o.releaseLog()
		return
	}
	o.vm = vm
	o.publish(func(s *snapshot) { s.vm = vm })
	if err = o.prepare(); err == nil {
		err = o.launch()
	}
	if err != nil {
		o.series++
		delay := o.d.opt.Backoff(o.series)
		o.log.Error("VM failed to launch; retrying", "err", err, "in", delay, "attempt", o.series)
		o.publish(func(s *snapshot) { s.err = err.Error() })
		o.backoff(delay)
	}
}

// prepare makes what the VM needs on the host before it launches: its
// uplink taps, then its links.
func (o *owner) prepare() error {
	if err := o.syncUplinks(); err != nil {
		return err
	}
	return o.wire()
}

// launch starts the VM's process with its NICs: its client side of each of
// its links and its provider side of each link whose client wants it (by
// link id), then its uplinks (in its configuration's order).
func (o *owner) launch() error {
	d := o.d
	dir := filepath.Join(d.opt.Run, "vms", o.name)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	spec := Spec{VM: o.vm, ConsolePath: d.consolePath(o.name), QMPPath: filepath.Join(dir, "qmp.sock"),
		PIDPath: filepath.Join(dir, PIDFile)}
	type end struct {
		pair alloc.Pair
		id   mac.LinkID
		side mac.Side
	}
	var ends []end
	for p, id := range o.mine {
		ends = append(ends, end{p, id, mac.Client})
	}
	// Read with the same lock a client holds when it marks its link live
	// (or not) and looks for this owner: each link is either in this
	// launch, or its client's request to plug or unplug it reaches this
	// owner after the launch.
	d.mu.Lock()
	for p, l := range d.links {
		if p.Provider == o.name && l.live {
			ends = append(ends, end{p, l.id, mac.Provider})
		}
	}
	d.mu.Unlock()
	slices.SortFunc(ends, func(a, b end) int { return int(a.id) - int(b.id) })
	defer func() { closeNICs(spec.NICs) }()
	plugged := map[mac.LinkID]string{}
	for _, n := range ends {
		tap, err := d.opt.Net.OpenTap(n.id, n.side)
		if err != nil {
			if n.side == mac.Provider && !d.isLive(n.pair) {
				continue // its client removed it meanwhile
			}
			return fmt.Errorf("open %s tap of link %s: %w", n.side, n.id, err)
		}
		spec.NICs = append(spec.NICs, NIC{ID: NICID(n.id), MAC: n.id.MAC(n.side), Tap: tap})
		if n.side == mac.Provider {
			plugged[n.id] = NICID(n.id)
		}
	}
	// Their taps were made at start and stay across restarts; making
	// them again puts back what drifted (a bridge deleted and made again
	// lost its ports), and fails while the bridge is missing, so the VM
	// waits in backoff instead of running cut off.
	for i, u := range o.vm.Uplinks {
		err := d.opt.Net.CreateUplink(u.Iface, u.MAC)
		var tap *os.File
		if err == nil {
			tap, err = d.opt.Net.OpenUplink(u.MAC)
		}
		if err != nil {
			return err
		}
		spec.NICs = append(spec.NICs, NIC{ID: UplinkNICID(i), MAC: u.MAC, Tap: tap})
	}
	for _, u := range o.vm.PCI {
		dev, err := o.claimPCI(u)
		if err != nil {
			return err
		}
		spec.PCI = append(spec.PCI, dev)
	}
	ctx, cancel := context.WithTimeout(context.Background(), d.opt.LaunchTimeout)
	defer cancel()
	inst, err := d.opt.VMM.Launch(ctx, spec)
	if err != nil {
		return fmt.Errorf("launch %s: %w", o.name, err)
	}
	o.inst, o.plugged, o.stuck, o.started = inst, plugged, map[string]bool{}, time.Now()
	macs := make([]string, len(spec.NICs))
	for i, n := range spec.NICs {
		macs[i] = n.MAC.String()
	}
	var pcis []string
	for _, p := range spec.PCI {
		pcis = append(pcis, p.Addr)
	}
	o.log.Info("VM launched", "pid", inst.PID(), "nics", macs, "pci", pcis)
	// The marker first: whoever sees the new pid in status finds it.
	if err := o.e.log.WriteLine(vmlog.BootMarker(inst.PID(), o.started)); err != nil {
		o.log.Warn("writing VM log file", "err", err)
	}
	output := new(atomic.Bool)
	o.publish(func(s *snapshot) {
		s.state, s.pid, s.since, s.output, s.err = stateRunning, inst.PID(), o.started, output, ""
	})
	go o.watch(inst, output)
	return nil
}

func closeNICs(nics []NIC) {
	for _, n := range nics {
		n.Tap.Close()
	}
}

// watch pumps the instance's serial console into the logs until it ends,
// and reports the exit once the process has exited and its console has
// been read to EOF (or DrainTimeout after the exit): a crashing guest's
// last lines are in the logs before anything says it exited.
func (o *owner) watch(inst Instance, output *atomic.Bool) {
	serial := inst.Serial()
	pumped := make(chan struct{})
	go func() {
		vmlog.Pump(&activityReader{r: serial, seen: output}, o.name, o.d.log, o.e.log)
		close(pumped)
	}()
	var silent *time.Timer
	if after := o.d.opt.SilentAfter; after > 0 {
		silent = time.AfterFunc(after, func() {
			if !output.Load() {
				o.log.Warn("VM has written nothing to its serial console since it was launched; its guest may not boot",
					"pid", inst.PID(), "for", after)
			}
		})
	}
	err := inst.Wait()
	if silent != nil {
		silent.Stop()
	}
	t := time.NewTimer(o.d.opt.DrainTimeout)
	select {
	case <-pumped:
	case <-t.C:
		o.log.Warn("VM's serial console did not end after its process exited; closing it", "after", o.d.opt.DrainTimeout)
	}
	t.Stop()
	serial.Close()
	<-pumped
	o.exited <- exit{inst: inst, err: err}
}

func exitString(err error) string {
	if err == nil {
		return "exit status 0"
	}
	return err.Error()
}

// activityReader notes that a VM's serial console has produced output.
type activityReader struct {
	r    interface{ Read([]byte) (int, error) }
	seen *atomic.Bool
}

func (a *activityReader) Read(p []byte) (int, error) {
	n, err := a.r.Read(p)
	if n > 0 && !a.seen.Load() {
		a.seen.Store(true)
	}
	return n, err
}
