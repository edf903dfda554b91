package distinit

import (
	"testing"

	"spectrum-os.org/netcfg/internal/testenv"
	"spectrum-os.org/netcfg/vmtest/kernel"
)

// Require stops the test unless it can run the generators: root (for the
// private mount namespace), the tools named and, with needKernel, the cached
// Debian test kernel. A missing piece skips the test on a developer's
// machine and fails it under CI (internal/testenv), where `make test`
// provides them all (scripts/deps.sh, `make kernel`).
func Require(t testing.TB, needKernel bool, tools ...string) Kernel {
	t.Helper()
	testenv.Root(t, "to run the initramfs generators in a private mount namespace")
	for _, tool := range append([]string{"unshare"}, tools...) {
		testenv.Tool(t, tool, "make deps installs it: scripts/deps.sh")
	}
	if !needKernel {
		return Kernel{}
	}
	k, err := kernel.Find()
	testenv.NoErr(t, err, "make kernel fetches the test kernel")
	dk, err := Debian(k)
	if err != nil {
		t.Fatal(err)
	}
	return dk
}
