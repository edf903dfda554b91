package qemu

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"spectrum-os.org/netcfg/host/confine"
	"spectrum-os.org/netcfg/host/qmp"
)

// Process is a running QEMU started by Start.
type Process struct {
	// Argv is the command that was run, binary first; log Quote(Argv).
	Argv []string
	// FDs says what each descriptor QEMU inherited is, from 3 on
	// ("6=/data/app/vmlinux"), to log beside Argv: the command line names
	// files by descriptor only.
	FDs []string
	// Serial is the read end of the guest's serial port (ttyS0): every
	// byte the guest writes, and EOF once QEMU has exited. The caller must
	// keep reading it: when the pipe is full the guest's writes to its
	// serial port block. The caller closes it.
	Serial *os.File

	cmd   *exec.Cmd
	mon   *session // QMP: see QMP
	slots *slots   // NIC slots taken on each bridge
	lost  lostNICs // NICs whose hot-plug or unplug lost its session
	accel string
	done  chan struct{}
	err   error
}

// confineTimeout bounds how long Start waits for the trampoline to exec
// QEMU when ctx has no deadline.
const confineTimeout = 30 * time.Second

// serialPipeSize is how much serial output the pipe buffers before the
// guest blocks (the kernel caps it at fs.pipe-max-size for non-root).
const serialPipeSize = 1 << 20

// Start launches QEMU for c. It binds c.QMPSocket and c.ConsoleSocket
// (replacing stale sockets, mode 0600), creates the serial pipe, runs QEMU
// with the sockets, the pipe and every NIC's tap as inherited fds (see
// Config.Args), connects to QMP, and resumes the guest, which QEMU starts
// paused (cont). ctx bounds start-up only (until cont is answered), not
// QEMU's life; if the handshake or cont fails, QEMU is killed and gone
// (its sockets and pid file removed) when Start returns. QEMU's own
// messages go to stderr (nil: os.Stderr), and what QMP drops from it to
// c.Log. The caller may close its copies of the files in c (kernel,
// initramfs, images, taps) once Start returns: QEMU has its own.
//
// QEMU runs from its first instruction as c.UID and c.GID with c.Groups
// and no capabilities, in a network namespace of its own that holds nothing
// (CLONE_NEWNET), under spectrumd's system-call filter with no_new_privs
// (host/confine: a trampoline, spectrumd itself, installs it and execs
// QEMU; if it cannot, QEMU does not run and Start's error names the VM),
// with no descriptor but those Args names and its standard streams: Start marks every other descriptor of spectrumd close-on-exec
// first, including any it inherited from its own parent without that flag.
// A kernel or initramfs that QEMU's uid may not read is handed over as a
// sealed in-memory copy (see kernelFile). c.PIDFile, if set, is written by
// Start, never opened by QEMU.
//
// QEMU is killed if spectrumd dies (PR_SET_PDEATHSIG, set after the uid
// switch, so no credential change clears it). The kernel checks that
// signal as it checks kill(2), against spectrumd's credentials: without
// CAP_KILL it is not delivered to a QEMU under another uid, and only the pid
// file (KillOrphan) finds that QEMU again. Because Linux ties the signal to
// the thread that forked, QEMU is started and waited for on a goroutine
// locked to its own OS thread for QEMU's lifetime.
func Start(ctx context.Context, c Config, stderr io.Writer) (*Process, error) {
	args, err := c.Args()
	if err != nil {
		return nil, err
	}
	bin := c.Binary
	if bin == "" {
		bin = DefaultBinary
	}
	if c.QMPSocket == "" || c.ConsoleSocket == "" {
		return nil, fmt.Errorf("qemu %s: QMPSocket and ConsoleSocket are required", c.Name)
	}
	if stderr == nil {
		stderr = os.Stderr
	}

	var files []*os.File // the parent's copies, closed once QEMU has them
	defer func() {
		for _, f := range files {
			f.Close()
		}
	}()
	qmpL, err := listen(c.QMPSocket)
	if err != nil {
		return nil, err
	}
	files = append(files, qmpL)
	conL, err := listen(c.ConsoleSocket)
	if err != nil {
		os.Remove(c.QMPSocket)
		return nil, err
	}
	files = append(files, conL)
	serialR, serialW, err := os.Pipe()
	if err != nil {
		removeSockets(c)
		return nil, err
	}
	files = append(files, serialW)
	// Best effort: a larger buffer only delays when a stalled reader
	// blocks the guest.
	unix.FcntlInt(serialR.Fd(), unix.F_SETPIPE_SZ, serialPipeSize)

	for _, kf := range []**os.File{&c.Kernel, &c.Initramfs} {
		if *kf == nil {
			continue
		}
		f, err := kernelFile(*kf, c.UID, append([]uint32{c.GID}, c.Groups...))
		if err != nil {
			serialR.Close()
			removeSockets(c)
			return nil, fmt.Errorf("qemu %s: %w", c.Name, err)
		}
		if f != *kf {
			files = append(files, f) // the copy is ours to close
			*kf = f
		}
	}
	extra := c.files(qmpL, conL, serialW)

	cmd := exec.Command(bin, args...)
	cmd.ExtraFiles = extra
	cmd.Stdout, cmd.Stderr = stderr, stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Pdeathsig:  syscall.SIGKILL,
		Credential: &syscall.Credential{Uid: c.UID, Gid: c.GID, Groups: c.Groups},
		Cloneflags: syscall.CLONE_NEWNET,
	}
	p := &Process{Argv: append([]string{bin}, args...), FDs: describe(c, extra), Serial: serialR, cmd: cmd, slots: newSlots(c), accel: c.Accel, done: make(chan struct{})}
	// Last: Wrap adds the trampoline's status pipe after QEMU's files.
	trampoline, err := confine.Wrap(cmd)
	if err != nil {
		serialR.Close()
		removeSockets(c)
		return nil, fmt.Errorf("qemu %s: %w", c.Name, err)
	}
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(confineTimeout)
	}

	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: see Start's doc
		if err := closeInherited(); err != nil {
			trampoline.Close()
			started <- err
			return
		}
		if err := startWithMemlock(cmd, c.Memlock); err != nil {
			trampoline.Close()
			started <- err
			return
		}
		if err := trampoline.Started(deadline); err != nil {
			started <- err
		} else {
			started <- writePIDFile(c.PIDFile, cmd.Process.Pid)
		}
		p.err = cmd.Wait()
		removeSockets(c)
		close(p.done)
	}()
	if err := <-started; err != nil {
		serialR.Close()
		if cmd.Process != nil { // started, but its pid could not be recorded
			if kerr := p.Kill(); kerr != nil {
				return nil, fmt.Errorf("qemu %s: %w; and it keeps running: %w", c.Name, err, kerr)
			}
			<-p.done
			return nil, fmt.Errorf("qemu %s: %w", c.Name, err)
		}
		removeSockets(c)
		if errors.Is(err, syscall.EPERM) {
			err = fmt.Errorf("%w (spectrumd needs CAP_SETUID and CAP_SETGID for QEMU's uid, CAP_SYS_ADMIN for its network namespace)", err)
		}
		if errors.Is(err, syscall.EACCES) {
			err = fmt.Errorf("%w (QEMU starts through spectrumd's own binary, %s, as QEMU's uid %d: it must be executable by all, mode 0755)", err, confine.Self, c.UID)
		}
		return nil, fmt.Errorf("start %s: %w", Quote(p.Argv), err)
	}
	for _, f := range files {
		f.Close() // QEMU has its own copies; EOF on Serial needs this
	}
	files = nil

	// The socket is already listening, so the connection is queued at
	// once; the handshake waits for QEMU to serve the monitor.
	dialer := qmp.Dialer{Log: c.Log}
	q, err := dialer.Dial(ctx, c.QMPSocket)
	if err == nil {
		// QEMU runs paused (-S): the guest starts only now that the
		// monitor has greeted and negotiated.
		if err = q.Cont(ctx); err != nil {
			q.Close()
		}
	}
	if err != nil {
		serialR.Close()
		if kerr := p.Kill(); kerr != nil {
			return nil, fmt.Errorf("qemu %s: %w; and it keeps running: %w", c.Name, err, kerr)
		}
		<-p.done
		return nil, fmt.Errorf("qemu %s: %w (exit: %v)", c.Name, err, p.err)
	}
	p.mon = &session{path: c.QMPSocket, dialer: dialer, cur: q}
	go func() {
		<-p.done
		p.mon.close(fmt.Errorf("qmp: QEMU has exited: %w", qmp.ErrClosed))
	}()
	return p, nil
}

// QMP returns the VM's QMP session, waiting at most until ctx ends. A
// session that has ended while QEMU runs (a call ran out of time before
// QEMU answered it, and host/qmp closed the session) is replaced by a new
// one on the same socket, so a QEMU that was frozen or starved for a
// while can be hot-plugged and stopped again once it answers; concurrent
// callers share one dial. Once QEMU has exited, QMP fails with an error
// wrapping qmp.ErrClosed.
func (p *Process) QMP(ctx context.Context) (*qmp.Client, error) {
	return p.mon.get(ctx)
}

// describe names the descriptors of extra (descriptor 3 first): the
// sockets by their paths, the serial pipe as such, the others by their
// files' names.
func describe(c Config, extra []*os.File) []string {
	out := make([]string, len(extra))
	for i, f := range extra {
		name := f.Name()
		switch 3 + i {
		case fdQMP:
			name = "QMP socket " + c.QMPSocket
		case fdConsole:
			name = "console socket " + c.ConsoleSocket
		case fdSerial:
			name = "serial pipe"
		}
		out[i] = strconv.Itoa(3+i) + "=" + name
	}
	return out
}

// listen binds a unix socket at path, replacing a stale socket (never any
// other kind of file), and returns it as a file for QEMU.
func listen(path string) (*os.File, error) {
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode().Type() != os.ModeSocket {
			return nil, fmt.Errorf("listen %s: exists and is not a socket", path)
		}
		os.Remove(path)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, err
	}
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, err
	}
	defer l.Close()
	l.SetUnlinkOnClose(false) // the socket file outlives our copy of the fd
	if err := os.Chmod(path, 0o600); err != nil {
		os.Remove(path)
		return nil, err
	}
	f, err := l.File()
	if err != nil {
		os.Remove(path)
		return nil, err
	}
	return f, nil
}

// removeSockets removes the files Start made: the sockets and the pid file.
func removeSockets(c Config) {
	os.Remove(c.QMPSocket)
	os.Remove(c.ConsoleSocket)
	if c.PIDFile != "" {
		os.Remove(c.PIDFile)
	}
}

// Pid is QEMU's process id.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Done is closed when QEMU has exited and its sockets are removed.
func (p *Process) Done() <-chan struct{} { return p.done }

// Wait waits for QEMU to exit and returns how it exited (nil for status 0,
// which includes a guest power-off and, with -no-reboot, a guest reboot).
func (p *Process) Wait() error {
	<-p.done
	return p.err
}

// Kill sends SIGKILL to QEMU. It does not wait. A QEMU that has exited
// already is not an error. An error is never swallowed: where spectrumd may
// not signal QEMU (no CAP_KILL while QEMU runs under another uid) it wraps
// syscall.EPERM, and QEMU keeps running.
func (p *Process) Kill() error {
	err := p.cmd.Process.Signal(syscall.SIGKILL)
	if err == nil || errors.Is(err, os.ErrProcessDone) {
		return nil
	}
	if errors.Is(err, syscall.EPERM) {
		return fmt.Errorf("kill QEMU (pid %d): %w (spectrumd needs CAP_KILL to signal a QEMU that runs under another uid)", p.Pid(), err)
	}
	return fmt.Errorf("kill QEMU (pid %d): %w", p.Pid(), err)
}

// Stop shuts the VM down: it presses the ACPI power button (QMP
// system_powerdown), waits up to timeout for QEMU to exit, and then kills
// it. It returns once QEMU is gone; graceful tells whether the guest shut
// down by itself. If the kill fails, Stop returns its error at once (QEMU is
// still running) rather than wait for an exit that will not come.
func (p *Process) Stop(timeout time.Duration) (graceful bool, err error) {
	select {
	case <-p.done:
		return true, nil
	default:
	}
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if q, err := p.QMP(ctx); err == nil && q.SystemPowerdown(ctx) == nil {
		select {
		case <-p.done:
			return true, nil
		case <-timer.C:
		}
	}
	if err := p.Kill(); err != nil {
		return false, err
	}
	<-p.done
	return false, nil
}
