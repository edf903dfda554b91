// Binary spectrum-netcfg configures the guest's inter-guest NICs (MAC OUI
// 0A:B3:EC) through rtnetlink, as an init hook, and with -watch keeps
// configuring NICs as they are hot-plugged. It logs only to the serial
// console. Every guest carries it, so it carries nothing else: the
// provider's router is its own program, spectrum-router. See package
// spectrum-os.org/netcfg/guest for what it does and logs.
package main

import (
	"context"
	"errors"
	"os"
	"os/signal"
	"runtime"

	"golang.org/x/sys/unix"

	"spectrum-os.org/netcfg/guest"
)

func main() { os.Exit(run()) }

func run() int {
	// The agent does one thing at a time. With a second P, a netlink
	// request the kernel takes long over (bringing a link up) gets its P
	// handed to another thread and back, which costs more than it saves:
	// measured at 256 NICs, 3-4x the context switches and 15-40% more CPU.
	runtime.GOMAXPROCS(1)
	cfg, err := guest.ParseArgs(os.Args[1:])
	if errors.Is(err, guest.ErrHelp) {
		os.Stderr.WriteString(guest.Usage + "\n")
		return 0
	}
	if err != nil {
		os.Stderr.WriteString("spectrum-netcfg: " + err.Error() + "\n" + guest.Usage + "\n")
		return 2
	}
	ctx := context.Background()
	if cfg.Watch {
		// Only a resident agent stops cleanly on SIGTERM; a one-shot run
		// lasts milliseconds and keeps the default disposition.
		var stop context.CancelFunc
		ctx, stop = signal.NotifyContext(ctx, unix.SIGTERM, unix.SIGINT)
		defer stop()
	}
	return guest.Run(ctx, cfg, os.Stderr, nil)
}
