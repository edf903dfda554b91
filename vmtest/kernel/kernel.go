// Package kernel prepares the test kernel the VM tests boot: it turns a
// Debian cloud kernel's compressed bzImage into the uncompressed ELF vmlinux
// a VM directory requires, finds the cached kernel (or the one the
// environment names), and orders the kernel modules the guest must load.
//
// It runs on the host at build and test time, never in a guest.
package kernel

import (
	"bytes"
	"compress/gzip"
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"

	"github.com/pierrec/lz4/v4"
)

// payloads are the compressions of a bzImage's payload Decompress knows, by
// the magic their stream starts with: LZ4 legacy frames
// (CONFIG_KERNEL_LZ4, Debian's cloud kernel), zstd (CONFIG_KERNEL_ZSTD,
// gokrazy's kernel) and gzip (CONFIG_KERNEL_GZIP).
var payloads = []struct {
	name       string
	magic      []byte
	decompress func([]byte) ([]byte, error)
}{
	{"lz4", []byte{0x02, 0x21, 0x4c, 0x18}, decompressLZ4},
	{"zstd", []byte{0x28, 0xb5, 0x2f, 0xfd}, decompressTool("zstd")},
	{"gzip", []byte{0x1f, 0x8b, 0x08}, decompressGzip},
}

// xenElfNotePhys32Entry is XEN_ELFNOTE_PHYS32_ENTRY: the note that carries
// the PVH entry point QEMU jumps to when it boots an ELF kernel.
const xenElfNotePhys32Entry = 18

// Decompress reads a bzImage and returns the uncompressed vmlinux. It tries
// every magic of a known compression in the file and keeps the first stream
// that decompresses to an ELF image, since the magic bytes can also occur
// by chance in the setup code before the payload.
func Decompress(bzImage []byte) ([]byte, error) {
	for _, p := range payloads {
		for off := 0; ; off++ {
			i := bytes.Index(bzImage[off:], p.magic)
			if i < 0 {
				break
			}
			off += i
			out, err := p.decompress(bzImage[off:])
			if err == nil && bytes.HasPrefix(out, []byte(elf.ELFMAG)) {
				return out, nil
			}
		}
	}
	return nil, errors.New("no lz4, zstd or gzip compressed ELF payload found")
}

// The decompressors below ignore an error once they have output: the
// kernel's stream is followed by the uncompressed size and the rest of the
// bzImage, which they take for a broken next frame. Check decides whether
// the output is the whole image.

func decompressGzip(b []byte) ([]byte, error) {
	zr, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		return nil, err
	}
	zr.Multistream(false)
	out, _ := io.ReadAll(zr)
	return nonEmpty(out)
}

// decompressTool pipes the stream through an external decompressor (Go's
// standard library has no zstd).
func decompressTool(tool string) func([]byte) ([]byte, error) {
	return func(b []byte) ([]byte, error) {
		cmd := exec.Command(tool, "-dc")
		cmd.Stdin = bytes.NewReader(b)
		out, _ := cmd.Output()
		return nonEmpty(out)
	}
}

func nonEmpty(out []byte) ([]byte, error) {
	if len(out) == 0 {
		return nil, errors.New("no output")
	}
	return out, nil
}

func decompressLZ4(b []byte) ([]byte, error) {
	var out bytes.Buffer
	io.Copy(&out, lz4.NewReader(bytes.NewReader(b)))
	return nonEmpty(out.Bytes())
}

// Check verifies that vmlinux is an x86-64 ELF kernel QEMU can boot through
// its PVH entry point.
func Check(vmlinux []byte) error {
	f, err := elf.NewFile(bytes.NewReader(vmlinux))
	if err != nil {
		return fmt.Errorf("not an ELF image: %w", err)
	}
	if f.Machine != elf.EM_X86_64 {
		return fmt.Errorf("ELF machine is %v, want EM_X86_64", f.Machine)
	}
	for _, p := range f.Progs {
		// A stream cut short still starts with a valid ELF header; the
		// segments tell whether the whole image is there.
		if p.Off+p.Filesz > uint64(len(vmlinux)) {
			return fmt.Errorf("ELF segment at offset %d size %d runs past the image's end (%d bytes): truncated", p.Off, p.Filesz, len(vmlinux))
		}
	}
	for _, p := range f.Progs {
		if p.Type != elf.PT_NOTE {
			continue
		}
		notes, err := io.ReadAll(p.Open())
		if err != nil {
			return fmt.Errorf("read ELF notes: %w", err)
		}
		if hasXenNote(notes, xenElfNotePhys32Entry) {
			return nil
		}
	}
	return errors.New("no PVH entry point (XEN_ELFNOTE_PHYS32_ENTRY): kernel built without CONFIG_PVH")
}

// hasXenNote walks an ELF note segment looking for a "Xen" note of type typ.
func hasXenNote(b []byte, typ uint32) bool {
	align4 := func(n uint32) uint32 { return (n + 3) &^ 3 }
	for len(b) >= 12 {
		namesz := binary.LittleEndian.Uint32(b[0:])
		descsz := binary.LittleEndian.Uint32(b[4:])
		t := binary.LittleEndian.Uint32(b[8:])
		end := 12 + uint64(align4(namesz)) + uint64(align4(descsz))
		if end > uint64(len(b)) {
			return false
		}
		name := b[12 : 12+namesz]
		if t == typ && string(bytes.TrimRight(name, "\x00")) == "Xen" {
			return true
		}
		b = b[end:]
	}
	return false
}

// WriteVmlinux decompresses the bzImage at src into an ELF vmlinux at dst,
// checks it, and replaces dst atomically.
func WriteVmlinux(src, dst string) error {
	bz, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	vmlinux, err := Decompress(bz)
	if err != nil {
		return fmt.Errorf("%s: %w", src, err)
	}
	if err := Check(vmlinux); err != nil {
		return fmt.Errorf("%s: %w", src, err)
	}
	tmp := dst + ".tmp"
	if err := os.WriteFile(tmp, vmlinux, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, dst)
}
