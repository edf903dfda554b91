// Package initramfs writes the test guests' initramfs: a newc cpio archive
// with the test init as /init, the static spectrum-netcfg as
// /bin/spectrum-netcfg, and the kernel modules the guest loads, uncompressed,
// as /lib/modules/NAME.ko with their load order in /lib/modules/order.
package initramfs

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/cavaliergopher/cpio"

	"spectrum-os.org/netcfg/vmtest/kernel"
)

// Spec is what goes into an archive.
type Spec struct {
	Init    string            // host path of the static init binary; required
	Agent   string            // host path of the static spectrum-netcfg; "" leaves it out
	Modules []kernel.Module   // loaded by the init in this order; nil if drivers are built in
	Extra   map[string][]byte // further files by guest path, mode 0644 (tests' own fixtures)
}

// Write writes the archive for s to w.
func Write(w io.Writer, s Spec) error {
	cw := cpio.NewWriter(w)
	dirs := []string{"bin", "dev", "proc", "sys", "lib", "lib/modules", "etc", "tmp"}
	for _, d := range dirs {
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
	if s.Agent != "" {
		if err := addFile("bin/spectrum-netcfg", s.Agent); err != nil {
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
	for name, b := range s.Extra {
		if err := add(strings.TrimPrefix(name, "/"), 0o644, b); err != nil {
			return err
		}
	}
	return cw.Close()
}

// Bytes returns the archive for s.
func Bytes(s Spec) ([]byte, error) {
	var b bytes.Buffer
	err := Write(&b, s)
	return b.Bytes(), err
}
