package qemu

import (
	"fmt"
	"os/exec"
	"sync"

	"golang.org/x/sys/unix"
)

// forkMu serialises QEMU's forks: a QEMU with a VFIO device inherits a
// RLIMIT_MEMLOCK that spectrumd sets on itself for the instant of its fork
// (a Go program has no hook between fork and exec, and prlimit on the
// child after exec would race with QEMU's pinning at device realize), and
// no other QEMU may be forked in that instant. Rlimits are the process's,
// so this lock is too.
var forkMu sync.Mutex

// startWithMemlock starts cmd; with memlock > 0, cmd's process starts with
// RLIMIT_MEMLOCK memlock (soft; its hard limit is memlock too, or
// spectrumd's own if that is higher, as every QEMU has), and spectrumd's
// own limit is put back after the fork. Raising the hard limit needs
// CAP_SYS_RESOURCE; putting it back down needs nothing, so it cannot fail.
func startWithMemlock(cmd *exec.Cmd, memlock uint64) error {
	forkMu.Lock()
	defer forkMu.Unlock()
	if memlock == 0 {
		return cmd.Start()
	}
	var old unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_MEMLOCK, &old); err != nil {
		return fmt.Errorf("RLIMIT_MEMLOCK: %w", err)
	}
	if err := unix.Setrlimit(unix.RLIMIT_MEMLOCK, &unix.Rlimit{Cur: memlock, Max: max(memlock, old.Max)}); err != nil {
		return fmt.Errorf("raise RLIMIT_MEMLOCK to %d bytes for QEMU's VFIO devices: %w (spectrumd needs CAP_SYS_RESOURCE)", memlock, err)
	}
	err := cmd.Start()
	unix.Setrlimit(unix.RLIMIT_MEMLOCK, &old) // a lower hard limit and the soft one under it: always allowed
	return err
}
