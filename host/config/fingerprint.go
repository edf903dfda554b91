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

func stampOf(st *unix.Stat_t, err error) stamp {
	if err != nil {
		var errno syscall.Errno
		if !errors.As(err, &errno) {
			errno = syscall.EIO // not from the kernel: never trusted, see same
		}
		return stamp{errno: errno}
	}
	return stamp{
		ino: st.Ino, dev: st.Dev, mode: st.Mode, size: st.Size,
		mtime: st.Mtim.Nano(), ctime: st.Ctim.Nano(),
	}
}

// stampAt takes p's status (lstat, or stat if follow); a relative p is taken
// from the directory dirfd.
func stampAt(dirfd int, p string, follow bool) stamp {
	return stampAtC(dirfd, cString(p), follow)
}

// stampAtC is stampAt of a NUL-terminated path.
func stampAtC(dirfd int, p []byte, follow bool) stamp {
	flags := unix.AT_SYMLINK_NOFOLLOW
	if follow {
		flags = 0
	}
	var st unix.Stat_t
	for {
		err := fstatat(dirfd, p, &st, flags)
		if err != unix.EINTR {
			return stampOf(&st, err)
		}
	}
}

// cString is p NUL-terminated; a NUL inside p (which no path the loader
// met can hold) cuts it short.
func cString(p string) []byte {
	b := make([]byte, len(p)+1)
	copy(b, p)
	return b
}

// dep is one thing a VM's validation depended on.
type dep struct {
	path   string // relative to the data directory if it is inside, else absolute
	cpath  []byte // !eval: path NUL-terminated, for fstatat
	eval   bool   // resolved with filepath.EvalSymlinks: real and err say to what
	follow bool   // stat rather than lstat
	st     stamp  // !eval
	real   string // eval
	err    string // eval: the error's text, "" for none
}

// same tells whether d still holds; data is an open descriptor of the data
// directory (relative paths start there).
func (d *dep) same(data int) bool {
	if d.eval {
		real, err := filepath.EvalSymlinks(d.path)
		return real == d.real && errText(err) == d.err
	}
	switch d.st.errno {
	case 0, syscall.ENOENT, syscall.ENOTDIR:
	default:
		// A failure that says nothing about the path (out of memory, a
		// system call refused): it may go away without the path changing.
		return false
	}
	return stampAtC(data, d.cpath, d.follow) == d.st
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
	abs  string // the data directory's real path
	list []dep
}

// rel is how a dep names p: relative to the data directory when inside it,
// which makes each status taken again a shorter path walk.
func (d *deps) rel(p string) string {
	if len(p) > len(d.abs)+1 && p[len(d.abs)] == filepath.Separator && p[:len(d.abs)] == d.abs {
		return p[len(d.abs)+1:]
	}
	return p
}

// stat records p's status; call it before reading p. A path just recorded
// is not recorded twice (a symlink's target, stat-ed to learn its type,
// then read).
func (d *deps) stat(p string) {
	if d == nil {
		return
	}
	r := d.rel(p)
	if n := len(d.list); n > 0 && !d.list[n-1].eval && d.list[n-1].path == r {
		return
	}
	d.list = append(d.list, dep{path: r, cpath: cString(r), st: stampAt(unix.AT_FDCWD, p, false)})
}

// osLstat is os.Lstat, recorded.
func (d *deps) osLstat(p string) (fs.FileInfo, error) {
	fi, err := os.Lstat(p)
	if d != nil {
		var st unix.Stat_t
		recErr := err
		if err == nil {
			if sys, ok := fi.Sys().(*syscall.Stat_t); ok {
				st.Ino, st.Dev, st.Mode, st.Size = sys.Ino, sys.Dev, sys.Mode, sys.Size
				st.Mtim = unix.NsecToTimespec(sys.Mtim.Nano())
				st.Ctim = unix.NsecToTimespec(sys.Ctim.Nano())
			} else {
				// Cannot happen on Linux; record a status that never matches.
				recErr = errors.New("no stat_t")
			}
		}
		r := d.rel(p)
		d.list = append(d.list, dep{path: r, cpath: cString(r), st: stampOf(&st, recErr)})
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
	st := stampAt(unix.AT_FDCWD, p, true)
	r := d.rel(p)
	d.list = append(d.list, dep{path: r, cpath: cString(r), follow: true, st: st})
	if st.errno != 0 {
		return 0, &fs.PathError{Op: "stat", Path: p, Err: st.errno}
	}
	return modeType(st.mode), nil
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

// unchanged tells whether every dependency in list still holds; data is an
// open descriptor of the data directory.
func unchanged(list []dep, data int) bool {
	for i := range list {
		if !list[i].same(data) {
			return false
		}
	}
	return true
}
