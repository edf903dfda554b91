// Package vm is the VM tests' harness: it builds the guest initramfs once per
// test binary, writes VM directories in the svc/data layout the daemon reads,
// runs `spectrumd serve` in the test's own network namespace (Serve) and
// drives it through its command line, follows each boot's serial log that
// spectrumd writes, and waits for the test init's sentinel lines with
// deadlines derived from the test's own.
//
// Boot, Launch and AddLink start QEMU and wire links without spectrumd, for
// what spectrumd cannot do (a NIC without the OUI, a distribution's
// initramfs): Boot builds QEMU's command line with host/qemu's Config and
// starts it with qemu.Start, exactly as spectrumd does. The serial console is
// only ever read, never written.
package vm

import (
	"context"
	"testing"
	"time"

	"spectrum-os.org/netcfg/internal/nstest"
	"spectrum-os.org/netcfg/internal/testenv"
	"spectrum-os.org/netcfg/vmtest/kernel"
)

// QEMU is the emulator the tests run.
const QEMU = "qemu-system-x86_64"

// Require stops the test unless it can boot VMs: root (for namespaces and
// taps), iproute2, QEMU and the test kernel. A missing piece skips the test
// on a developer's machine and fails it under CI (internal/testenv), where
// `make test` provides all of them.
func Require(t testing.TB) kernel.Kernel {
	t.Helper()
	nstest.RequirePrivileged(t)
	testenv.Tool(t, QEMU, "make deps installs qemu-system-x86")
	k, err := kernel.Find()
	testenv.NoErr(t, err, "make kernel fetches the test kernel")
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
