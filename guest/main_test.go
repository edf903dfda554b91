package guest_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// agentBin is the real static spectrum-netcfg binary, and routerBin
// spectrum-router, built once by TestMain exactly as the guest image builds
// them; the integration tests run them as processes inside their namespace.
var agentBin, routerBin string

// buildFlags are the guest build's flags (the Makefile's GUESTFLAGS).
var buildFlags = []string{"-trimpath", "-ldflags=-s -w"}

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "spectrum-netcfg-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	agentBin, routerBin = filepath.Join(dir, "spectrum-netcfg"), filepath.Join(dir, "spectrum-router")
	for _, bin := range []string{agentBin, routerBin} {
		args := append([]string{"build"}, buildFlags...)
		cmd := exec.Command("go", append(args, "-o", bin, "spectrum-os.org/netcfg/cmd/"+filepath.Base(bin))...)
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "build %s: %v\n%s", filepath.Base(bin), err, out)
			os.RemoveAll(dir)
			os.Exit(1)
		}
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}
