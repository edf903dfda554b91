// Package initramfs writes the test guests' initramfs: a newc cpio archive
// with the test init as /init, the static spectrum-netcfg as
// /bin/spectrum-netcfg (and spectrum-router as /bin/spectrum-router), the kernel modules the guest loads, uncompressed,
// as /lib/modules/NAME.ko with their load order in /lib/modules/order, and
// further files (busybox and its applets, configuration, Debian's lynx and
// its libraries: host.go). An archive of files alone (WriteFiles) can be
// appended to another: the kernel unpacks concatenated archives in turn.
package initramfs

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path"
	"strings"

	"github.com/cavaliergopher/cpio"

	"spectrum-os.org/netcfg/vmtest/kernel"
)

// Spec is what goes into an archive.
type Spec struct {
	Init    string          // host path of the static init binary; required
	Agent   string          // host path of the static spectrum-netcfg; "" leaves it out
	Router  string          // host path of the static spectrum-router; "" leaves it out
	Modules []kernel.Module // loaded by the init in this order; nil if drivers are built in
	Files   []File          // further files; their directories are made as needed
}

// File is one further file of an archive: Data, or the host file Src, or a
// symbolic link to Link.
type File struct {
	Path string      // in the guest, e.g. "etc/resolv.conf" (a leading / is dropped)
	Mode os.FileMode // permission bits; zero means 0644 (0777 for a link)
	Data []byte
	Src  string
	Link string
}

// baseDirs are the directories every archive has.
var baseDirs = []string{"bin", "dev", "proc", "sys", "lib", "lib/modules", "etc", "tmp", "root"}

// Write writes the archive for s to w.
func Write(w io.Writer, s Spec) error {
	cw := cpio.NewWriter(w)
	for _, d := range baseDirs {
		if err := cw.WriteHeader(&cpio.Header{Name: d, Mode: cpio.TypeDir | 0o755}); err != nil {
			return err
		}
	}
	add := func(name string, mode cpio.FileMode, data []byte) error {
		if err := cw.WriteHeader(&cpio.Header{Name: name, Mode: cpio.TypeReg | mode, Size: int64(len(data))}); err != nil {
			return fmt.Errorf("cpio %s: %w", name, err)
		}
		_, err := cw.Write(data)
		return err
	}
	addFile := func(name, src string) error {
		b, err := os.ReadFile(src)
		if err != nil {
			return err
		}
		return add(name, 0o755, b)
	}
	if err := addFile("init", s.Init); err != nil {
		return err
	}
	for _, b := range []struct{ path, src string }{{"bin/spectrum-netcfg", s.Agent}, {"bin/spectrum-router", s.Router}} {
		if b.src == "" {
			continue
		}
		if err := addFile(b.path, b.src); err != nil {
			return err
		}
	}
	if len(s.Modules) > 0 {
		var order strings.Builder
		for _, m := range s.Modules {
			b, err := kernel.ReadModule(m.Path)
			if err != nil {
				return err
			}
			if err := add("lib/modules/"+m.Name+".ko", 0o644, b); err != nil {
				return err
			}
			order.WriteString(m.Name + "\n")
		}
		if err := add("lib/modules/order", 0o644, []byte(order.String())); err != nil {
			return err
		}
	}
	if err := writeFiles(cw, s.Files, baseDirs); err != nil {
		return err
	}
	return cw.Close()
}

// WriteFiles writes an archive of files alone, to append to another.
func WriteFiles(w io.Writer, files []File) error {
	cw := cpio.NewWriter(w)
	if err := writeFiles(cw, files, nil); err != nil {
		return err
	}
	return cw.Close()
}

// writeFiles writes files, each after its parent directories (the kernel
// makes none itself), skipping the directories in have.
func writeFiles(cw *cpio.Writer, files []File, have []string) error {
	made := map[string]bool{}
	for _, d := range have {
		made[d] = true
	}
	var mkdir func(d string) error
	mkdir = func(d string) error {
		if d == "." || d == "/" || d == "" || made[d] {
			return nil
		}
		if err := mkdir(path.Dir(d)); err != nil {
			return err
		}
		made[d] = true
		return cw.WriteHeader(&cpio.Header{Name: d, Mode: cpio.TypeDir | 0o755})
	}
	for _, f := range files {
		name := strings.TrimPrefix(path.Clean("/"+f.Path), "/")
		if err := mkdir(path.Dir(name)); err != nil {
			return err
		}
		mode := cpio.FileMode(f.Mode.Perm())
		if f.Link != "" {
			if mode == 0 {
				mode = 0o777
			}
			if err := cw.WriteHeader(&cpio.Header{Name: name, Mode: cpio.TypeSymlink | mode, Linkname: f.Link, Size: int64(len(f.Link))}); err != nil {
				return fmt.Errorf("cpio %s: %w", name, err)
			}
			if _, err := cw.Write([]byte(f.Link)); err != nil {
				return err
			}
			continue
		}
		if mode == 0 {
			mode = 0o644
		}
		data := f.Data
		if f.Src != "" {
			b, err := os.ReadFile(f.Src)
			if err != nil {
				return err
			}
			data = b
		}
		if err := cw.WriteHeader(&cpio.Header{Name: name, Mode: cpio.TypeReg | mode, Size: int64(len(data))}); err != nil {
			return fmt.Errorf("cpio %s: %w", name, err)
		}
		if _, err := cw.Write(data); err != nil {
			return err
		}
	}
	return nil
}

// Bytes returns the archive for s.
func Bytes(s Spec) ([]byte, error) {
	var b bytes.Buffer
	err := Write(&b, s)
	return b.Bytes(), err
}
