package vmm

import (
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"spectrum-os.org/netcfg/host/daemon"
	"spectrum-os.org/netcfg/host/qemu"
)

// KillOrphans kills every QEMU still running from a pid file under run
// (RUN/vms/NAME/qemu.pid): one left by a spectrumd that died without
// stopping it. Then, if none is left running, it removes what the VMs of
// that spectrumd left under RUN/vms (sockets of QEMUs killed with it).
// Call it when spectrumd starts, before anything runs and before stray
// links are removed. Failures are logged: a QEMU that could not be killed
// keeps its pid file, so the next start tries again.
func KillOrphans(run string, log *slog.Logger) {
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
