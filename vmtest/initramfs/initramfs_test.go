package initramfs

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/cavaliergopher/cpio"
	"github.com/google/go-cmp/cmp"

	"spectrum-os.org/netcfg/vmtest/kernel"
)

func TestWrite(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	b, err := Bytes(Spec{
		Init:  write("init", "INIT"),
		Agent: write("agent", "AGENT"),
		Modules: []kernel.Module{
			{Name: "virtio", Path: write("virtio.ko", "V")},
			{Name: "virtio_net", Path: write("virtio_net.ko", "VN")},
		},
		Files: []File{
			{Path: "/etc/resolv.conf", Data: []byte("nameserver 100.127.255.53\n")},
			{Path: "usr/lib/x/libz.so.1", Mode: 0o755, Src: write("libz", "Z")},
			{Path: "bin/sh", Link: "/bin/busybox"},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	type entry struct {
		Mode    cpio.FileMode
		Content string
	}
	got := map[string]entry{}
	var dirs []string
	r := cpio.NewReader(bytes.NewReader(b))
	for {
		h, err := r.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		c, _ := io.ReadAll(r)
		if h.Mode.IsDir() {
			dirs = append(dirs, h.Name)
			continue
		}
		if h.Linkname != "" {
			c = []byte("-> " + h.Linkname)
		}
		got[h.Name] = entry{h.Mode, string(c)}
	}
	want := map[string]entry{
		"init":                      {cpio.TypeReg | 0o755, "INIT"},
		"bin/spectrum-netcfg":       {cpio.TypeReg | 0o755, "AGENT"},
		"lib/modules/virtio.ko":     {cpio.TypeReg | 0o644, "V"},
		"lib/modules/virtio_net.ko": {cpio.TypeReg | 0o644, "VN"},
		"lib/modules/order":         {cpio.TypeReg | 0o644, "virtio\nvirtio_net\n"},
		"etc/resolv.conf":           {cpio.TypeReg | 0o644, "nameserver 100.127.255.53\n"},
		"usr/lib/x/libz.so.1":       {cpio.TypeReg | 0o755, "Z"},
		"bin/sh":                    {cpio.TypeSymlink | 0o777, "-> /bin/busybox"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("archive (-want +got):\n%s", diff)
	}
	// Each directory once, before what it holds (the kernel makes no
	// parent directory itself).
	wantDirs := []string{"bin", "dev", "proc", "sys", "lib", "lib/modules", "etc", "tmp", "root", "usr", "usr/lib", "usr/lib/x"}
	if diff := cmp.Diff(wantDirs, dirs); diff != "" {
		t.Errorf("directories (-want +got):\n%s", diff)
	}
}
