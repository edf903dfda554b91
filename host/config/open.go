package config

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// Files are the files of one VM that its VMM reads, opened by Open. The VMM
// is given these descriptors, never the paths: what it reads is what Open
// checked, whatever happens to the directory afterwards.
type Files struct {
	Kernel    *os.File   // vmlinux, checked to be an ELF executable
	Initramfs *os.File   // nil when the VM has none
	Images    []*os.File // blk/*.img, in VM.Images order
}

// Close closes every file.
func (f *Files) Close() error {
	var errs []error
	for _, x := range f.all() {
		errs = append(errs, x.Close())
	}
	return errors.Join(errs...)
}

func (f *Files) all() []*os.File {
	var out []*os.File
	for _, x := range append([]*os.File{f.Kernel, f.Initramfs}, f.Images...) {
		if x != nil {
			out = append(out, x)
		}
	}
	return out
}

// Open opens vm's kernel, initramfs and disk images for reading, each a
// regular file reached only beneath vm.Dir: the directory is opened by its
// real path with no symlink on the way (RESOLVE_NO_SYMLINKS), and each file
// relative to it with openat2's RESOLVE_BENEATH and RESOLVE_NO_MAGICLINKS,
// so a symlink, a "..", an absolute path or a /proc link put in place since
// the VM was loaded cannot lead out of it. The kernel's ELF header is
// checked again on the open file.
//
// Call it at every launch: a relaunch after a crash must not trust what was
// true when the VM was loaded. The error is a *VMError naming the file at
// fault (its absolute path); nothing is left open on failure. Files' names
// (os.File.Name) are their absolute paths.
func Open(vm *VM) (*Files, error) {
	fail := func(p string, err error) (*Files, error) {
		return nil, &VMError{VM: vm.Name, Path: p, Err: err}
	}
	dir, err := unix.Openat2(unix.AT_FDCWD, vm.Dir, &unix.OpenHow{
		Flags:   unix.O_PATH | unix.O_DIRECTORY | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS,
	})
	if err != nil {
		return fail(vm.Dir, fmt.Errorf("open the VM's directory: %w", openErr(err)))
	}
	defer unix.Close(dir)

	var f Files
	ok := false
	defer func() {
		if !ok {
			f.Close()
		}
	}()
	open := func(p string) (*os.File, error) {
		rel, err := filepath.Rel(vm.Dir, p)
		if err != nil || !filepath.IsLocal(rel) {
			return nil, fmt.Errorf("%w: not inside %s", ErrEscape, vm.Dir)
		}
		return openBeneath(dir, rel, p)
	}
	if f.Kernel, err = open(vm.Kernel); err == nil {
		err = checkELFFile(f.Kernel)
	}
	if err != nil {
		return fail(vm.Kernel, err)
	}
	if vm.Initramfs != "" {
		if f.Initramfs, err = open(vm.Initramfs); err != nil {
			return fail(vm.Initramfs, err)
		}
	}
	for _, p := range vm.Images {
		img, err := open(p)
		if err != nil {
			return fail(p, err)
		}
		f.Images = append(f.Images, img)
	}
	ok = true
	return &f, nil
}

// openBeneath opens rel under the directory dir, read-only, and checks that
// it is a regular file. name is the file's absolute path, for its name and
// errors.
func openBeneath(dir int, rel, name string) (*os.File, error) {
	var fd int
	var err error
	for {
		// O_NONBLOCK: a FIFO put in place of an image cannot hang the
		// launch; it is refused below.
		fd, err = unix.Openat2(dir, rel, &unix.OpenHow{
			Flags:   unix.O_RDONLY | unix.O_CLOEXEC | unix.O_NOCTTY | unix.O_NONBLOCK,
			Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_MAGICLINKS,
		})
		if err != unix.EINTR {
			break
		}
	}
	if err != nil {
		return nil, openErr(err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return nil, err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		unix.Close(fd)
		return nil, fmt.Errorf("%w: %s", ErrNotRegular, kind(modeType(st.Mode)))
	}
	// Back to blocking reads: the VMM shares this open file.
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETFL, 0); err != nil {
		unix.Close(fd)
		return nil, err
	}
	return os.NewFile(uintptr(fd), name), nil
}

// openErr explains the errors openat2's resolve flags give.
func openErr(err error) error {
	switch {
	case errors.Is(err, unix.EXDEV):
		return fmt.Errorf("%w (now; it did not when the VM was loaded)", ErrEscape)
	case errors.Is(err, unix.ELOOP):
		return fmt.Errorf("a symlink where none may be (now; there was none when the VM was loaded): %w", err)
	case errors.Is(err, unix.ENOSYS):
		return fmt.Errorf("openat2 (Linux 5.6 or later is needed): %w", err)
	}
	return err
}

// checkELFFile checks the ELF header of the open kernel f.
func checkELFFile(f *os.File) error {
	var h [elfHead]byte
	n, err := f.ReadAt(h[:], 0)
	if err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	return checkELFHead(h[:n])
}
