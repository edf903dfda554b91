package daemon

import (
	"bytes"
	"errors"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"spectrum-os.org/netcfg/host/alloc"
	"spectrum-os.org/netcfg/host/config"
	"spectrum-os.org/netcfg/internal/syncbuf"
	"spectrum-os.org/netcfg/internal/testenv"
)

// allocLinks is the configuration of staticLinks with link ids from a real
// allocator, so the state file is written as spectrumd writes it.
type allocLinks struct {
	vms map[string][]string
	al  *alloc.Allocator
}

func (s allocLinks) Load(held []alloc.Link) (*config.Config, []alloc.Link, error) {
	cfg, _, _ := staticLinks{vms: s.vms}.Load(nil)
	links, err := s.al.Sync(alloc.Pairs(cfg), held)
	return cfg, links, err
}

// TestStateDirFaults runs itself again in a private mount namespace, where
// it mounts a tiny tmpfs as the state directory and makes it read-only and
// full: things root cannot be stopped from doing by file modes.
func TestStateDirFaults(t *testing.T) {
	dir := os.Getenv("SPECTRUM_STATEDIR_CHILD")
	if dir == "" {
		testenv.Root(t, "to mount a tmpfs in a private mount namespace")
		self, err := os.Executable()
		if err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(self, "-test.run=^TestStateDirFaults$", "-test.v")
		cmd.Env = append(os.Environ(), "SPECTRUM_STATEDIR_CHILD="+t.TempDir())
		cmd.SysProcAttr = &syscall.SysProcAttr{Unshareflags: syscall.CLONE_NEWNS}
		out, err := cmd.CombinedOutput()
		t.Logf("in a private mount namespace:\n%s", out)
		if err != nil || !bytes.Contains(out, []byte("--- PASS: TestStateDirFaults")) {
			t.Fatalf("run in a private mount namespace: %v", err)
		}
		return
	}
	// Here in the private mount namespace.
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size=64k,mode=0700"); err != nil {
		t.Fatalf("mount tmpfs on %s: %v", dir, err)
	}
	defer unix.Unmount(dir, unix.MNT_DETACH)
	statePath := filepath.Join(dir, alloc.StateFile)
	var logBuf syncbuf.Buffer
	log := slog.New(slog.NewTextHandler(&logBuf, nil))
	al, err := alloc.Open(dir, log)
	if err != nil {
		t.Fatal(err)
	}
	vms := map[string][]string{"net": nil, "a": {"net"}}
	d, vmm, nw := newTestDaemon(t, nil, func(o *Options, _ *fakeVMM) {
		o.State, o.Log, o.Links = dir, log, allocLinks{vms: vms, al: al}
	})
	if err := d.Start("a"); err != nil {
		t.Fatal(err)
	}
	good, err := os.ReadFile(statePath)
	if err != nil {
		t.Fatal(err)
	}
	idA, _ := d.LinkID("a", "net")

	// stillFine checks that a failed start left the others running and
	// the state file as it was, with no temporary file behind.
	stillFine := func(t *testing.T, err error, want string) {
		t.Helper()
		if err == nil {
			t.Fatal("start of b succeeded")
		}
		if !strings.Contains(err.Error(), statePath) || !strings.Contains(err.Error(), want) {
			t.Errorf("start of b: %v; want an error naming %s and saying %q", err, statePath, want)
		}
		for _, n := range []string{"net", "a"} {
			if st, _ := d.Status(n); st.State != "running" {
				t.Errorf("%s is %s after the failed start, want running", n, st.State)
			}
		}
		if st, _ := d.Status("b"); st.State == "running" {
			t.Errorf("b is running")
		}
		if got, _ := os.ReadFile(statePath); !bytes.Equal(got, good) {
			t.Errorf("state file changed:\n%s\nwant\n%s", got, good)
		}
		if left, _ := filepath.Glob(filepath.Join(dir, ".*tmp*")); len(left) > 0 {
			t.Errorf("temporary files left: %v", left)
		}
		if id, _ := d.LinkID("a", "net"); id != idA {
			t.Errorf("a's link id changed from %s to %s", idA, id)
		}
		if got := vmm.inst("net").NICs(); len(got) != 1 || nw.count() != 1 {
			t.Errorf("net has NICs %v and %d links exist, want the one of a", got, nw.count())
		}
	}

	vms["b"] = []string{"net"}
	t.Run("read-only", func(t *testing.T) {
		// A read-only bind mount stacked on the state directory: the
		// daemon's open log files keep the tmpfs itself busy (it cannot
		// be remounted read-only), but every new open goes through the
		// top mount.
		if err := unix.Mount(dir, dir, "", unix.MS_BIND, ""); err != nil {
			t.Fatal(err)
		}
		defer unix.Unmount(dir, 0)
		if err := unix.Mount("", dir, "", unix.MS_REMOUNT|unix.MS_BIND|unix.MS_RDONLY, ""); err != nil {
			t.Fatal(err)
		}
		err := d.Start("b")
		t.Logf("start b on a read-only state directory: %v", err)
		stillFine(t, err, "read-only file system")
	})
	t.Run("full", func(t *testing.T) {
		filler := filepath.Join(dir, "filler")
		f, err := os.Create(filler)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.Write(make([]byte, 1<<20)); !errors.Is(err, syscall.ENOSPC) {
			t.Fatalf("filling the tmpfs: %v", err)
		}
		f.Close()
		defer os.Remove(filler)
		err = d.Start("b")
		t.Logf("start b on a full state directory: %v", err)
		stillFine(t, err, "no space left on device")
	})
	t.Run("recovers", func(t *testing.T) {
		if err := d.Start("b"); err != nil {
			t.Fatalf("start b once the state directory is usable again: %v", err)
		}
		if got, _ := os.ReadFile(statePath); !bytes.Contains(got, []byte(`"client":"b"`)) {
			t.Errorf("state file does not hold b's link:\n%s", got)
		}
	})
	t.Run("truncated mid-write", func(t *testing.T) {
		if err := d.StopAll(); err != nil {
			t.Fatal(err)
		}
		whole, _ := os.ReadFile(statePath)
		// A crash mid-save leaves a partial temporary file; a disk that
		// lies about fsync can leave the state file itself cut short.
		os.WriteFile(filepath.Join(dir, "."+alloc.StateFile+".tmp-4242"), whole[:len(whole)/3], 0o600)
		os.WriteFile(statePath, whole[:len(whole)/2], 0o600)
		logBuf = syncbuf.Buffer{}
		al2, err := alloc.Open(dir, log)
		if err != nil {
			t.Fatalf("open a truncated state file: %v", err)
		}
		d2, _, _ := newTestDaemon(t, nil, func(o *Options, _ *fakeVMM) {
			o.State, o.Log, o.Links = dir, log, allocLinks{vms: vms, al: al2}
		})
		if err := d2.Start("b"); err != nil {
			t.Fatalf("start after a truncated state file: %v", err)
		}
		if !strings.Contains(logBuf.String(), "corrupt") || !strings.Contains(logBuf.String(), statePath) {
			t.Errorf("no warning naming the corrupt state file:\n%s", logBuf.String())
		}
		if got, _ := os.ReadFile(statePath + ".corrupt"); !bytes.Equal(got, whole[:len(whole)/2]) {
			t.Errorf("truncated file not kept aside as %s.corrupt", alloc.StateFile)
		}
		if left, _ := filepath.Glob(filepath.Join(dir, ".*tmp*")); len(left) > 0 {
			t.Errorf("temporary files left: %v", left)
		}
		if _, err := alloc.Open(dir, slog.New(slog.NewTextHandler(io.Discard, nil))); err != nil {
			t.Error(err)
		}
	})
}
