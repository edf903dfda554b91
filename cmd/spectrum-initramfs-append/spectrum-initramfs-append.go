// Binary spectrum-initramfs-append adds the static spectrum-netcfg to an
// existing initramfs (a plain, busybox or u-root one) by appending a second
// newc cpio archive to it, which the kernel unpacks after the first; the
// initramfs's own /init then runs the agent. With -list it lists an
// initramfs made of uncompressed and gzip archives. See package
// spectrum-os.org/netcfg/host/initramfs.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"strings"

	"spectrum-os.org/netcfg/host/initramfs"
)

const usage = `usage: spectrum-initramfs-append [-gzip] [-to PATH] INITRAMFS AGENT
       spectrum-initramfs-append -list INITRAMFS
Appends AGENT (the static spectrum-netcfg) to INITRAMFS as PATH, mode 0755.
  -gzip     compress the appended archive with gzip
  -to PATH  where the agent goes in the initramfs (default /usr/sbin/spectrum-netcfg)
  -list     list INITRAMFS (newc archives, uncompressed or gzip) and exit
exit status: 0 done, 1 failed, 2 bad command line`

func main() {
	fl := flag.NewFlagSet("spectrum-initramfs-append", flag.ContinueOnError)
	fl.Usage = func() { fmt.Fprintln(os.Stderr, usage) }
	gz := fl.Bool("gzip", false, "")
	to := fl.String("to", "/usr/sbin/spectrum-netcfg", "")
	list := fl.Bool("list", false, "")
	if err := fl.Parse(os.Args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		os.Exit(2)
	}
	args := fl.Args()
	if (*list && len(args) != 1) || (!*list && len(args) != 2) {
		fmt.Fprintln(os.Stderr, usage)
		os.Exit(2)
	}
	if err := run(*list, *gz, *to, args); err != nil {
		fmt.Fprintln(os.Stderr, "spectrum-initramfs-append:", err)
		os.Exit(1)
	}
}

func run(list, gz bool, to string, args []string) error {
	if list {
		f, err := os.Open(args[0])
		if err != nil {
			return err
		}
		defer f.Close()
		entries, err := initramfs.List(f)
		for _, e := range entries {
			c := e.Compress
			if c == "" {
				c = "-"
			}
			fmt.Printf("%d %-4s %v %9d %s\n", e.Segment, c, e.Mode, e.Size, e.Name)
		}
		return err
	}
	agent, err := os.ReadFile(args[1])
	if err != nil {
		return err
	}
	name := strings.TrimPrefix(to, "/")
	if err := initramfs.Append(args[0], []initramfs.File{{Name: name, Mode: fs.FileMode(0o755), Data: agent}}, gz); err != nil {
		return err
	}
	fmt.Printf("%s: appended /%s (%d bytes)\n", args[0], name, len(agent))
	return nil
}
