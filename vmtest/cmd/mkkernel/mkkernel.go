// Binary mkkernel turns an LZ4-compressed bzImage (Debian's cloud kernel)
// into the uncompressed ELF vmlinux a VM directory requires, and checks that
// it has a PVH entry point. scripts/test-kernel.sh runs it.
package main

import (
	"fmt"
	"os"

	"spectrum-os.org/netcfg/vmtest/kernel"
)

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: mkkernel VMLINUZ VMLINUX")
		os.Exit(2)
	}
	if err := kernel.WriteVmlinux(os.Args[1], os.Args[2]); err != nil {
		fmt.Fprintln(os.Stderr, "mkkernel:", err)
		os.Exit(1)
	}
}
