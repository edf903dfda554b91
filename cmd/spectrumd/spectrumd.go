// Binary spectrumd is the host daemon: it validates the VM directories,
// assigns MACs, wires each link, and launches and supervises one QEMU per VM.
//
// Usage:
//
//	spectrumd serve  [-data DIR] [-state DIR] [-run DIR] [-accel auto|kvm|tcg] ...
//	spectrumd check  [-data DIR] [-state DIR] [-json]
//	spectrumd list | start NAME | stop NAME | status NAME | logs [-f] NAME | console NAME
//	spectrumd help [COMMAND]
//
// Flags may come before or after NAME. The commands and their flags are
// host/cli's (cli.Commands).
package main

import (
	"io"
	"os"

	"spectrum-os.org/netcfg/host/cli"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run returns the exit status: 0 success, 1 failure, 2 usage.
func run(args []string, stdout, stderr io.Writer) int {
	return cli.Main(args, cli.Stdio{In: os.Stdin, Out: stdout, Err: stderr})
}
