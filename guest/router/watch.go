package router

import (
	"errors"
	"os"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"
)

// resolvWatch follows the provider's resolv.conf with inotify. It watches
// directories, not the file: a DHCP client replaces resolv.conf by
// renaming a new file over it (a watch on the old file would see nothing),
// and writes it in place at other times. A path that is a symlink
// (resolvconf, systemd-resolved, NetworkManager) is followed: the
// directory of every hop is watched, so a change of the link or of its
// target is seen. A directory that does not exist yet is watched through
// its nearest existing ancestor, so that its creation is seen.
type resolvWatch struct {
	// f is the inotify descriptor, non-blocking, in Go's poller, so that
	// closing it ends a blocked wait; fd is the same descriptor for
	// inotify_add_watch (f.Fd would make it blocking).
	f  *os.File
	fd int
	// watched is every (directory, entry name) that matters, with the
	// directory's watch descriptor. Entries are never removed (a
	// directory that went away loses its watch by itself): the places a
	// resolver file lives in are few.
	watched []watched
}

type watched struct {
	wd        int32
	dir, name string
}

// watchMask is what a directory watch reports: an entry written and
// closed, created (a symlink, a directory, a hard link: nothing to close),
// renamed in or out, or removed; and the directory itself going.
const watchMask = unix.IN_CLOSE_WRITE | unix.IN_CREATE | unix.IN_MOVED_TO | unix.IN_MOVED_FROM |
	unix.IN_DELETE | unix.IN_DELETE_SELF | unix.IN_MOVE_SELF | unix.IN_ONLYDIR

func newResolvWatch() (*resolvWatch, error) {
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		return nil, err
	}
	return &resolvWatch{f: os.NewFile(uintptr(fd), "inotify"), fd: fd}, nil
}

// follow adds the watches reading p depends on: p's directory and, while
// p is a symlink (at most 8 hops, what makes a loop), each target's.
func (w *resolvWatch) follow(p string) error {
	var buf [4096]byte
	for range 8 {
		// The directory of p, or the nearest that exists, for the
		// name of the next component down to p.
		dir, name := split(p)
		for {
			wd, err := unix.InotifyAddWatch(w.fd, dir, watchMask)
			if err == nil {
				w.add(watched{int32(wd), dir, name})
				break
			}
			if err != unix.ENOENT && err != unix.ENOTDIR || dir == "/" {
				return errors.New("watch " + dir + ": " + err.Error())
			}
			dir, name = split(dir)
		}
		n, err := unix.Readlink(p, buf[:])
		if err != nil || n == 0 {
			return nil
		}
		if t := string(buf[:n]); t[0] == '/' {
			p = t
		} else {
			dir, _ := split(p)
			p = dir + "/" + t
		}
	}
	return nil
}

func (w *resolvWatch) add(x watched) {
	for _, y := range w.watched {
		if x == y {
			return
		}
	}
	w.watched = append(w.watched, x)
}

// split cuts an absolute path into its directory and its last element:
// "/etc/resolv.conf" is "/etc" and "resolv.conf", "/etc" is "/" and "etc".
// (path/filepath would cost its size for nothing.)
func split(p string) (dir, name string) {
	i := strings.LastIndexByte(p, '/')
	if i <= 0 {
		return "/", p[i+1:]
	}
	return p[:i], p[i+1:]
}

// wait blocks until something that matters changed and returns nil, or
// returns the error that ends watching (the descriptor closed by close).
// Events that arrive together count once.
func (w *resolvWatch) wait() error {
	var buf [4096]byte
	for {
		n, err := w.f.Read(buf[:])
		if err != nil {
			return err
		}
		if w.matters(buf[:n]) {
			return nil
		}
	}
}

// matters tells whether a batch of inotify events touches a watched name.
func (w *resolvWatch) matters(b []byte) bool {
	hit := false
	for len(b) >= unix.SizeofInotifyEvent {
		ev := (*unix.InotifyEvent)(unsafe.Pointer(&b[0]))
		end := unix.SizeofInotifyEvent + int(ev.Len)
		if end > len(b) {
			break
		}
		name := strings.TrimRight(string(b[unix.SizeofInotifyEvent:end]), "\x00")
		b = b[end:]
		if ev.Mask&(unix.IN_Q_OVERFLOW|unix.IN_IGNORED|unix.IN_DELETE_SELF|unix.IN_MOVE_SELF) != 0 {
			// Events were lost, or a watched directory went:
			// look again.
			hit = true
			continue
		}
		for _, x := range w.watched {
			if x.wd != ev.Wd || x.name != name {
				continue
			}
			var st unix.Stat_t
			if ev.Mask&unix.IN_CREATE != 0 && unix.Lstat(x.dir+"/"+name, &st) == nil && st.Mode&unix.S_IFMT == unix.S_IFREG && st.Nlink == 1 {
				// A new regular file is being written: its
				// IN_CLOSE_WRITE follows, with the contents. Not
				// a hard link to a file written elsewhere
				// (Nlink > 1), which nothing closes here.
				continue
			}
			hit = true
		}
	}
	return hit
}

func (w *resolvWatch) close() error { return w.f.Close() }
