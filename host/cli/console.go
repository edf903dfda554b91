package cli

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"syscall"

	"spectrum-os.org/netcfg/host/control"
	"spectrum-os.org/netcfg/host/termfilter"
	"spectrum-os.org/netcfg/internal/printable"
)

// consoleEscape detaches from a console: Ctrl-], as in telnet and virsh.
const consoleEscape = 0x1d

// Console implements `spectrumd console NAME`. The guest's output goes
// through termfilter, so the guest drives the screen but never the
// terminal; on detach the modes it turned on are turned off, the terminal's
// own settings (stty) are put back with pending input discarded, and the
// notice that says so begins with termfilter.Marker, which the guest
// cannot print, and comes only once the guest's output has stopped.
func Console(args []string, stdin *os.File, stdout, stderr io.Writer) error {
	return consoleCmd.Run(args, Stdio{In: stdin, Out: stdout, Err: stderr})
}

var consoleCmd = &Command{
	Name:    "console",
	Summary: "attach the terminal to a VM's console",
	Args:    "NAME",
	About:   "Attach this terminal to VM NAME's console (virtio-console). Ctrl-] detaches.",
	Define: func(fs *flag.FlagSet) Runner {
		df := newDaemonFlags(fs, DefaultTimeout)
		return func(args []string, s Stdio) error { return console(df, args[0], s.In, s.Out, s.Err) }
	},
}

func console(df daemonFlags, name string, stdin *os.File, stdout, stderr io.Writer) error {
	_, br, c, err := df.dial(control.Request{Op: "console", Name: name})
	if err != nil {
		return err
	}
	defer c.Close()
	shown := printable.String(name)
	fmt.Fprintf(stderr, "%c spectrumd: connected to %s's console; Ctrl-] detaches\r\n", termfilter.Marker, shown)

	t, err := makeRaw(stdin)
	if err != nil {
		return err
	}
	// Signals that end the client end the session the same way as Ctrl-]:
	// the terminal is always handed back.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sigs)

	out := termfilter.NewWriter(stdout)
	outDone := make(chan error, 1)
	go func() {
		_, err := io.Copy(out, br)
		outDone <- err
	}()
	inDone := make(chan string, 1)
	go func() { inDone <- forwardInput(stdin, c) }()

	var why string
	var outErr error
	waitOut := true
	select {
	case outErr = <-outDone:
		why = "the console closed (the VM stopped?)"
		waitOut = false
	case why = <-inDone:
	case s := <-sigs:
		why = "spectrumd console got " + s.String()
	}
	// The guest's output stops here: nothing of it is written after the
	// modes are reset and the notice is shown.
	c.Close()
	if waitOut {
		outErr = <-outDone
	}
	rerr := out.Restore()
	notice := fmt.Sprintf("%c spectrumd: detached from %s: %s", termfilter.Marker, shown, why)
	if isTerminal(stderr) {
		// On a line of its own, with nothing of the guest's below it (a
		// fake prompt drawn further down the screen is erased).
		fmt.Fprintf(stderr, "\r\n\x1b[J%s\r\n", notice)
	} else {
		fmt.Fprintf(stderr, "\r\n%s\r\n", notice)
	}
	if err := t.restore(); err != nil {
		return err
	}
	if outErr != nil && !errors.Is(outErr, net.ErrClosed) {
		return fmt.Errorf("console of %s: %w", shown, outErr)
	}
	return rerr
}

// forwardInput copies the operator's keys to the console until Ctrl-], the
// end of stdin or a write error, and says which.
func forwardInput(stdin io.Reader, c io.Writer) string {
	buf := make([]byte, 1024)
	for {
		n, err := stdin.Read(buf)
		if i := bytes.IndexByte(buf[:n], consoleEscape); i >= 0 {
			c.Write(buf[:i])
			return "Ctrl-] pressed"
		}
		if n > 0 {
			if _, werr := c.Write(buf[:n]); werr != nil {
				return "the console closed (the VM stopped?)"
			}
		}
		if err != nil {
			return "end of standard input"
		}
	}
}
