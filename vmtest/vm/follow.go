package vm

import (
	"errors"
	"io"
	"os"
	"syscall"
	"time"
)

// follower reads a VM's log file as spectrumd appends to it (tail -f), from
// offset off, and ends (io.EOF) once the VM's QEMU process pid has exited
// and everything it wrote has been read, or when stop is closed. eof is
// closed then. spectrumd writes a line to the file only after reading it
// from the console, so once QEMU is gone and the file stops growing the
// boot's log is complete. (Rotation at spectrumd's 4 MiB cap is not
// followed: a test guest writes a few KiB.)
type follower struct {
	path string
	off  int64
	pid  int
	stop <-chan struct{}
	eof  chan struct{}

	f    *os.File
	gone int // polls since QEMU exited
}

const followPoll = 20 * time.Millisecond

func (r *follower) Read(p []byte) (int, error) {
	for {
		if r.f == nil {
			f, err := os.Open(r.path)
			if err == nil {
				if _, err := f.Seek(r.off, io.SeekStart); err != nil {
					f.Close()
					return 0, r.end(err)
				}
				r.f = f
			} else if !errors.Is(err, os.ErrNotExist) {
				return 0, r.end(err)
			}
		}
		if r.f != nil {
			n, err := r.f.Read(p)
			if n > 0 {
				return n, nil
			}
			if err != nil && err != io.EOF {
				return 0, r.end(err)
			}
		}
		if syscall.Kill(r.pid, 0) != nil {
			// spectrumd may still be writing QEMU's last lines: give
			// it a few polls after the process is gone.
			if r.gone++; r.gone > 10 {
				return 0, r.end(io.EOF)
			}
		}
		select {
		case <-r.stop:
			return 0, r.end(io.EOF)
		case <-time.After(followPoll):
		}
	}
}

func (r *follower) end(err error) error {
	if r.f != nil {
		r.f.Close()
		r.f = nil
	}
	select {
	case <-r.eof:
	default:
		close(r.eof)
	}
	return err
}
