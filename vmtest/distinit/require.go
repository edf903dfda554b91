package distinit

import (
	"os"
	"os/exec"
	"testing"

	"spectrum-os.org/netcfg/vmtest/kernel"
)

// Require stops the test unless it can run the generators: root (for the
// private mount namespace), the tools named and, with needKernel, the cached
// Debian test kernel. Without root and outside CI it skips and says why;
// otherwise a missing piece fails the test, because `make test` provides
// them all (scripts/deps.sh, `make kernel`).
func Require(t testing.TB, needKernel bool, tools ...string) Kernel {
	t.Helper()
	if os.Geteuid() != 0 {
		if os.Getenv("CI") == "" {
			t.Skip("skipping: the initramfs generators run as root in a private mount namespace (runs in CI and as root)")
		}
		t.Fatal("initramfs generator test cannot run in CI: needs root")
	}
	for _, tool := range append([]string{"unshare"}, tools...) {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%v (make deps installs it: scripts/deps.sh)", err)
		}
	}
	if !needKernel {
		return Kernel{}
	}
	k, err := kernel.Find()
	if err != nil {
		t.Fatal(err)
	}
	dk, err := Debian(k)
	if err != nil {
		t.Fatal(err)
	}
	return dk
}
