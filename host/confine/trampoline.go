package confine

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"time"

	"golang.org/x/sys/unix"

	"spectrum-os.org/netcfg/internal/printable"
)

// Arg0 is the argv[0] that makes a binary linking this package a
// trampoline: Arg0, the status pipe's descriptor, the program's path, then
// the program's own argv (its argv[0] first).
const Arg0 = "spectrumd-confine"

// Self is how a trampoline runs the binary it is in.
const Self = "/proc/self/exe"

// init runs the trampoline before anything of main, when this process is
// one; otherwise it returns at once.
func init() {
	if len(os.Args) < 4 || os.Args[0] != Arg0 {
		return
	}
	os.Exit(trampoline(os.Args[1], os.Args[2], os.Args[3:]))
}

// trampoline installs the filter and execs path with argv, the environment
// and every descriptor it inherited but the status pipe. It returns only
// on failure, after writing why to the status pipe (and stderr).
func trampoline(statusFD, path string, argv []string) int {
	runtime.LockOSThread() // the filter and the exec on one thread (TSYNC covers the others)
	fd, err := strconv.Atoi(statusFD)
	if err != nil || fd < 3 {
		fmt.Fprintf(os.Stderr, "%s: status descriptor %q: not a descriptor above 2\n", Arg0, statusFD)
		return 126
	}
	unix.CloseOnExec(fd) // the program never sees it; its closing says the exec worked
	fail := func(err error) int {
		unix.Write(fd, []byte(err.Error()))
		fmt.Fprintf(os.Stderr, "%s: %v\n", Arg0, err)
		return 126
	}
	if err := Install(); err != nil {
		return fail(err)
	}
	err = unix.Exec(path, argv, os.Environ())
	return fail(fmt.Errorf("exec %s: %w", path, err))
}

// Launch is a command that Wrap made confined.
type Launch struct {
	r, w *os.File
}

// maxStatus bounds what the trampoline's status pipe is read for.
const maxStatus = 4096

// Wrap makes cmd, not yet started, run confined: cmd runs this binary
// (Self) as a trampoline with cmd's credentials, namespaces and files,
// which installs the filter and then execs cmd's program with cmd's argv.
// It adds the status pipe to cmd.ExtraFiles, after those cmd has: set
// ExtraFiles first, and add none after. Once cmd.Start returns, call
// Started (or Close if it failed).
func Wrap(cmd *exec.Cmd) (*Launch, error) {
	if cmd.Err != nil { // exec.Command's: the program was not found
		return nil, cmd.Err
	}
	r, w, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("confine %s: status pipe: %w", cmd.Path, err)
	}
	fd := 3 + len(cmd.ExtraFiles)
	cmd.ExtraFiles = append(cmd.ExtraFiles, w)
	cmd.Args = append([]string{Arg0, strconv.Itoa(fd), cmd.Path}, cmd.Args...)
	cmd.Path = Self
	return &Launch{r: r, w: w}, nil
}

// Started returns nil once the trampoline has exec'd the program, confined
// (the status pipe closed on exec with nothing written), or the error the
// trampoline reported: then the program never ran, and the trampoline
// exits. It waits until deadline at most (none if zero).
func (l *Launch) Started(deadline time.Time) error {
	l.w.Close() // ours: EOF comes once the trampoline's copy is gone
	defer l.r.Close()
	if !deadline.IsZero() {
		l.r.SetReadDeadline(deadline)
	}
	b, err := io.ReadAll(io.LimitReader(l.r, maxStatus))
	switch {
	case errors.Is(err, os.ErrDeadlineExceeded):
		return errors.New("confine: the trampoline neither ran the program nor failed in time")
	case err != nil:
		return fmt.Errorf("confine: status pipe: %w", err)
	case len(b) > 0:
		return fmt.Errorf("confine: %s", printable.String(string(b)))
	}
	return nil
}

// Close releases the status pipe of a command that did not start.
func (l *Launch) Close() {
	l.w.Close()
	l.r.Close()
}
