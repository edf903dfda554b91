// Binary spectrum-router is a provider VM's router for its clients: it
// configures and follows the provider's inter-guest NICs (MAC OUI 0A:B3:EC)
// exactly as `spectrum-netcfg -watch` does, and routes for the clients
// behind them: NAT out of the uplinks, DNS, isolation between clients,
// anti-spoofing (package spectrum-os.org/netcfg/guest/router). It runs only
// on providers; every guest carries spectrum-netcfg, which has none of
// this. It logs only to the serial console and runs until SIGTERM.
package main

import (
	"context"
	"errors"
	"flag"
	"io"
	"os"
	"os/signal"

	"golang.org/x/sys/unix"

	"spectrum-os.org/netcfg/guest"
	"spectrum-os.org/netcfg/guest/router"
)

// usage is the command line synopsis.
const usage = "usage: spectrum-router [-console PATH]"

func main() { os.Exit(run(os.Args[1:], os.Stderr)) }

func run(args []string, stderr io.Writer) int {
	cfg, err := parseArgs(args)
	if errors.Is(err, flag.ErrHelp) {
		io.WriteString(stderr, usage+"\n")
		return 0
	}
	if err != nil {
		io.WriteString(stderr, "spectrum-router: "+err.Error()+"\n"+usage+"\n")
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), unix.SIGTERM, unix.SIGINT)
	defer stop()
	return guest.Run(ctx, cfg, stderr, router.Start)
}

// parseArgs reads the command line: the agent's configuration, always
// following NICs (-watch), since the rules must follow them as they come
// and go.
func parseArgs(args []string) (guest.Config, error) {
	cfg := guest.Config{Watch: true}
	fs := flag.NewFlagSet("spectrum-router", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.StringVar(&cfg.Console, "console", guest.DefaultConsole, "the serial console to log to")
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	if fs.NArg() > 0 {
		return cfg, errors.New("unexpected argument \"" + fs.Arg(0) + "\"")
	}
	if cfg.Console == "" {
		return cfg, errors.New("-console: empty path")
	}
	return cfg, nil
}
