package config

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"

	"golang.org/x/sys/unix"
)

// The loader's file access goes straight to the system calls: loading 1,000
// VMs is about 20,000 of them, and os.Open and os.ReadDir add several fcntl
// and epoll calls to each open that a file read once and closed never needs.

// open opens p read-only without blocking (a FIFO put in place of a checked
// file cannot hang the loader) and without following a final symlink: the
// callers resolve and confine symlinks first.
func open(p string, dir bool) (int, error) {
	flags := unix.O_RDONLY | unix.O_CLOEXEC | unix.O_NONBLOCK | unix.O_NOCTTY | unix.O_NOFOLLOW
	if dir {
		flags |= unix.O_DIRECTORY
	}
	for {
		fd, err := unix.Open(p, flags, 0)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return -1, &fs.PathError{Op: "open", Path: p, Err: err}
		}
		return fd, nil
	}
}

// readDir lists dir as names and types.
func readDir(dir string) (map[string]fs.FileMode, error) {
	fd, err := open(dir, true)
	if err != nil {
		if errors.Is(err, unix.ENOTDIR) {
			return nil, ErrNotDir
		}
		return nil, err
	}
	defer unix.Close(fd)
	m := map[string]fs.FileMode{}
	var buf [8192]byte
	for {
		n, err := unix.Getdents(fd, buf[:])
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, &fs.PathError{Op: "getdents", Path: dir, Err: err}
		}
		if n <= 0 {
			return m, nil
		}
		// struct linux_dirent64: ino u64, off s64, reclen u16, type u8, name.
		for b := buf[:n]; len(b) >= 19; {
			reclen := int(binary.NativeEndian.Uint16(b[16:]))
			if reclen < 19 || reclen > len(b) {
				break
			}
			name := b[19:reclen]
			for i, c := range name {
				if c == 0 {
					name = name[:i]
					break
				}
			}
			typ := b[18]
			b = b[reclen:]
			s := string(name)
			if s == "." || s == ".." {
				continue
			}
			mode, ok := direntMode(typ)
			if !ok { // the file system does not say: ask
				fi, err := os.Lstat(filepath.Join(dir, s))
				if err != nil {
					continue // gone since
				}
				mode = fi.Mode().Type()
			}
			m[s] = mode
		}
	}
}

func direntMode(t byte) (fs.FileMode, bool) {
	switch t {
	case unix.DT_REG:
		return 0, true
	case unix.DT_DIR:
		return fs.ModeDir, true
	case unix.DT_LNK:
		return fs.ModeSymlink, true
	case unix.DT_FIFO:
		return fs.ModeNamedPipe, true
	case unix.DT_SOCK:
		return fs.ModeSocket, true
	case unix.DT_CHR:
		return fs.ModeDevice | fs.ModeCharDevice, true
	case unix.DT_BLK:
		return fs.ModeDevice, true
	}
	return 0, false
}

// readHead reads up to len(b) bytes from the start of the regular file p and
// returns how many it read: fewer only at the end of the file.
func readHead(p string, b []byte) (int, error) {
	fd, err := open(p, false)
	if err != nil {
		return 0, err
	}
	defer unix.Close(fd)
	n := 0
	for n < len(b) {
		m, err := unix.Read(fd, b[n:])
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return n, &fs.PathError{Op: "read", Path: p, Err: err}
		}
		if m == 0 {
			break
		}
		n += m
	}
	return n, nil
}

// readDirMode lists dir, whose type is mode, which must be a directory. rec
// records dir's status first.
func readDirMode(dir string, mode fs.FileMode, rec *deps) (map[string]fs.FileMode, error) {
	if !mode.IsDir() {
		return nil, fmt.Errorf("%w: %s", ErrNotDir, kind(mode))
	}
	rec.stat(dir)
	return readDir(dir)
}

func sortedKeys(m map[string]fs.FileMode) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// kind names a file type for an error message.
func kind(mode fs.FileMode) string {
	switch t := mode.Type(); {
	case t.IsRegular():
		return "a regular file"
	case t.IsDir():
		return "a directory"
	case t&fs.ModeSymlink != 0:
		return "a symlink"
	case t&fs.ModeNamedPipe != 0:
		return "a named pipe"
	case t&fs.ModeSocket != 0:
		return "a socket"
	case t&fs.ModeDevice != 0:
		return "a device"
	default:
		return "an unusual file (" + t.String() + ")"
	}
}
