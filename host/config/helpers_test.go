package config

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// minimalELF is the 64-byte header of an x86-64 ELF executable with no
// program or section headers: enough for the loader, which reads headers
// only.
func minimalELF() []byte {
	h := make([]byte, 64)
	copy(h, "\x7fELF")
	h[4], h[5], h[6] = 2, 1, 1                  // ELFCLASS64, ELFDATA2LSB, EV_CURRENT
	binary.LittleEndian.PutUint16(h[16:], 2)    // ET_EXEC
	binary.LittleEndian.PutUint16(h[18:], 0x3e) // EM_X86_64
	binary.LittleEndian.PutUint32(h[20:], 1)    // e_version
	binary.LittleEndian.PutUint16(h[52:], 64)   // e_ehsize
	return h
}

// tree is a directory tree to build: each key is a slash-separated path,
// each value its contents, except:
//
//	"ELF"      a minimal ELF executable
//	"-> T"     a symlink to T
//	"DIR"      an empty directory
//	"FIFO"     a named pipe
type tree map[string]string

func (tr tree) build(t testing.TB, root string) {
	t.Helper()
	if err := os.MkdirAll(root, 0o755); err != nil {
		t.Fatal(err)
	}
	for p, v := range tr {
		full := filepath.Join(root, filepath.FromSlash(p))
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		var err error
		switch {
		case v == "ELF":
			err = os.WriteFile(full, minimalELF(), 0o644)
		case v == "DIR":
			err = os.MkdirAll(full, 0o755)
		case v == "FIFO":
			err = syscall.Mkfifo(full, 0o644)
		case strings.HasPrefix(v, "-> "):
			err = os.Symlink(strings.TrimPrefix(v, "-> "), full)
		default:
			err = os.WriteFile(full, []byte(v), 0o644)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
}

// vm adds a minimal valid VM with the given providers to tr.
func (tr tree) vm(name string, providers ...string) tree {
	tr[name+"/vmlinux"] = "ELF"
	tr[name+"/blk/root.img"] = "image"
	for _, p := range providers {
		tr[name+"/providers/net/"+p] = ""
	}
	return tr
}
