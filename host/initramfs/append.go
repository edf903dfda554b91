package initramfs

import (
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"strings"

	"github.com/cavaliergopher/cpio"
)

// File is one regular file to add.
type File struct {
	Name string      // path in the initramfs, relative: "usr/sbin/spectrum-netcfg"
	Mode fs.FileMode // permission bits; 0 means 0644
	Data []byte
}

// Write writes one newc archive holding files, each preceded by the
// directories above it (mode 0755, owned by root), which the kernel creates
// only when an archive names them; a directory an earlier archive made is
// left as it was apart from its mode and owner being set again.
func Write(w io.Writer, files []File) error {
	cw := cpio.NewWriter(w)
	dirs := map[string]bool{}
	for _, f := range files {
		name := path.Clean(strings.TrimPrefix(f.Name, "/"))
		if name == "." || strings.HasPrefix(name, "../") || name == ".." {
			return fmt.Errorf("initramfs: bad file name %q", f.Name)
		}
		var parents []string
		for d := path.Dir(name); d != "." && !dirs[d]; d = path.Dir(d) {
			dirs[d] = true
			parents = append(parents, d)
		}
		for i := len(parents) - 1; i >= 0; i-- {
			if err := cw.WriteHeader(&cpio.Header{Name: parents[i], Mode: cpio.TypeDir | 0o755, Links: 2}); err != nil {
				return fmt.Errorf("initramfs: %s: %w", parents[i], err)
			}
		}
		mode := f.Mode.Perm()
		if mode == 0 {
			mode = 0o644
		}
		hdr := &cpio.Header{Name: name, Mode: cpio.TypeReg | cpio.FileMode(mode), Size: int64(len(f.Data)), Links: 1}
		if err := cw.WriteHeader(hdr); err != nil {
			return fmt.Errorf("initramfs: %s: %w", name, err)
		}
		if _, err := cw.Write(f.Data); err != nil {
			return fmt.Errorf("initramfs: %s: %w", name, err)
		}
	}
	return cw.Close()
}

// Append appends an archive holding files to the initramfs at path, after
// zero padding to a multiple of 4 bytes, compressed with gzip if gz
// (CONFIG_RD_GZIP, which every distribution kernel has; an uncompressed
// archive works everywhere). The initramfs itself may be compressed with
// anything the kernel knows.
func Append(path string, files []File, gz bool) (err error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("%s: not a regular file", path)
	}
	if pad := (4 - fi.Size()%4) % 4; pad > 0 {
		if _, err := f.Write(make([]byte, pad)); err != nil {
			return err
		}
	}
	if !gz {
		return Write(f, files)
	}
	zw := gzip.NewWriter(f)
	return errors.Join(Write(zw, files), zw.Close())
}
