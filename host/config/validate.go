package config

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"unicode"
	"unicode/utf8"

	"spectrum-os.org/netcfg/internal/printable"
)

const (
	// MaxName is the longest VM name, in bytes. A VM's name ends up in file
	// names and socket paths under spectrumd's run directory (a unix socket
	// path holds at most 107 bytes), and in every log line.
	MaxName = 64
	// maxFileName is NAME_MAX: the longest image file name.
	maxFileName = 255
	// MaxCmdline is the largest cmdline file, in bytes (the x86 kernel's
	// COMMAND_LINE_SIZE is 2048 by default; 4 KiB leaves room for larger
	// builds without letting a stray file through).
	MaxCmdline = 4096
)

// checkName tells why s cannot be a VM name or an image's file name: both are
// passed to QEMU inside comma-separated options and used as file names.
func checkName(s string, max int) error {
	switch {
	case s == "":
		return fmt.Errorf("%w: empty", ErrName)
	case len(s) > max:
		return fmt.Errorf("%w: %d bytes, at most %d", ErrName, len(s), max)
	case !utf8.ValidString(s):
		return fmt.Errorf("%w %q: not UTF-8", ErrName, s)
	case s[0] == '.' || s[0] == '-':
		return fmt.Errorf("%w %q: starts with %q", ErrName, s, s[0])
	}
	for _, r := range s {
		switch {
		case r == '/' || r == ',':
			return fmt.Errorf("%w %q: holds %q", ErrName, s, r)
		case unicode.IsControl(r) || unicode.IsSpace(r) || printable.Unsafe(r):
			// Format characters too (bidi overrides, zero-width spaces): a
			// name must read as what it is wherever it is shown.
			return fmt.Errorf("%w %q: holds a control, format or space character", ErrName, s)
		}
	}
	return nil
}

// checkPath tells why an absolute path cannot be handed to QEMU: a ',' ends
// an option value and a control character has no business in a path.
func checkPath(p string) error {
	if !utf8.ValidString(p) {
		return fmt.Errorf("%w %q: not UTF-8", ErrPath, p)
	}
	for _, r := range p {
		if r == ',' || unicode.IsControl(r) {
			return fmt.Errorf("%w %q: holds %q", ErrPath, p, r)
		}
	}
	return nil
}

// within reports whether p is root or below it; both are clean and absolute.
func within(root, p string) bool {
	return p == root || strings.HasPrefix(p, root+string(filepath.Separator))
}

// follow returns the real path of p and its type. typ is p's own type as
// its directory listing reported it. p's parent holds no symlinks, so only p
// itself can be one; if it is, its target must stay inside root. rec
// records what the answer depends on.
func follow(root, p string, typ fs.FileMode, rec *deps) (string, fs.FileMode, error) {
	if typ&fs.ModeSymlink == 0 {
		return p, typ.Type(), nil
	}
	rec.stat(p) // the symlink itself: its target is read for the message below
	real, err := rec.evalSymlinks(p)
	if err != nil {
		return "", 0, err
	}
	if !within(root, real) {
		dest, _ := os.Readlink(p)
		return "", 0, fmt.Errorf("%w (to %s)", ErrEscape, dest)
	}
	mode, err := rec.osStat(real)
	if err != nil {
		return "", 0, err
	}
	return real, mode, nil
}

// checkELF tells why the regular file at p is not a kernel QEMU could boot:
// it must be readable and start with the header of an ELF executable (or
// position-independent executable). The machine
// is not checked: that is for QEMU to say.
func checkELF(p string) error {
	var h [elfHead]byte
	n, err := readHead(p, h[:])
	if err != nil {
		return err
	}
	return checkELFHead(h[:n])
}

// elfHead is how much of a kernel checkELFHead looks at: e_ident and
// e_type, the same in ELF32 and ELF64.
const elfHead = 18

// checkELFHead checks the first elfHead bytes of a kernel (fewer if the
// file is shorter).
func checkELFHead(h []byte) error {
	if len(h) < elfHead {
		return fmt.Errorf("%w: %d bytes, shorter than an ELF header", ErrNotELF, len(h))
	}
	if !bytes.Equal(h[:4], []byte(elf.ELFMAG)) {
		return fmt.Errorf("%w: no ELF magic (an uncompressed vmlinux is needed, not a bzImage)", ErrNotELF)
	}
	if c := elf.Class(h[elf.EI_CLASS]); c != elf.ELFCLASS32 && c != elf.ELFCLASS64 {
		return fmt.Errorf("%w: %v", ErrNotELF, c)
	}
	if v := elf.Version(h[elf.EI_VERSION]); v != elf.EV_CURRENT {
		return fmt.Errorf("%w: %v", ErrNotELF, v)
	}
	var order binary.ByteOrder
	switch d := elf.Data(h[elf.EI_DATA]); d {
	case elf.ELFDATA2LSB:
		order = binary.LittleEndian
	case elf.ELFDATA2MSB:
		order = binary.BigEndian
	default:
		return fmt.Errorf("%w: %v", ErrNotELF, d)
	}
	// x86 kernels are ET_EXEC; a relocatable arm64 one is ET_DYN.
	if t := elf.Type(order.Uint16(h[16:])); t != elf.ET_EXEC && t != elf.ET_DYN {
		return fmt.Errorf("%w: type %v, want ET_EXEC or ET_DYN", ErrNotELF, t)
	}
	return nil
}

// readCmdline returns the kernel command line in the regular file at p: one
// line, at most MaxCmdline bytes, a single trailing newline allowed.
func readCmdline(p string) (string, error) {
	var buf [MaxCmdline + 1]byte
	n, err := readHead(p, buf[:])
	if err != nil {
		return "", err
	}
	b := buf[:n]
	if len(b) > MaxCmdline {
		return "", fmt.Errorf("%w: over %d bytes", ErrCmdline, MaxCmdline)
	}
	s := strings.TrimSuffix(string(b), "\n")
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return "", fmt.Errorf("%w: a newline at byte %d (one line only)", ErrCmdline, i)
	}
	if !utf8.ValidString(s) {
		return "", fmt.Errorf("%w: not UTF-8", ErrCmdline)
	}
	for i, r := range s {
		if r != '\t' && unicode.IsControl(r) {
			return "", fmt.Errorf("%w: control character %q at byte %d", ErrCmdline, r, i)
		}
	}
	return s, nil
}
