package config

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// sameErrors compares errors by their text: a reload and a fresh Load build
// their own error values.
var sameErrors = cmp.Comparer(func(a, b error) bool { return a.Error() == b.Error() })

// settle returns once the file system's clock under dir has moved past every
// time stamp it has given so far, so that a change made after settle returns
// gets a ctime that no status taken before it holds. Without it a test could
// change a file within the clock tick of the loader's last look at it: the
// race that racyWindow covers in production, and which these tests switch
// off (window 0) to test the fingerprint alone.
func settle(t testing.TB, dir string) {
	t.Helper()
	ctime := func(p string) int64 {
		if err := os.WriteFile(p, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		var st syscall.Stat_t
		if err := syscall.Stat(p, &st); err != nil {
			t.Fatal(err)
		}
		os.Remove(p)
		return st.Ctim.Nano()
	}
	ref := ctime(filepath.Join(dir, "settle-ref"))
	for i := 0; ; i++ {
		if ctime(filepath.Join(dir, fmt.Sprintf("settle-%d", i))) > ref {
			return
		}
		time.Sleep(time.Millisecond)
	}
}

// testLoader is a Loader that trusts every fingerprint, however recent: the
// tests settle the clock instead (see settle).
func testLoader(data string) *Loader {
	l := NewLoader(data)
	l.window = 0
	return l
}

// checkReload loads data with l and fresh, and fails unless both agree.
func checkReload(t *testing.T, l *Loader, data string) *Config {
	t.Helper()
	got, want := l.Load(), Load(data)
	if diff := cmp.Diff(want, got, sameErrors); diff != "" {
		t.Fatalf("reload differs from a fresh Load (-want +got):\n%s", diff)
	}
	return got
}

func TestLoaderMatchesLoad(t *testing.T) {
	write := func(rel, body string) func(t *testing.T, data string) {
		return func(t *testing.T, data string) {
			t.Helper()
			p := filepath.Join(data, rel)
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	remove := func(rel string) func(t *testing.T, data string) {
		return func(t *testing.T, data string) {
			t.Helper()
			if err := os.RemoveAll(filepath.Join(data, rel)); err != nil {
				t.Fatal(err)
			}
		}
	}
	rename := func(from, to string) func(t *testing.T, data string) {
		return func(t *testing.T, data string) {
			t.Helper()
			if err := os.Rename(filepath.Join(data, from), filepath.Join(data, to)); err != nil {
				t.Fatal(err)
			}
		}
	}
	symlink := func(rel, target string) func(t *testing.T, data string) {
		return func(t *testing.T, data string) {
			t.Helper()
			p := filepath.Join(data, rel)
			// Replace it the way tools do: a new symlink renamed over the old.
			if err := os.Symlink(target, p+".new"); err != nil {
				t.Fatal(err)
			}
			if err := os.Rename(p+".new", p); err != nil {
				t.Fatal(err)
			}
		}
	}
	// inPlace overwrites the start of a file without changing its size, and
	// sets its mtime back: only the ctime tells.
	inPlace := func(rel, body string) func(t *testing.T, data string) {
		return func(t *testing.T, data string) {
			t.Helper()
			p := filepath.Join(data, rel)
			fi, err := os.Stat(p)
			if err != nil {
				t.Fatal(err)
			}
			f, err := os.OpenFile(p, os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := f.WriteAt([]byte(body), 0); err != nil {
				t.Fatal(err)
			}
			f.Close()
			if err := os.Chtimes(p, fi.ModTime(), fi.ModTime()); err != nil {
				t.Fatal(err)
			}
			if after, err := os.Stat(p); err != nil || after.Size() != fi.Size() || !after.ModTime().Equal(fi.ModTime()) {
				t.Fatalf("size or mtime changed: %v", err)
			}
		}
	}
	base := func() tree {
		return tree{}.vm("net").vm("v", "net").vm("w", "net", "v").vm("../elsewhere/s", "net").vm("other").add(tree{
			"v/cmdline":             "console=ttyS0\n",
			"v/blk/data.img":        "x",
			"w/real/kernel":         "ELF",
			"w/vmlinux":             "-> real/kernel",
			"w/deep/a/kernel":       "ELF",
			"w/deep/link":           "-> a",
			"w/blk/root.img":        "x",
			"s":                     "-> ../elsewhere/s",
			"outside":               "ELF",
			"../elsewhere/t/kernel": "ELF",
		})
	}
	for _, tt := range []struct {
		name   string
		tree   tree // added to base()
		change func(t *testing.T, data string)
		reread int // VM directories the reload must read again (the others must be kept)
	}{
		{name: "nothing", change: func(*testing.T, string) {}, reread: 0},
		{name: "cmdline content", change: write("v/cmdline", "quiet\n"), reread: 1},
		{name: "cmdline content of the same size", change: write("v/cmdline", "CONSOLE=TTYS0\n"), reread: 1},
		{name: "cmdline made invalid", change: write("v/cmdline", "a\nb\n"), reread: 1},
		{name: "cmdline removed", change: remove("v/cmdline"), reread: 1},
		{name: "cmdline added", change: write("net/cmdline", "quiet"), reread: 1},
		{name: "initramfs added", change: write("v/initramfs", "cpio"), reread: 1},
		{name: "initramfs added as a directory", change: func(t *testing.T, data string) { os.Mkdir(filepath.Join(data, "v", "initramfs"), 0o755) }, reread: 1},
		{name: "vmlinux replaced by non-ELF", change: func(t *testing.T, data string) {
			write("v/vmlinux.new", "MZ a bzImage")(t, data)
			rename("v/vmlinux.new", "v/vmlinux")(t, data)
		}, reread: 1},
		{name: "vmlinux changed in place keeping size and mtime", change: inPlace("v/vmlinux", "\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x01\x00"), reread: 1},
		{name: "vmlinux made unreadable", change: func(t *testing.T, data string) { os.Chmod(filepath.Join(data, "v", "vmlinux"), 0) }, reread: 1},
		{name: "symlinked vmlinux's target changed in place", change: inPlace("w/real/kernel", "MZ"), reread: 1},
		{name: "symlinked vmlinux's target replaced", change: write("w/real/kernel", "not ELF"), reread: 1},
		{name: "vmlinux symlink retargeted outside", change: symlink("w/vmlinux", "../outside"), reread: 1},
		{name: "vmlinux symlink retargeted inside", change: symlink("w/vmlinux", "deep/link/kernel"), reread: 1},
		{name: "directory on a symlink's path retargeted", tree: tree{"w/vmlinux": "-> deep/link/kernel", "w/deep/b/kernel": "not ELF"},
			change: symlink("w/deep/link", "b"), reread: 1},
		{name: "directory on a symlink's path retargeted outside", tree: tree{"w/vmlinux": "-> deep/link/kernel", "w/deep/b/kernel": "not ELF"},
			change: symlink("w/deep/link", "../../../elsewhere/t"), reread: 1},
		{name: "image added", change: write("v/blk/more.img", "x"), reread: 1},
		{name: "image removed", change: remove("v/blk/data.img"), reread: 1},
		{name: "last image removed", change: func(t *testing.T, data string) {
			remove("net/blk/root.img")(t, data)
		}, reread: 1},
		{name: "image renamed to non-.img", change: rename("v/blk/data.img", "v/blk/data.raw"), reread: 1},
		{name: "only image renamed to non-.img", change: rename("net/blk/root.img", "net/blk/root.raw"), reread: 1},
		{name: "image content changed: nothing to read", change: write("v/blk/data.img", "changed"), reread: 0},
		{name: "image replaced by a directory", change: func(t *testing.T, data string) {
			remove("v/blk/data.img")(t, data)
			os.Mkdir(filepath.Join(data, "v", "blk", "data.img"), 0o755)
		}, reread: 1},
		{name: "image symlink retargeted outside", tree: tree{"v/blk/l.img": "-> data.img"}, change: symlink("v/blk/l.img", "../../outside"), reread: 1},
		{name: "blk replaced by a symlink", tree: tree{"v/disks/a.img": "x"}, change: func(t *testing.T, data string) {
			remove("v/blk")(t, data)
			symlink("v/blk", "disks")(t, data)
		}, reread: 1},
		{name: "provider file added", change: write("other/providers/net/net", ""), reread: 1},
		{name: "provider added to an existing providers/net", change: write("w/providers/net/other", ""), reread: 1},
		{name: "provider file removed", change: remove("w/providers/net/v"), reread: 1},
		{name: "provider added that closes a cycle", change: write("net/providers/net/w", ""), reread: 1},
		{name: "provider naming no VM", change: write("v/providers/net/ghost", ""), reread: 1},
		{name: "providers/net replaced by a file", change: func(t *testing.T, data string) {
			remove("v/providers/net")(t, data)
			write("v/providers/net", "")(t, data)
		}, reread: 1},
		{name: "provider VM directory removed", change: remove("net"), reread: 0},
		{name: "provider VM directory added back", tree: tree{"v/providers/net/ghost": ""}, change: func(t *testing.T, data string) {
			tree{}.vm("ghost").build(t, data)
		}, reread: 1},
		{name: "unknown entry added", change: write("v/provider/net/net", ""), reread: 1},
		{name: "entry added in an unknown directory", tree: tree{"v/provider/x": ""}, change: write("v/provider/net", ""), reread: 1},
		{name: "entry added deeper in an unknown directory: not read", tree: tree{"v/provider/net/a": ""}, change: write("v/provider/net/b", ""), reread: 0},
		{name: "unknown entry added to providers/", change: write("v/providers/nett", ""), reread: 1},
		{name: "unknown entry added to uplinks/", tree: tree{"v/uplinks/net": "DIR"}, change: write("v/uplinks/nett", ""), reread: 1},
		{name: "unknown entry renamed to a known one", tree: tree{"v/provider/net/net": ""}, change: rename("v/provider", "v/providers2"), reread: 1},
		{name: "non-.img file added to blk", change: write("v/blk/disk.raw", "x"), reread: 1},
		{name: "VM directory removed", change: remove("other"), reread: 0},
		{name: "VM directory added", change: func(t *testing.T, data string) { tree{}.vm("new", "net").build(t, data) }, reread: 1},
		{name: "VM directory renamed", change: rename("other", "renamed"), reread: 1},
		{name: "VM directory renamed to an unsafe name", change: rename("other", "a,b"), reread: 1},
		{name: "VM directory replaced by a copy", change: func(t *testing.T, data string) {
			rename("other", "gone")(t, data)
			tree{}.vm("other").add(tree{"other/cmdline": "quiet"}).build(t, data)
			remove("gone")(t, data)
		}, reread: 1},
		{name: "VM directory symlink retargeted", change: symlink("s", "../elsewhere/t"), reread: 1},
		{name: "VM directory symlink's target changed", change: write("../elsewhere/s/cmdline", "quiet"), reread: 1},
		{name: "VM directory symlink to another VM", change: symlink("s", "other"), reread: 1},
		{name: "VM directory symlink's target made shared", change: func(t *testing.T, data string) {
			os.Symlink("../elsewhere/s", filepath.Join(data, "s2"))
		}, reread: 1},
		{name: "VM directory replaced by a file", change: func(t *testing.T, data string) {
			remove("other")(t, data)
			write("other", "x")(t, data)
		}, reread: 0},
		{name: "data directory retargeted", change: func(t *testing.T, data string) {
			// data is a symlink to data.real (see below): point it to a
			// copy, in which every path differs.
			base().build(t, data+".copy")
			symlinkAbs(t, data+".copy", data)
		}, reread: 5},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			probe := filepath.Join(dir, "probe")
			os.Mkdir(probe, 0o755)
			// The data directory is a symlink, so that one case can
			// retarget it.
			data := filepath.Join(dir, "root", "data")
			tr := base().add(tt.tree)
			tr.build(t, data+".real")
			symlinkAbs(t, data+".real", data)
			settle(t, probe)
			l := testLoader(data)
			if first := checkReload(t, l, data); len(first.Order) < 3 {
				t.Fatalf("the tree is broken: valid %v, errors %v", first.Order, first.Errors)
			}
			if l.validated != 5 {
				t.Errorf("first load read %d VM directories, want 5", l.validated)
			}
			settle(t, probe)
			tt.change(t, data)
			checkReload(t, l, data)
			if l.validated != tt.reread {
				t.Errorf("reload read %d VM directories again, want %d", l.validated, tt.reread)
			}
			settle(t, probe)
			checkReload(t, l, data)
			if l.validated > tt.reread {
				t.Errorf("second reload read %d VM directories again, want at most %d", l.validated, tt.reread)
			}
		})
	}
}

// symlinkAbs makes link a symlink to target, replacing what was there.
func symlinkAbs(t *testing.T, target, link string) {
	t.Helper()
	os.Remove(link + ".new")
	if err := os.Symlink(target, link+".new"); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(link+".new", link); err != nil {
		t.Fatal(err)
	}
}

// TestLoaderRacyWindow checks that a VM directory changed too recently to
// trust its fingerprint is read again on every reload until it is older.
func TestLoaderRacyWindow(t *testing.T) {
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	tree{}.vm("a").vm("b", "a").build(t, data)
	l := NewLoader(data)
	for i := range 3 {
		checkReload(t, l, data)
		if l.validated != 2 {
			t.Errorf("load %d read %d VM directories, want 2: all changed within %v", i, l.validated, l.window)
		}
	}
	l.window = 0
	checkReload(t, l, data) // fingerprints kept from now on
	checkReload(t, l, data)
	if l.validated != 0 {
		t.Errorf("read %d VM directories, want 0", l.validated)
	}
	l.window = time.Hour // a VM changed in the last hour is read again
	settle(t, dir)
	if err := os.WriteFile(filepath.Join(data, "a", "cmdline"), []byte("quiet"), 0o644); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		checkReload(t, l, data)
		if l.validated != 1 {
			t.Errorf("read %d VM directories, want 1", l.validated)
		}
	}
}

// TestLoaderRereadsFailures checks that a VM rejected for a reason outside
// its files (here a permission, which root does not need) is read again on
// every reload rather than kept.
func TestLoaderRereadsFailures(t *testing.T) {
	data := filepath.Join(t.TempDir(), "data")
	tree{}.vm("a").vm("b").build(t, data)
	if err := os.Chmod(filepath.Join(data, "a", "vmlinux"), 0); err != nil {
		t.Fatal(err)
	}
	l := testLoader(data)
	checkReload(t, l, data)
	checkReload(t, l, data)
	want := 1
	if os.Geteuid() == 0 {
		want = 0 // root reads it: both VMs are valid and kept
	}
	if l.validated != want {
		t.Errorf("read %d VM directories again, want %d", l.validated, want)
	}
}

func TestLoaderMissingDataDir(t *testing.T) {
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	l := testLoader(data)
	checkReload(t, l, data)
	tree{}.vm("a").build(t, data)
	checkReload(t, l, data)
	os.RemoveAll(data)
	checkReload(t, l, data)
}

// TestLoaderConcurrent runs Loads at once (with -race it checks the
// locking) while a VM changes.
func TestLoaderConcurrent(t *testing.T) {
	data := filepath.Join(t.TempDir(), "data")
	tree{}.vm("a").vm("b", "a").vm("c", "b").build(t, data)
	l := NewLoader(data)
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Go(func() {
			for j := range 20 {
				cfg := l.Load()
				if len(cfg.Order)+len(cfg.Errors) != 3 {
					t.Errorf("loader %d, load %d: %v %v", i, j, cfg.Order, cfg.Errors)
				}
			}
		})
	}
	for j := range 20 {
		os.WriteFile(filepath.Join(data, "b", "cmdline"), []byte(fmt.Sprint(j)), 0o644)
	}
	wg.Wait()
	checkReload(t, l, data)
}
