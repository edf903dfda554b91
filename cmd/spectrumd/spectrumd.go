// Binary spectrumd is the host daemon: it validates the VM directories,
// assigns MACs, wires each link, and launches and supervises one QEMU per VM.
package main

import (
	"fmt"
	"os"
)

func main() {
	fmt.Fprintln(os.Stderr, "spectrumd: not implemented yet")
	os.Exit(2)
}
