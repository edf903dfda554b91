package cli

import (
	"bytes"
	"path/filepath"
	"strings"
	"testing"
)

// TestServeBadVMUIDs: a -vm-uids that is empty, holds root or nobody, or is
// not a range stops serve before it touches anything: QEMU never falls back
// to spectrumd's own user.
func TestServeBadVMUIDs(t *testing.T) {
	for _, r := range []string{"", "0-99", "1000", "2000-1000", "60000-70000", "x-y", "4294967000-4294967295"} {
		t.Run(r, func(t *testing.T) {
			dir := t.TempDir()
			var stderr bytes.Buffer
			err := Serve([]string{"-data", dir, "-state", filepath.Join(dir, "state"), "-run", filepath.Join(dir, "run"),
				"-vm-uids", r}, &stderr, &stderr)
			if err == nil || !strings.Contains(err.Error(), "-vm-uids") {
				t.Fatalf("Serve -vm-uids %q = %v, want an error naming -vm-uids", r, err)
			}
			if m, _ := filepath.Glob(filepath.Join(dir, "*")); len(m) != 0 {
				t.Errorf("serve created %v before refusing", m)
			}
		})
	}
}

// TestServeVMUIDsHeld: a -vm-uids range that users of this host hold
// (Debian's daemon, bin and sys have uids 1-3) stops serve before it
// touches anything, naming the file, line and user.
func TestServeVMUIDsHeld(t *testing.T) {
	dir := t.TempDir()
	var stderr bytes.Buffer
	err := Serve([]string{"-data", dir, "-state", filepath.Join(dir, "state"), "-run", filepath.Join(dir, "run"),
		"-vm-uids", "1-99"}, &stderr, &stderr)
	if err == nil || !strings.Contains(err.Error(), "-vm-uids") || !strings.Contains(err.Error(), "overlaps /etc/passwd:") || !strings.Contains(err.Error(), " has uid 1\n") {
		t.Fatalf("Serve -vm-uids 1-99 = %v, want an error naming -vm-uids, /etc/passwd and the user of uid 1", err)
	}
	if m, _ := filepath.Glob(filepath.Join(dir, "*")); len(m) != 0 {
		t.Errorf("serve created %v before refusing", m)
	}
}

// TestServeBadLog: a -log that names no destination stops serve before it
// touches anything, with an error naming the flag.
func TestServeBadLog(t *testing.T) {
	dir := t.TempDir()
	var stderr bytes.Buffer
	err := Serve([]string{"-data", dir, "-state", filepath.Join(dir, "state"), "-run", filepath.Join(dir, "run"),
		"-log", "syslog"}, &stderr, &stderr)
	if err == nil || !strings.Contains(err.Error(), `-log "syslog"`) {
		t.Fatalf("Serve -log syslog = %v, want an error naming -log", err)
	}
	if m, _ := filepath.Glob(filepath.Join(dir, "*")); len(m) != 0 {
		t.Errorf("serve created %v before refusing", m)
	}
}
