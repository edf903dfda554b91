package router

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestResolvWatch: every way a resolver file changes wakes the watcher,
// and changes to other files do not. No root needed: inotify works in any
// directory the test owns.
func TestResolvWatch(t *testing.T) {
	dir := t.TempDir()
	etc, run := filepath.Join(dir, "etc"), filepath.Join(dir, "run")
	for _, d := range []string{etc, run} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	conf := filepath.Join(etc, "resolv.conf")
	write := func(p, s string) {
		t.Helper()
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(conf, "nameserver 192.0.2.1\n")
	w, err := newResolvWatch()
	if err != nil {
		t.Fatal(err)
	}
	defer w.close()
	woke := make(chan error, 1)
	arm := func() {
		t.Helper()
		if err := w.follow(conf); err != nil {
			t.Fatal(err)
		}
		go func() { woke <- w.wait() }()
	}
	mustWake := func(what string) {
		t.Helper()
		select {
		case err := <-woke:
			if err != nil {
				t.Fatalf("%s: wait: %v", what, err)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: the watcher did not wake", what)
		}
		arm()
	}
	mustNotWake := func(what string) {
		t.Helper()
		select {
		case err := <-woke:
			t.Fatalf("%s: the watcher woke (%v)", what, err)
		case <-time.After(200 * time.Millisecond):
		}
	}
	arm()

	write(filepath.Join(etc, "hosts"), "127.0.0.1 localhost\n")
	mustNotWake("another file in the directory written")

	write(conf, "nameserver 192.0.2.2\n")
	mustWake("written in place")

	tmp := filepath.Join(etc, ".resolv.conf.new")
	write(tmp, "nameserver 192.0.2.3\n")
	mustNotWake("a temporary file written")
	if err := os.Rename(tmp, conf); err != nil {
		t.Fatal(err)
	}
	mustWake("renamed over")

	if err := os.Remove(conf); err != nil {
		t.Fatal(err)
	}
	mustWake("removed")

	// A hard link to a file written elsewhere: created, never written
	// and closed under this name.
	hard := filepath.Join(run, "resolv.conf.hard")
	write(hard, "nameserver 192.0.2.6\n")
	mustNotWake("a file in another directory written")
	if err := os.Link(hard, conf); err != nil {
		t.Fatal(err)
	}
	mustWake("hard link created")
	if err := os.Remove(conf); err != nil {
		t.Fatal(err)
	}
	mustWake("the hard link removed")

	// A symlink into a directory that does not exist yet
	// (NetworkManager's /run/NetworkManager/resolv.conf at boot).
	target := filepath.Join(run, "nm", "resolv.conf")
	if err := os.Symlink(target, conf); err != nil {
		t.Fatal(err)
	}
	mustWake("symlink created")
	if err := os.Mkdir(filepath.Join(run, "nm"), 0o755); err != nil {
		t.Fatal(err)
	}
	mustWake("the target's directory created")
	write(target, "nameserver 192.0.2.4\n")
	mustWake("the target written")
	tmp = filepath.Join(run, "nm", "tmp")
	write(tmp, "nameserver 192.0.2.5\n")
	if err := os.Rename(tmp, target); err != nil {
		t.Fatal(err)
	}
	mustWake("the target renamed over")
	write(filepath.Join(run, "nm", "other"), "x\n")
	mustNotWake("another file beside the target written")

	// Closing ends a blocked wait, as Stop does.
	w.close()
	select {
	case err := <-woke:
		if err == nil {
			t.Fatal("wait returned nil after close, want an error")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("close did not end the wait")
	}
}
