//go:build linux && !(amd64 || arm64)

package config

import "golang.org/x/sys/unix"

// fstatat is unix.Fstatat on a path already NUL-terminated.
func fstatat(dirfd int, path []byte, st *unix.Stat_t, flags int) error {
	return unix.Fstatat(dirfd, string(path[:len(path)-1]), st, flags)
}
