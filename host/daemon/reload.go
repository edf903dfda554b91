package daemon

import (
	"errors"

	"spectrum-os.org/netcfg/host/alloc"
	"spectrum-os.org/netcfg/host/config"
	"spectrum-os.org/netcfg/internal/mac"
)

// reloadConfig reads the configuration again and publishes it. Loads run
// one at a time, outside the daemon's lock (a load validates directories
// and may write and fsync the link id state); a caller that arrives while
// one runs waits for the next, which starts after its call and so sees
// every change made before it. Callers that wait together share one load.
func (d *Daemon) reloadConfig() error {
	ch := make(chan error, 1)
	d.mu.Lock()
	d.reload = append(d.reload, ch)
	if !d.reloadOn {
		d.reloadOn = true
		go d.reloadLoop()
	}
	d.mu.Unlock()
	return <-ch
}

func (d *Daemon) reloadLoop() {
	for {
		d.mu.Lock()
		batch := d.reload
		d.reload = nil
		if len(batch) == 0 {
			d.reloadOn = false
			d.mu.Unlock()
			return
		}
		d.mu.Unlock()
		err := d.loadOnce()
		for _, ch := range batch {
			ch <- err
		}
	}
}

// maxLoadTries bounds how often one reload loads again because links were
// made while it loaded.
const maxLoadTries = 4

// loadOnce loads the configuration with the links that exist held, and
// publishes it. A link reserved while the load ran was not held: if the
// load does not give its pair the same id (the pair left the configuration
// and its id may have gone to another), it loads again with it held.
func (d *Daemon) loadOnce() error {
	for try := 1; ; try++ {
		d.mu.Lock()
		held := make([]alloc.Link, 0, len(d.links))
		for p, l := range d.links {
			held = append(held, alloc.Link{Pair: p, ID: l.id})
		}
		gen := d.linkGen
		d.mu.Unlock()

		cfg, links, err := d.opt.Links.Load(held)
		if err != nil {
			return err
		}
		ids := make(map[alloc.Pair]mac.LinkID, len(links))
		for _, l := range links {
			ids[l.Pair] = l.ID
		}

		d.mu.Lock()
		if d.linkGen != gen && !d.agreesLocked(ids) {
			d.mu.Unlock()
			if try == maxLoadTries {
				return errors.New("reload: links kept being made while the configuration loaded; try again")
			}
			continue
		}
		d.cfg, d.ids = cfg, ids
		d.dropGoneLocked()
		d.mu.Unlock()
		for _, e := range cfg.Errors {
			d.log.Error("invalid VM", "err", e)
		}
		d.logWarnings(cfg)
		return nil
	}
}

// agreesLocked tells whether ids give every link that exists its id.
func (d *Daemon) agreesLocked(ids map[alloc.Pair]mac.LinkID) bool {
	for p, l := range d.links {
		if ids[p] != l.id {
			return false
		}
	}
	return true
}

// dropGoneLocked removes from the VM table the VMs that left the
// configuration and have nothing running: their log files are closed.
func (d *Daemon) dropGoneLocked() {
	for name, e := range d.vms {
		if e.owner == nil && !d.configuredLocked(name) {
			d.dropLocked(e)
		}
	}
}

func (d *Daemon) dropLocked(e *vmEntry) {
	delete(d.vms, e.name)
	if err := e.log.Close(); err != nil {
		d.log.Warn("closing VM log file", "vm", e.name, "err", err)
	}
}

// vmConfig returns name's configuration as last loaded, or why it has none.
func (d *Daemon) vmConfig(name string) (*config.VM, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if vm := d.cfg.VMs[name]; vm != nil {
		return vm, nil
	}
	return nil, d.whyNotLocked(name)
}

// logWarnings logs each warning of cfg (an entry of a VM's directory that
// is not used) that the last load did not: once, not at every reload.
func (d *Daemon) logWarnings(cfg *config.Config) {
	warned := map[config.Warning]bool{}
	log := func(vm string, ws []config.Warning) {
		for _, w := range ws {
			warned[w] = true
			if !d.warned[w] {
				d.log.Warn("VM directory entry not used", "vm", vm, "path", w.Path, "warning", w.Msg)
			}
		}
	}
	for _, name := range cfg.Order {
		log(name, cfg.VMs[name].Warnings)
	}
	for _, e := range cfg.Errors {
		var ve *config.VMError
		if errors.As(e, &ve) {
			log(ve.VM, ve.Warnings)
		}
	}
	d.warned = warned
}
