package qemu

import (
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"

	"golang.org/x/sys/unix"
)

// kernelFile returns what QEMU gets for the kernel or initramfs f. QEMU
// 7.2 opens -kernel and -initrd itself with open(2), so it is given
// /proc/self/fd/N; reopening a file through that link is checked against
// the file's own permissions and QEMU's uid. A file QEMU's uid may read (the
// usual 0644 VM directory, whatever its directory's mode) is f itself.
// Otherwise it is a copy in a sealed memfd (no write, no resize; mode 0444),
// which costs memory of the file's size for QEMU's lifetime, so it is made
// only when needed. ACLs are not consulted: a file readable only through an
// ACL entry is copied too.
func kernelFile(f *os.File, uid uint32, gids []uint32) (*os.File, error) {
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return nil, fmt.Errorf("stat %s: %w", f.Name(), err)
	}
	if readable(&st, uid, gids) {
		return f, nil
	}
	return sealedCopy(f, st.Size)
}

// readable tells whether uid with gids may read the file of st by its mode
// bits (owner, then group, then others, as the kernel decides).
func readable(st *unix.Stat_t, uid uint32, gids []uint32) bool {
	switch {
	case st.Uid == uid:
		return st.Mode&0o400 != 0
	case slices.Contains(gids, st.Gid):
		return st.Mode&0o040 != 0
	}
	return st.Mode&0o004 != 0
}

// sealedCopy copies the first size bytes of f into a new memfd and seals
// it: nobody, QEMU included, can change what the copy holds.
func sealedCopy(f *os.File, size int64) (*os.File, error) {
	name := "spectrumd copy of " + filepath.Base(f.Name())
	fd, err := unix.MemfdCreate(name, unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING|unix.MFD_NOEXEC_SEAL)
	if errors.Is(err, unix.EINVAL) { // before Linux 6.3: no MFD_NOEXEC_SEAL
		fd, err = unix.MemfdCreate(name, unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	}
	if err != nil {
		return nil, fmt.Errorf("copy %s for QEMU: memfd_create: %w", f.Name(), err)
	}
	m := os.NewFile(uintptr(fd), "memfd copy of "+f.Name())
	fail := func(err error) (*os.File, error) {
		m.Close()
		return nil, fmt.Errorf("copy %s for QEMU: %w", f.Name(), err)
	}
	if err := m.Truncate(size); err != nil {
		return fail(err)
	}
	if _, err := io.Copy(io.NewOffsetWriter(m, 0), io.NewSectionReader(f, 0, size)); err != nil {
		return fail(err)
	}
	if err := m.Chmod(0o444); err != nil {
		return fail(err)
	}
	seals := unix.F_SEAL_SEAL | unix.F_SEAL_SHRINK | unix.F_SEAL_GROW | unix.F_SEAL_WRITE
	if _, err := unix.FcntlInt(m.Fd(), unix.F_ADD_SEALS, seals); err != nil {
		return fail(fmt.Errorf("seal: %w", err))
	}
	return m, nil
}

// closeInherited marks every descriptor from 3 up close-on-exec, so that a
// child gets only the descriptors it is given explicitly (os/exec's
// ExtraFiles). Go opens all its own descriptors close-on-exec, but one that
// spectrumd inherited from its parent without the flag (a shell's, a
// supervisor's) would otherwise reach every QEMU.
func closeInherited() error {
	err := unix.CloseRange(3, math.MaxUint32, unix.CLOSE_RANGE_CLOEXEC)
	if !errors.Is(err, unix.ENOSYS) && !errors.Is(err, unix.EINVAL) {
		return err
	}
	// Before Linux 5.11: one descriptor at a time.
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return fmt.Errorf("mark inherited descriptors close-on-exec: %w", err)
	}
	for _, e := range ents {
		if fd, err := strconv.Atoi(e.Name()); err == nil && fd >= 3 {
			unix.CloseOnExec(fd) // the directory's own descriptor may be gone: no error
		}
	}
	return nil
}
