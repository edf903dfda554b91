package cli

import (
	"bytes"
	"path/filepath"
	"strings"
	"testing"
)

// TestServeRunAsUnknownUser: a -runas naming no user stops serve before it
// touches anything (a missing default user is only logged).
func TestServeRunAsUnknownUser(t *testing.T) {
	dir := t.TempDir()
	var stderr bytes.Buffer
	err := Serve([]string{"-data", dir, "-state", filepath.Join(dir, "state"), "-run", filepath.Join(dir, "run"),
		"-runas", "no-such-user-spectrum"}, &stderr, &stderr)
	if err == nil || !strings.Contains(err.Error(), "-runas no-such-user-spectrum") {
		t.Fatalf("Serve with an unknown -runas user = %v, want an error naming it", err)
	}
	if m, _ := filepath.Glob(filepath.Join(dir, "*")); len(m) != 0 {
		t.Errorf("serve created %v before refusing", m)
	}
}
