//go:build linux && (amd64 || arm64)

package config

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// fstatat is unix.Fstatat on a path already NUL-terminated: a reload takes
// thousands of statuses, and unix.Fstatat copies each path to terminate it.
func fstatat(dirfd int, path []byte, st *unix.Stat_t, flags int) error {
	_, _, e := unix.Syscall6(unix.SYS_NEWFSTATAT, uintptr(dirfd), uintptr(unsafe.Pointer(&path[0])),
		uintptr(unsafe.Pointer(st)), uintptr(flags), 0, 0)
	if e != 0 {
		return e
	}
	return nil
}
