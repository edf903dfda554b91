package config

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// A VM's fingerprint is the list of everything its validation looked at, in
// the order it looked: the status of each directory before it was listed and
// of each file before it was read or its type was used, and the result of
// resolving each symlink. The same list read again and found equal means
// validation would see the same thing and reach the same result.
//
// Why a status is enough: a directory's ctime and mtime change when an
// entry is added, removed or renamed; a file's ctime changes when its
// content, mode or owner does, and cannot be set back by a user (touch -d
// sets mtime only); a path that now names another inode has another inode
// number or, if the number was reused, the newer inode's ctime. Symlinks
// cannot be rewritten in place, but what one resolves to depends on every
// directory along its target, so a symlink is resolved again instead.
//
// One race is left: a change made within the same tick of the file system's
// clock as the status that was recorded keeps the ctime. The loader
// therefore never trusts a fingerprint holding a ctime newer than shortly
// before validation began (see racyWindow); that VM is read again next time.

// notErrno stands for an error that did not come from the kernel: no
// status taken again is ever equal to it.
const notErrno = ^syscall.Errno(0)

// stamp is what lstat or stat said about a path.
type stamp struct {
	errno syscall.Errno // non-zero: the call failed with it; nothing else is set
	ino   uint64
	dev   uint64
	mode  uint32
	size  int64
	mtime int64 // ns since the epoch
	ctime int64
}

func stampOf(st *syscall.Stat_t, err error) stamp {
	if err != nil {
		var errno syscall.Errno
		if !errors.As(err, &errno) {
			errno = notErrno
		}
		return stamp{errno: errno}
	}
	return stamp{
		ino: st.Ino, dev: st.Dev, mode: st.Mode, size: st.Size,
		mtime: st.Mtim.Nano(), ctime: st.Ctim.Nano(),
	}
}

func stampPath(p string, follow bool) stamp {
	var st syscall.Stat_t
	var err error
	for {
		if follow {
			err = syscall.Stat(p, &st)
		} else {
			err = syscall.Lstat(p, &st)
		}
		if err != syscall.EINTR {
			return stampOf(&st, err)
		}
	}
}

// dep is one thing a VM's validation depended on.
type dep struct {
	path   string
	eval   bool   // resolved with filepath.EvalSymlinks: real and err say to what
	follow bool   // stat rather than lstat
	st     stamp  // !eval
	real   string // eval
	err    string // eval: the error's text, "" for none
}

// same tells whether d still holds.
func (d *dep) same() bool {
	if d.eval {
		real, err := filepath.EvalSymlinks(d.path)
		return real == d.real && errText(err) == d.err
	}
	return d.st.errno != notErrno && stampPath(d.path, d.follow) == d.st
}

func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// deps records a VM's fingerprint as loadVM reads. A nil *deps records
// nothing and costs nothing, which is what a one-shot Load uses.
type deps struct {
	list []dep
}

// stat records p's status; call it before reading p. A path just recorded
// is not recorded twice (a symlink's target, stat-ed to learn its type,
// then read).
func (d *deps) stat(p string) {
	if d == nil {
		return
	}
	if n := len(d.list); n > 0 && !d.list[n-1].eval && d.list[n-1].path == p {
		return
	}
	d.list = append(d.list, dep{path: p, st: stampPath(p, false)})
}

// osLstat is os.Lstat, recorded.
func (d *deps) osLstat(p string) (fs.FileInfo, error) {
	fi, err := os.Lstat(p)
	if d != nil {
		var st *syscall.Stat_t
		recErr := err
		if err == nil {
			var ok bool
			if st, ok = fi.Sys().(*syscall.Stat_t); !ok {
				// Cannot happen on Linux; record a status that never matches.
				recErr = errors.New("no stat_t")
			}
		}
		d.list = append(d.list, dep{path: p, st: stampOf(st, recErr)})
	}
	return fi, err
}

// osStat is os.Stat's file type, recorded.
func (d *deps) osStat(p string) (fs.FileMode, error) {
	if d == nil {
		fi, err := os.Stat(p)
		if err != nil {
			return 0, err
		}
		return fi.Mode().Type(), nil
	}
	var st syscall.Stat_t
	var err error
	for {
		if err = syscall.Stat(p, &st); err != syscall.EINTR {
			break
		}
	}
	d.list = append(d.list, dep{path: p, follow: true, st: stampOf(&st, err)})
	if err != nil {
		return 0, &fs.PathError{Op: "stat", Path: p, Err: err}
	}
	return modeType(st.Mode), nil
}

// modeType is the fs.FileMode type bits of a st_mode, as os.Stat gives them.
func modeType(m uint32) fs.FileMode {
	switch m & unix.S_IFMT {
	case unix.S_IFDIR:
		return fs.ModeDir
	case unix.S_IFLNK:
		return fs.ModeSymlink
	case unix.S_IFIFO:
		return fs.ModeNamedPipe
	case unix.S_IFSOCK:
		return fs.ModeSocket
	case unix.S_IFCHR:
		return fs.ModeDevice | fs.ModeCharDevice
	case unix.S_IFBLK:
		return fs.ModeDevice
	}
	return 0
}

// evalSymlinks is filepath.EvalSymlinks, recorded.
func (d *deps) evalSymlinks(p string) (string, error) {
	real, err := filepath.EvalSymlinks(p)
	if d != nil {
		d.list = append(d.list, dep{path: p, eval: true, real: real, err: errText(err)})
	}
	return real, err
}

// racy tells whether a status in the list changed at or after cutoff, too
// recently for a later change to be sure to show.
func racy(list []dep, cutoff time.Time) bool {
	c := cutoff.UnixNano()
	for i := range list {
		if !list[i].eval && list[i].st.errno == 0 && list[i].st.ctime >= c {
			return true
		}
	}
	return false
}

// unchanged tells whether every dependency in list still holds.
func unchanged(list []dep) bool {
	for i := range list {
		if !list[i].same() {
			return false
		}
	}
	return true
}
