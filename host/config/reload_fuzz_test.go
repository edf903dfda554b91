package config

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// mutate makes one change to the tree under data, chosen by op and arg:
// what buildFuzzTree adds (kernels, images, providers, uplinks, symlinks in
// and out, cmdlines, VMs symlinked to others, removed VMs), entries
// spectrumd does not know, and what takes away or changes in place.
func mutate(data string, op, arg byte) {
	vm := filepath.Join(data, fuzzNames[int(arg)%len(fuzzNames)])
	other := fuzzNames[(int(arg)/len(fuzzNames))%len(fuzzNames)]
	img := fuzzImages[int(arg)%len(fuzzImages)]
	switch op % 24 {
	case 12:
		os.Remove(filepath.Join(vm, []string{"cmdline", "vmlinux", "initramfs", "blk", "providers"}[arg%5]))
	case 13:
		os.Remove(filepath.Join(vm, "blk", img))
	case 14:
		os.Remove(filepath.Join(vm, "providers", "net", other))
	case 15:
		os.Rename(filepath.Join(vm, "blk", img), filepath.Join(vm, "blk", img+".raw"))
	case 16:
		// Rewrite a file in place, keeping its size and mtime.
		p := filepath.Join(vm, []string{"vmlinux", "cmdline", "real/kernel", "uplinks/net/br0"}[arg%4])
		fi, err := os.Stat(p)
		if err != nil || !fi.Mode().IsRegular() || fi.Size() == 0 {
			return
		}
		f, err := os.OpenFile(p, os.O_WRONLY, 0)
		if err != nil {
			return
		}
		f.WriteAt([]byte{"\n\x00x\x7f"[arg%4]}, int64(arg)%fi.Size())
		f.Close()
		os.Chtimes(p, fi.ModTime(), fi.ModTime())
	case 17:
		// Retarget a symlink, or put one in place of a file.
		p := filepath.Join(vm, []string{"vmlinux", "blk", "providers/net", "real"}[arg%4])
		os.Remove(p + ".new")
		os.Symlink([]string{"real/kernel", "../" + other, "x", "../../outside"}[(arg/4)%4], p+".new")
		os.Rename(p+".new", p)
	case 18:
		os.Rename(vm, filepath.Join(data, other))
	case 19:
		os.Chmod(filepath.Join(vm, "vmlinux"), os.FileMode(0o644&^(int(arg)%2*0o444)))
	case 22, 23:
		// An entry spectrumd does not know, in the VM's directory or one
		// of its own: a warning, never an error.
		p := filepath.Join(vm, []string{"provider/net/" + other, "providers/nett", "uplinks/pcie", "vmlinuz", "blk/disk.raw", "provider/" + other, "x/y/z", "uplinks/" + other}[arg%8])
		os.MkdirAll(filepath.Dir(p), 0o755)
		if op%24 == 22 {
			os.WriteFile(p, nil, 0o644)
		} else {
			os.Mkdir(p, 0o755)
		}
	case 20, 21:
		buildFuzzTree(data, []byte{op - 8, arg}) // the uplinks' operations
	default:
		buildFuzzTree(data, []byte{op, arg})
	}
}

// checkMutations applies the changes in b (pairs of op, arg) one at a time
// and after each checks that a Loader's reload gives what a fresh Load does.
func checkMutations(t *testing.T, b []byte) {
	dir := t.TempDir()
	probe := filepath.Join(dir, "probe")
	os.Mkdir(probe, 0o755)
	data := filepath.Join(dir, "data")
	os.MkdirAll(data, 0o755)
	l := testLoader(data)
	for i := 0; len(b) >= 2; b, i = b[2:], i+1 {
		mutate(data, b[0], b[1])
		got, want := l.Load(), Load(data)
		if diff := cmp.Diff(want, got, sameErrors); diff != "" {
			t.Fatalf("after change %d (op %d, arg %d), reload differs from a fresh Load (-want +got):\n%s", i, b[0]%24, b[1], diff)
		}
		// The next change must not fall in the clock tick of this load's
		// look at the files (see settle).
		settle(t, probe)
	}
}

func FuzzLoaderReload(f *testing.F) {
	// Build a valid pair, then break and mend it.
	f.Add([]byte{0, 3, 2, 3, 0, 4, 2, 4, 3, 34, 16, 3, 12, 3, 6, 3, 14, 34, 3, 34, 17, 4, 18, 3})
	// Symlinks in and out, retargeted.
	f.Add([]byte{4, 0, 2, 0, 17, 0, 17, 4, 17, 12, 5, 1, 16, 2, 17, 1, 9, 11, 10, 1})
	f.Add([]byte{0, 0, 2, 0, 0, 1, 2, 1, 3, 10, 3, 1, 14, 10, 15, 0, 13, 0, 2, 7, 19, 1, 19, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) > 100 {
			return // each change costs a clock tick; longer finds nothing new
		}
		checkMutations(t, b)
	})
}

// TestLoaderRandomMutations runs random sequences of changes, the same ones
// FuzzLoaderReload makes, from fixed seeds.
func TestLoaderRandomMutations(t *testing.T) {
	n := 30
	if testing.Short() {
		n = 5
	}
	for seed := range uint64(n) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			t.Parallel()
			r := rand.New(rand.NewPCG(seed, 0))
			// Start from three valid VMs, a, b and c, and change mostly
			// them, so that changes pile up on VMs that are valid.
			b := []byte{0, 0, 2, 0, 0, 1, 2, 1, 0, 2, 2, 2}
			for range 60 {
				b = append(b, byte(r.IntN(256)), byte(r.IntN(26)*10+r.IntN(3)))
			}
			checkMutations(t, b)
		})
	}
}
