// Binary spectrumd is the host daemon: it validates the VM directories,
// assigns MACs, wires each link, and launches and supervises one QEMU per VM.
//
// Usage:
//
//	spectrumd serve  [-data DIR] [-state DIR] [-run DIR] [-accel auto|kvm|tcg]
//	spectrumd check  [-data DIR] [-state DIR] [-json]
//	spectrumd list | start NAME | stop NAME | status NAME | logs [-f] NAME | console NAME
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"spectrum-os.org/netcfg/host/cli"
	"spectrum-os.org/netcfg/internal/printable"
)

// commands is the subcommand table; each entry parses its own flags.
var commands = []struct {
	name, help string
	run        func(args []string, stdout, stderr io.Writer) error
}{
	{"serve", "run the daemon in the foreground", cli.Serve},
	{"check", "validate every VM directory; show providers, images and MACs", cli.Check},
	{"list", "list the VMs and their state", cli.List},
	{"start", "start a VM (after its providers)", cli.Start},
	{"stop", "stop a VM", cli.Stop},
	{"status", "show a VM's state and links", cli.Status},
	{"logs", "print a VM's serial log (-f follows)", cli.Logs},
	{"console", "attach the terminal to a VM's console", func(args []string, stdout, stderr io.Writer) error {
		return cli.Console(args, os.Stdin, stdout, stderr)
	}},
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: spectrumd COMMAND [flags] [args]\n\ncommands:")
	for _, c := range commands {
		fmt.Fprintf(w, "  %-8s %s\n", c.name, c.help)
	}
	fmt.Fprintln(w, "\n`spectrumd COMMAND -h` shows a command's flags.")
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run returns the exit status: 0 success, 1 failure, 2 usage.
func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		usage(stderr)
		return 2
	}
	if args[0] == "-h" || args[0] == "-help" || args[0] == "--help" || args[0] == "help" {
		usage(stdout)
		return 0
	}
	for _, c := range commands {
		if c.name != args[0] {
			continue
		}
		err := c.run(args[1:], stdout, stderr)
		switch {
		case err == nil:
			return 0
		case errors.Is(err, flag.ErrHelp):
			for _, a := range args[1:] {
				if a == "-h" || a == "-help" || a == "--help" {
					return 0 // asked for help, got it
				}
			}
			return 2
		case errors.Is(err, cli.ErrInvalid):
			return 1
		}
		// Escaped: an error may quote a name or a path anyone could
		// choose, or a daemon's reply.
		fmt.Fprintf(stderr, "spectrumd %s: %s\n", c.name, printable.Lines(err.Error()))
		return 1
	}
	fmt.Fprintf(stderr, "spectrumd: unknown command %q\n", args[0])
	usage(stderr)
	return 2
}
