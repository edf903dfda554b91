package initramfs

import (
	"bytes"
	"compress/gzip"
	"errors"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cavaliergopher/cpio"
	"github.com/google/go-cmp/cmp"

	"spectrum-os.org/netcfg/internal/testenv"
)

// gnuArchive makes a real initramfs with GNU cpio (-H newc, as every
// generator does): /init and /bin/sh from a directory.
func gnuArchive(t *testing.T) string {
	t.Helper()
	testenv.Tool(t, "cpio", "GNU cpio makes the archive appended to; make deps installs it")
	dir := t.TempDir()
	if err := errors.Join(
		os.Chmod(dir, 0o755),
		os.Mkdir(filepath.Join(dir, "bin"), 0o755),
		os.WriteFile(filepath.Join(dir, "init"), []byte("#!/bin/sh\nexec /bin/sh\n"), 0o755),
		os.WriteFile(filepath.Join(dir, "bin/sh"), []byte("not really a shell"), 0o755),
	); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "initramfs.cpio")
	cmd := exec.Command("sh", "-c", `find . | LC_ALL=C sort | cpio --quiet -o -H newc -R 0:0 >"$0"`, out)
	cmd.Dir = dir
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("cpio: %v\n%s", err, b)
	}
	return out
}

// readAppended reads the archive Append wrote after the first size bytes,
// independently of List, and returns its files' contents and modes.
func readAppended(t *testing.T, path string, size int64, gz bool) map[string]File {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	start := (size + 3) &^ 3
	if !bytes.Equal(b[size:start], make([]byte, start-size)) {
		t.Fatalf("padding %x, want zeros", b[size:start])
	}
	var r io.Reader = bytes.NewReader(b[start:])
	if gz {
		if r, err = gzip.NewReader(r); err != nil {
			t.Fatal(err)
		}
	}
	cr := cpio.NewReader(r)
	got := map[string]File{}
	for {
		h, err := cr.Next()
		if errors.Is(err, io.EOF) {
			return got
		}
		if err != nil {
			t.Fatal(err)
		}
		data, _ := io.ReadAll(cr)
		got[h.Name] = File{Name: h.Name, Mode: h.FileInfo().Mode(), Data: data}
	}
}

func TestAppend(t *testing.T) {
	agent := bytes.Repeat([]byte("\x7fELF agent "), 1000)
	for _, tt := range []struct {
		name string
		gz   bool
	}{
		{"uncompressed", false},
		{"gzip", true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			path := gnuArchive(t)
			fi, err := os.Stat(path)
			if err != nil {
				t.Fatal(err)
			}
			if err := Append(path, []File{{Name: "/usr/sbin/spectrum-netcfg", Mode: 0o755, Data: agent}}, tt.gz); err != nil {
				t.Fatal(err)
			}
			got := readAppended(t, path, fi.Size(), tt.gz)
			want := map[string]File{
				"usr":                      {Name: "usr", Mode: fs.ModeDir | 0o755, Data: []byte{}},
				"usr/sbin":                 {Name: "usr/sbin", Mode: fs.ModeDir | 0o755, Data: []byte{}},
				"usr/sbin/spectrum-netcfg": {Name: "usr/sbin/spectrum-netcfg", Mode: 0o755, Data: agent},
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("appended archive (-want +got):\n%s", diff)
			}

			// List sees both archives, in order.
			f, err := os.Open(path)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			entries, err := List(f)
			if err != nil {
				t.Fatal(err)
			}
			compress := ""
			if tt.gz {
				compress = "gzip"
			}
			wantList := []Entry{
				{Name: ".", Mode: fs.ModeDir | 0o755},
				{Name: "bin", Mode: fs.ModeDir | 0o755},
				{Name: "bin/sh", Mode: 0o755, Size: 18},
				{Name: "init", Mode: 0o755, Size: 23},
				{Name: "usr", Mode: fs.ModeDir | 0o755, Segment: 1, Compress: compress},
				{Name: "usr/sbin", Mode: fs.ModeDir | 0o755, Segment: 1, Compress: compress},
				{Name: "usr/sbin/spectrum-netcfg", Mode: 0o755, Size: int64(len(agent)), Segment: 1, Compress: compress},
			}
			if diff := cmp.Diff(wantList, entries); diff != "" {
				t.Errorf("List (-want +got):\n%s", diff)
			}
		})
	}
}

// TestAppendPads: after a compressed archive of any length, the appended
// archive starts at a multiple of 4 bytes, which the kernel requires of an
// uncompressed archive.
func TestAppendPads(t *testing.T) {
	for n := 0; n < 4; n++ {
		var b bytes.Buffer
		zw := gzip.NewWriter(&b)
		Write(zw, []File{{Name: "init", Mode: 0o755, Data: []byte("x")}})
		zw.Close()
		path := filepath.Join(t.TempDir(), "initramfs")
		base := append(b.Bytes(), bytes.Repeat([]byte{0}, n)...)
		if err := os.WriteFile(path, base, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := Append(path, []File{{Name: "usr/sbin/spectrum-netcfg", Mode: 0o755, Data: []byte("agent")}}, false); err != nil {
			t.Fatal(err)
		}
		got := readAppended(t, path, int64(len(base)), false)
		if f := got["usr/sbin/spectrum-netcfg"]; f.Mode != 0o755 || string(f.Data) != "agent" {
			t.Errorf("base of %d bytes: agent %+v", len(base), f)
		}
		f, _ := os.Open(path)
		entries, err := List(f)
		f.Close()
		if err != nil || len(entries) != 4 || entries[0].Compress != "gzip" || entries[3].Segment != 1 {
			t.Errorf("base of %d bytes: List = %+v, %v", len(base), entries, err)
		}
	}
}

func TestAppendRefuses(t *testing.T) {
	dir := t.TempDir()
	if err := Append(filepath.Join(dir, "missing"), nil, false); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing initramfs: %v, want ErrNotExist", err)
	}
	if err := Append(dir, nil, false); err == nil {
		t.Errorf("a directory as initramfs: no error")
	}
	for _, name := range []string{"", "/", "..", "../etc/passwd"} {
		if err := Write(io.Discard, []File{{Name: name}}); err == nil {
			t.Errorf("Write of %q: no error", name)
		}
	}
}

func TestListRefusesUnknown(t *testing.T) {
	zstd := []byte{0x28, 0xb5, 0x2f, 0xfd, 0, 0, 0, 0}
	if _, err := List(bytes.NewReader(zstd)); err == nil {
		t.Error("List of a zstd archive: no error")
	}
	if _, err := List(bytes.NewReader([]byte("garbage"))); err == nil {
		t.Error("List of garbage: no error")
	}
	// A newc archive one byte in: the kernel would try to decompress it.
	var b bytes.Buffer
	b.WriteByte(0)
	Write(&b, []File{{Name: "init", Data: []byte("x")}})
	if _, err := List(&b); err == nil || !strings.Contains(err.Error(), "multiple of 4") {
		t.Errorf("List of a misaligned archive: %v, want an error about alignment", err)
	}
}
