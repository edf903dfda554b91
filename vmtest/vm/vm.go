// Package vm is the VM tests' harness: it builds the guest initramfs once per
// test binary, writes VM directories in the svc/data layout the daemon reads,
// runs `spectrumd serve` in the test's own network namespace (Serve) and
// drives it through its command line, follows each boot's serial log that
// spectrumd writes, and waits for the test init's sentinel lines with
// deadlines derived from the test's own.
//
// Launch and AddLink start QEMU and wire links by hand, for what
// spectrumd cannot do (a NIC without the OUI). The serial console is only
// ever read, never written.
package vm

import (
	"context"
	"os"
	"os/exec"
	"testing"
	"time"

	"spectrum-os.org/netcfg/internal/nstest"
	"spectrum-os.org/netcfg/vmtest/kernel"
)

// QEMU is the emulator the tests run.
const QEMU = "qemu-system-x86_64"

// Require stops the test unless it can boot VMs: root (for namespaces and
// taps), iproute2, QEMU and the test kernel. Without root and outside CI it
// skips and says why; otherwise a missing piece fails the test, because
// `make test` provides all of them.
func Require(t testing.TB) kernel.Kernel {
	t.Helper()
	if os.Geteuid() != 0 && os.Getenv("CI") == "" {
		t.Skip("skipping VM test: needs root for network namespaces and taps (runs in CI and as root)")
	}
	nstest.RequirePrivileged(t)
	if _, err := exec.LookPath(QEMU); err != nil {
		t.Fatalf("VM test: %v (make deps installs qemu-system-x86)", err)
	}
	k, err := kernel.Find()
	if err != nil {
		t.Fatalf("VM test: %v", err)
	}
	return k
}

// Context returns a context that ends at most within d, and in any case
// early enough before the test's own deadline to report the failure with
// the serial logs.
func Context(t testing.TB, d time.Duration) context.Context {
	t.Helper()
	deadline := time.Now().Add(d)
	if td, ok := t.(interface{ Deadline() (time.Time, bool) }); ok {
		if end, ok := td.Deadline(); ok {
			// Keep a tenth of what is left (at least 10 s) for the
			// cleanup and the report.
			grace := time.Until(end) / 10
			if grace < 10*time.Second {
				grace = 10 * time.Second
			}
			if end.Add(-grace).Before(deadline) {
				deadline = end.Add(-grace)
			}
		}
	}
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	t.Cleanup(cancel)
	return ctx
}
