package qemu

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// KillOrphan kills the QEMU that still holds pidFile's lock (Config.PIDFile):
// one left running by a spectrumd that died without stopping it (a QEMU under
// RunAs does not get the parent-death signal). The lock's holder, not the
// file's contents, names the process, so a recycled pid is never killed. It
// waits up to timeout for the process to be gone and removes the file. It
// returns the pid it killed, or 0 when no process held the lock (a stale
// file, removed too, or none at all).
func KillOrphan(pidFile string, timeout time.Duration) (int, error) {
	f, err := os.Open(pidFile)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("orphaned QEMU: %w", err)
	}
	lk := unix.Flock_t{Type: unix.F_WRLCK, Whence: 0}
	err = unix.FcntlFlock(f.Fd(), unix.F_GETLK, &lk)
	f.Close()
	if err != nil {
		return 0, fmt.Errorf("orphaned QEMU: lock of %s: %w", pidFile, err)
	}
	pid := 0
	if lk.Type != unix.F_UNLCK && lk.Pid > 0 {
		pid = int(lk.Pid)
		if err := unix.Kill(pid, syscall.SIGKILL); err != nil && !errors.Is(err, unix.ESRCH) {
			return pid, fmt.Errorf("orphaned QEMU %d (%s): kill: %w", pid, pidFile, err)
		}
		deadline := time.Now().Add(timeout)
		for !processGone(pid) {
			if time.Now().After(deadline) {
				return pid, fmt.Errorf("orphaned QEMU %d (%s): still there %v after SIGKILL", pid, pidFile, timeout)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	if err := os.Remove(pidFile); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return pid, fmt.Errorf("orphaned QEMU: %w", err)
	}
	return pid, nil
}

// processGone tells whether pid has exited: no such process, or a zombie
// (an orphan is reaped by init, not by us).
func processGone(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	for i := len(b) - 1; i > 0; i-- {
		if b[i] == ')' {
			return i+2 < len(b) && (b[i+2] == 'Z' || b[i+2] == 'X')
		}
	}
	return false
}
