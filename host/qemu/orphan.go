package qemu

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// The pid file (Config.PIDFile) is one line, "PID STARTTIME\n": QEMU's pid
// and its start time in clock ticks after boot (/proc/PID/stat's 22nd
// field). The pair names one process for the whole life of the system: a
// pid that has been reused since has another start time, so KillOrphan
// never kills a stranger. spectrumd writes the file (QEMU has no descriptor
// of it, and could not change it) and removes it when QEMU exits.

// writePIDFile records pid and its start time in path, atomically (a
// temporary file renamed over it). path "" records nothing.
func writePIDFile(path string, pid int) error {
	if path == "" {
		return nil
	}
	start, err := startTime(pid)
	if err != nil {
		return fmt.Errorf("pid file %s: %w", path, err)
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, fmt.Appendf(nil, "%d %d\n", pid, start), 0o600); err != nil {
		return fmt.Errorf("pid file: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("pid file: %w", err)
	}
	return nil
}

// startTime returns when process pid started, in clock ticks after boot,
// or an error if there is no such process (or only a zombie).
func startTime(pid int) (uint64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	// The command name (field 2) may hold anything but ends at the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: no command name", pid)
	}
	f := strings.Fields(string(b[i+1:])) // f[0] is field 3, the state
	if len(f) < 20 {
		return 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f)+2)
	}
	if f[0] == "Z" || f[0] == "X" {
		return 0, fmt.Errorf("process %d: %w", pid, os.ErrProcessDone)
	}
	return strconv.ParseUint(f[19], 10, 64)
}

// KillOrphan kills the QEMU that pidFile (Config.PIDFile) records, if that
// very process still runs: one left running by a spectrumd that died
// without stopping it (its parent-death signal normally takes it along, but
// not if spectrumd's forking thread lived on, or in a container where it
// was not delivered). It waits up to timeout for the process to be gone and
// removes the file. It returns the pid it killed, or 0 when nothing of it
// ran (a stale file, removed too, or none at all).
func KillOrphan(pidFile string, timeout time.Duration) (int, error) {
	b, err := os.ReadFile(pidFile)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("orphaned QEMU: %w", err)
	}
	var pid int
	var start uint64
	if _, err := fmt.Sscanf(string(b), "%d %d\n", &pid, &start); err != nil || pid <= 0 {
		// Not ours, or half written by a spectrumd that died (the rename
		// makes that unlikely): nothing it names can be trusted.
		return 0, errors.Join(fmt.Errorf("orphaned QEMU: %s: not a pid file of spectrumd (%q); removed", pidFile, b), remove(pidFile))
	}
	if now, err := startTime(pid); err != nil || now != start {
		return 0, remove(pidFile) // gone, or the pid belongs to another process now
	}
	if err := unix.Kill(pid, syscall.SIGKILL); err != nil && !errors.Is(err, unix.ESRCH) {
		return pid, fmt.Errorf("orphaned QEMU %d (%s): kill: %w", pid, pidFile, err)
	}
	deadline := time.Now().Add(timeout)
	for !processGone(pid, start) {
		if time.Now().After(deadline) {
			return pid, fmt.Errorf("orphaned QEMU %d (%s): still there %v after SIGKILL", pid, pidFile, timeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return pid, remove(pidFile)
}

func remove(p string) error {
	if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("orphaned QEMU: %w", err)
	}
	os.Remove(p + ".tmp") // left by a spectrumd that died between write and rename
	return nil
}

// processGone tells whether the process pid that started at start has
// exited: no such process, a zombie (an orphan is reaped by init, not by
// us), or a new process under the same pid.
func processGone(pid int, start uint64) bool {
	now, err := startTime(pid)
	return err != nil || now != start
}
