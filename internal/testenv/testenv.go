// Package testenv holds the project's one rule for tests that need more than
// a Go toolchain (root, a tool from a Debian package, the test kernel): they
// skip only where skipping is honest, on a developer's machine that lacks
// the piece, and say why; under CI (CI set in the environment, as .ci/run
// sets it) they fail instead, because `make test` provides every piece there.
//
// It also runs a test binary's helper processes (the binary re-executed to
// play another process, e.g. a client running as another user) from
// TestMain, so they never show up as skipped tests.
package testenv

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// InCI tells whether the tests run under CI, where nothing may be skipped.
func InCI() bool { return os.Getenv("CI") != "" }

// Skip stops t because why (a missing piece, e.g. "needs root to create
// network namespaces"): a failure under CI, a skip elsewhere. why should
// say what provides the piece (make deps, make kernel, running as root).
func Skip(t testing.TB, why string) {
	t.Helper()
	if InCI() {
		t.Fatalf("cannot run in CI: %s", why)
	}
	t.Skipf("skipping: %s (not root or not installed here; runs in CI)", why)
}

// Root stops t unless it runs as root; why says what root is needed for.
func Root(t testing.TB, why string) {
	t.Helper()
	if os.Geteuid() != 0 {
		Skip(t, "needs root "+why)
	}
}

// Tool returns the path of the program name, or stops t when it is not
// installed; from says what installs it (e.g. "make deps installs cpio").
func Tool(t testing.TB, name, from string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		Skip(t, fmt.Sprintf("%v (%s)", err, from))
	}
	return p
}

// NoErr stops t when err, the result of looking for a piece the test needs
// (e.g. the cached test kernel), is not nil; from says what provides it.
func NoErr(t testing.TB, err error, from string) {
	t.Helper()
	if err != nil {
		Skip(t, fmt.Sprintf("%v (%s)", err, from))
	}
}

// helperEnv names the helper a re-executed test binary is to run.
const helperEnv = "SPECTRUM_TEST_HELPER"

// RunHelper is called first in a package's TestMain. When this process is
// a helper started by HelperCommand, it runs the named function from
// helpers and exits with its status; otherwise it returns at once and the
// tests run.
func RunHelper(helpers map[string]func() int) {
	name := os.Getenv(helperEnv)
	if name == "" {
		return
	}
	f := helpers[name]
	if f == nil {
		fmt.Fprintf(os.Stderr, "testenv: no helper %q in this test binary\n", name)
		os.Exit(2)
	}
	os.Exit(f())
}

// HelperCommand returns a command that runs this test binary as the helper
// name (see RunHelper), with env added to the environment. The caller may
// set its credentials, streams and namespace before starting it.
func HelperCommand(ctx context.Context, name string, env ...string) *exec.Cmd {
	return HelperCommandOf(ctx, os.Args[0], name, env...)
}

// HelperCommandOf is HelperCommand for a copy of the test binary at bin
// (e.g. one copied where another user can run it).
func HelperCommandOf(ctx context.Context, bin, name string, env ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, bin)
	cmd.Env = HelperEnv(name, env...)
	return cmd
}

// HelperEnv is the environment of a helper process name: this process's,
// the helper's name and env. For commands HelperCommand cannot build (one run
// through `ip netns exec`, say) whose program is this test binary.
func HelperEnv(name string, env ...string) []string {
	return append(append(os.Environ(), helperEnv+"="+name), env...)
}

// SharedBinary copies this test binary into a new directory that every
// user can read and run (go test's build directory is private to root), for
// helpers run as another user; the copy is removed when t ends.
func SharedBinary(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "spectrum-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, filepath.Base(self))
	if err := os.WriteFile(bin, b, 0o755); err != nil {
		t.Fatal(err)
	}
	return bin
}
