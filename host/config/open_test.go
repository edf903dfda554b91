package config

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// TestOpen loads a VM, changes its directory the way someone who can write
// it could after the load, and opens its files as a launch does: whatever
// leads out of the VM's directory, or is no longer a regular file or a
// kernel, is refused with an error naming the file; what stays inside is
// opened, and the descriptors read what is there now.
func TestOpen(t *testing.T) {
	secret := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(secret, []byte("the host's secret"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name    string
		change  func(t *testing.T, vm string) // vm: the VM's directory
		path    string                        // the file at fault, under the VM's directory ("" for none)
		wantErr error
		image   string // what the image reads when there is no error
	}{
		{name: "unchanged", change: func(*testing.T, string) {}, image: "image"},
		{
			name:   "image rewritten in place",
			change: func(t *testing.T, vm string) { write(t, filepath.Join(vm, "blk/root.img"), "new image") },
			image:  "new image",
		},
		{
			name:   "image replaced by a symlink inside",
			change: func(t *testing.T, vm string) { replace(t, filepath.Join(vm, "blk/root.img"), "-> ../other.img") },
			image:  "other",
		},
		{
			name:    "image replaced by a symlink out",
			change:  func(t *testing.T, vm string) { replace(t, filepath.Join(vm, "blk/root.img"), "-> "+secret) },
			path:    "blk/root.img",
			wantErr: ErrEscape,
		},
		{
			name:    "image replaced by a relative symlink out",
			change:  func(t *testing.T, vm string) { replace(t, filepath.Join(vm, "blk/root.img"), "-> ../../../../"+secret) },
			path:    "blk/root.img",
			wantErr: ErrEscape,
		},
		{
			name: "image replaced by a /proc magic link",
			change: func(t *testing.T, vm string) {
				replace(t, filepath.Join(vm, "blk/root.img"), "-> /proc/self/root"+secret)
			},
			path:    "blk/root.img",
			wantErr: ErrEscape,
		},
		{
			name:    "blk replaced by a symlink out",
			change:  func(t *testing.T, vm string) { replace(t, filepath.Join(vm, "blk"), "-> "+filepath.Dir(secret)) },
			path:    "blk/root.img",
			wantErr: ErrEscape,
		},
		{
			name:    "image replaced by a FIFO",
			change:  func(t *testing.T, vm string) { replace(t, filepath.Join(vm, "blk/root.img"), "FIFO") },
			path:    "blk/root.img",
			wantErr: ErrNotRegular,
		},
		{
			name:    "image removed",
			change:  func(t *testing.T, vm string) { os.Remove(filepath.Join(vm, "blk/root.img")) },
			path:    "blk/root.img",
			wantErr: os.ErrNotExist,
		},
		{
			name:    "kernel replaced by a symlink out",
			change:  func(t *testing.T, vm string) { replace(t, filepath.Join(vm, "vmlinux"), "-> "+secret) },
			path:    "vmlinux",
			wantErr: ErrEscape,
		},
		{
			name:    "kernel no longer ELF",
			change:  func(t *testing.T, vm string) { write(t, filepath.Join(vm, "vmlinux"), "MZ a bzImage now") },
			path:    "vmlinux",
			wantErr: ErrNotELF,
		},
		{
			name:    "initramfs replaced by a symlink out",
			change:  func(t *testing.T, vm string) { replace(t, filepath.Join(vm, "initramfs"), "-> "+secret) },
			path:    "initramfs",
			wantErr: ErrEscape,
		},
		{
			name: "the VM's directory replaced by a symlink",
			change: func(t *testing.T, vm string) {
				if err := os.Rename(vm, vm+".old"); err != nil {
					t.Fatal(err)
				}
				replace(t, vm, "-> "+filepath.Base(vm)+".old")
			},
			path:    "",
			wantErr: syscall.ELOOP,
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			data := filepath.Join(t.TempDir(), "data")
			tree{}.vm("v").add(tree{"v/initramfs": "cpio", "v/other.img": "other"}).build(t, data)
			cfg := Load(data)
			vm := cfg.VMs["v"]
			if vm == nil {
				t.Fatalf("v not loaded: %v", cfg.Errors)
			}
			tt.change(t, vm.Dir)
			for range 2 { // opening twice gives the same answer
				f, err := Open(vm)
				if tt.wantErr != nil {
					if err == nil {
						f.Close()
						t.Fatalf("Open succeeded, want %v", tt.wantErr)
					}
					var ve *VMError
					want := filepath.Join(vm.Dir, tt.path)
					if !errors.Is(err, tt.wantErr) || !errors.As(err, &ve) || ve.VM != "v" || ve.Path != want {
						t.Fatalf("Open = %v, want a *VMError for v at %s wrapping %v", err, want, tt.wantErr)
					}
					if strings.Contains(err.Error(), "the host's secret") {
						t.Errorf("the error shows the secret: %v", err)
					}
					continue
				}
				if err != nil {
					t.Fatalf("Open: %v", err)
				}
				if got := readAll(t, f.Images[0]); got != tt.image {
					t.Errorf("image reads %q, want %q", got, tt.image)
				}
				if got := readAll(t, f.Initramfs); got != "cpio" {
					t.Errorf("initramfs reads %q", got)
				}
				if f.Kernel.Name() != vm.Kernel || f.Images[0].Name() != vm.Images[0] {
					t.Errorf("names %q, %q; want the paths %q, %q", f.Kernel.Name(), f.Images[0].Name(), vm.Kernel, vm.Images[0])
				}
				if err := f.Close(); err != nil {
					t.Error(err)
				}
			}
		})
	}
}

// TestOpenNoInitramfs: a VM without an initramfs gets none.
func TestOpenNoInitramfs(t *testing.T) {
	data := filepath.Join(t.TempDir(), "data")
	tree{}.vm("v").build(t, data)
	f, err := Open(Load(data).VMs["v"])
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if f.Initramfs != nil || len(f.Images) != 1 || f.Kernel == nil {
		t.Errorf("files %+v, want a kernel, one image, no initramfs", f)
	}
}

func write(t *testing.T, p, s string) {
	t.Helper()
	if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}

// replace puts what (a tree value: "-> target", "FIFO") where p is.
func replace(t *testing.T, p, what string) {
	t.Helper()
	if err := os.RemoveAll(p); err != nil {
		t.Fatal(err)
	}
	tree{filepath.Base(p): what}.build(t, filepath.Dir(p))
}

func readAll(t *testing.T, f *os.File) string {
	t.Helper()
	b, err := io.ReadAll(io.NewSectionReader(f, 0, 1<<20))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestOpenReadOnly: every descriptor Open hands on (QEMU gets them) is
// read-only, so a QEMU taken over by its guest cannot change the VM's
// kernel, initramfs or disk images through them.
func TestOpenReadOnly(t *testing.T) {
	data := filepath.Join(t.TempDir(), "data")
	tree{}.vm("v").add(tree{"v/initramfs": "cpio"}).build(t, data)
	f, err := Open(Load(data).VMs["v"])
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, x := range append([]*os.File{f.Kernel, f.Initramfs}, f.Images...) {
		fl, err := unix.FcntlInt(x.Fd(), unix.F_GETFL, 0)
		if err != nil {
			t.Fatal(err)
		}
		if fl&unix.O_ACCMODE != unix.O_RDONLY {
			t.Errorf("%s: open with flags %#o, want read-only", x.Name(), fl)
		}
		if _, err := x.Write([]byte("x")); !errors.Is(err, syscall.EBADF) {
			t.Errorf("%s: a write gives %v, want EBADF", x.Name(), err)
		}
	}
}
