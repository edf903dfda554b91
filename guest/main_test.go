package guest_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// agentBin is the real static spectrum-netcfg binary, built once by TestMain
// exactly as the guest image builds it; the integration tests run it as a
// process inside their namespace.
var agentBin string

// buildFlags are the guest build's flags (the Makefile's GUESTFLAGS).
var buildFlags = []string{"-trimpath", "-ldflags=-s -w"}

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "spectrum-netcfg-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	agentBin = filepath.Join(dir, "spectrum-netcfg")
	args := append([]string{"build"}, buildFlags...)
	cmd := exec.Command("go", append(args, "-o", agentBin, "spectrum-os.org/netcfg/cmd/spectrum-netcfg")...)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build spectrum-netcfg: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}
