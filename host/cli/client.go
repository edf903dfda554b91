package cli

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"spectrum-os.org/netcfg/host/control"
	"spectrum-os.org/netcfg/host/link"
	"spectrum-os.org/netcfg/internal/mac"
	"spectrum-os.org/netcfg/internal/printable"
)

// DefaultRun is the run directory: the control socket and the VMs' sockets.
const DefaultRun = "/run/spectrumd"

// ControlSocket is the control socket's path inside the run directory.
func ControlSocket(run string) string { return filepath.Join(run, "control.sock") }

// How long a command waits for the daemon's reply, unless -timeout says:
// list, status, logs and console are answered from what the daemon knows
// at once; start and stop wait for the work (a launch, a guest's power
// down, unplugs), each step of which the daemon bounds itself.
const (
	DefaultTimeout     = 10 * time.Second
	DefaultWorkTimeout = 2 * time.Minute
)

// dial connects to the daemon, sends req and reads the first reply line,
// waiting at most wait.
func dial(run string, req control.Request, wait time.Duration) (control.Response, *bufio.Reader, net.Conn, error) {
	resp, br, c, err := control.Dial(ControlSocket(run), req, wait)
	var nr *control.NoReplyError
	switch {
	case errors.Is(err, control.ErrNoDaemon):
		return resp, nil, nil, fmt.Errorf("spectrumd is not running (no daemon at %s); start it with: spectrumd serve -run %s", ControlSocket(run), run)
	case errors.As(err, &nr) && req.Name != "" && (req.Op == "start" || req.Op == "stop"):
		return resp, nil, nil, fmt.Errorf("%w; it may still be at it: spectrumd status %s shows where it is (-timeout waits longer)", err, req.Name)
	case errors.As(err, &nr):
		return resp, nil, nil, fmt.Errorf("%w; is it hung? (-timeout waits longer)", err)
	}
	return resp, br, c, err
}

func call(run string, req control.Request, wait time.Duration) (control.Response, error) {
	resp, _, c, err := dial(run, req, wait)
	if c != nil {
		c.Close()
	}
	return resp, err
}

// daemonFlags are the flags of every command that talks to the daemon.
type daemonFlags struct {
	run  *string
	wait *time.Duration
}

func (f daemonFlags) dial(req control.Request) (control.Response, *bufio.Reader, net.Conn, error) {
	return dial(*f.run, req, *f.wait)
}

func (f daemonFlags) call(req control.Request) (control.Response, error) {
	return call(*f.run, req, *f.wait)
}

// daemonFlags declares the flags of every command that talks to the
// daemon: -run and -timeout, whose default is wait.
func newDaemonFlags(fs *flag.FlagSet, wait time.Duration) daemonFlags {
	return daemonFlags{
		run:  fs.String("run", DefaultRun, "run `DIR` of the daemon (its control socket)"),
		wait: fs.Duration("timeout", wait, "how long to wait for the daemon's reply"),
	}
}

// List implements `spectrumd list`.
func List(args []string, stdout, stderr io.Writer) error {
	return listCmd.Run(args, Stdio{Out: stdout, Err: stderr})
}

var listCmd = &Command{
	Name:    "list",
	Summary: "list the VMs and their state",
	About:   "List every VM the daemon knows, with its state.",
	Define: func(fs *flag.FlagSet) Runner {
		df := newDaemonFlags(fs, DefaultTimeout)
		asJSON := fs.Bool("json", false, "print JSON")
		return func(_ []string, s Stdio) error { return list(df, *asJSON, s.Out) }
	},
}

func list(df daemonFlags, asJSON bool, stdout io.Writer) error {
	resp, err := df.call(control.Request{Op: "list"})
	if err != nil {
		return err
	}
	for i := range resp.VMs {
		escapeStatus(&resp.VMs[i])
	}
	if asJSON {
		return json.NewEncoder(stdout).Encode(resp.VMs)
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tSTATE\tPID\tRESTARTS\tLINKS\tUPLINKS")
	for _, v := range resp.VMs {
		pid := "-"
		if v.PID != 0 {
			pid = fmt.Sprint(v.PID)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\n", v.Name, v.State, pid, v.Restarts, linksString(v.Links), uplinksString(v.Uplinks, v.PCI))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	// Below the table: a warning is a line, not a column.
	for _, v := range resp.VMs {
		for _, w := range v.Warnings {
			if _, err := fmt.Fprintf(stdout, "warning: %s: %s\n", v.Name, w); err != nil {
				return err
			}
		}
	}
	return nil
}

// escapeStatus escapes every string of a status the daemon sent
// (printable.String), for the terminal it is printed on: the daemon is
// trusted, the names it passes on came from the file system.
func escapeStatus(v *control.VMStatus) {
	p := printable.String
	v.Name, v.State, v.LastExit, v.Error = p(v.Name), p(v.State), p(v.LastExit), p(v.Error)
	for i := range v.Links {
		l := &v.Links[i]
		l.Peer, l.Role, l.ID, l.MAC = p(l.Peer), p(l.Role), p(l.ID), p(l.MAC)
		for j := range l.Addrs {
			l.Addrs[j] = p(l.Addrs[j])
		}
		for j := range l.Gateways {
			l.Gateways[j] = p(l.Gateways[j])
		}
	}
	for i := range v.Uplinks {
		u := &v.Uplinks[i]
		u.Iface, u.MAC = p(u.Iface), p(u.MAC)
	}
	for i := range v.PCI {
		v.PCI[i] = p(v.PCI[i])
	}
	for i := range v.Warnings {
		v.Warnings[i] = p(v.Warnings[i])
	}
}

func linksString(ls []control.LinkStatus) string {
	if len(ls) == 0 {
		return "-"
	}
	var parts []string
	for _, l := range ls {
		arrow := "<-" // client: gets network from the peer
		if l.Role == "provider" {
			arrow = "->"
		}
		parts = append(parts, arrow+l.Peer+"("+l.MAC+")")
	}
	return strings.Join(parts, " ")
}

func uplinksString(us []control.UplinkStatus, pci []string) string {
	if len(us) == 0 && len(pci) == 0 {
		return "-"
	}
	var parts []string
	for _, u := range us {
		parts = append(parts, u.Iface+"("+u.MAC+")")
	}
	for _, a := range pci {
		parts = append(parts, "pci:"+a)
	}
	return strings.Join(parts, " ")
}

// Start implements `spectrumd start NAME`.
func Start(args []string, stdout, stderr io.Writer) error {
	return startCmd.Run(args, Stdio{Out: stdout, Err: stderr})
}

var startCmd = workCmd("start", "start a VM (after its providers)", "Start VM NAME, after the VMs that provide its network.")

// workCmd is a command that asks the daemon to do op to VM NAME and waits
// until it is done (start, stop).
func workCmd(op, summary, about string) *Command {
	return &Command{
		Name: op, Summary: summary, Args: "NAME", About: about,
		Define: func(fs *flag.FlagSet) Runner {
			df := newDaemonFlags(fs, DefaultWorkTimeout)
			return func(args []string, _ Stdio) error {
				_, err := df.call(control.Request{Op: op, Name: args[0]})
				return err
			}
		},
	}
}

// Stop implements `spectrumd stop NAME`.
func Stop(args []string, stdout, stderr io.Writer) error {
	return stopCmd.Run(args, Stdio{Out: stdout, Err: stderr})
}

var stopCmd = workCmd("stop", "stop a VM", "Power VM NAME down (killed after a timeout) and remove its links.")

// Status implements `spectrumd status NAME`.
func Status(args []string, stdout, stderr io.Writer) error {
	return statusCmd.Run(args, Stdio{Out: stdout, Err: stderr})
}

var statusCmd = &Command{
	Name:    "status",
	Summary: "show a VM's state and links",
	Args:    "NAME",
	About:   "Show VM NAME's state and links.",
	Define: func(fs *flag.FlagSet) Runner {
		df := newDaemonFlags(fs, DefaultTimeout)
		asJSON := fs.Bool("json", false, "print JSON")
		return func(args []string, s Stdio) error { return status(df, args[0], *asJSON, s.Out) }
	},
}

func status(df daemonFlags, name string, asJSON bool, stdout io.Writer) error {
	resp, err := df.call(control.Request{Op: "status", Name: name})
	if err != nil {
		return err
	}
	if len(resp.VMs) != 1 {
		return fmt.Errorf("status of %s: daemon sent %d VMs", name, len(resp.VMs))
	}
	v := resp.VMs[0]
	escapeStatus(&v)
	if asJSON {
		return json.NewEncoder(stdout).Encode(v)
	}
	fmt.Fprintf(stdout, "name:     %s\nstate:    %s\n", v.Name, v.State)
	if v.PID != 0 {
		fmt.Fprintf(stdout, "pid:      %d\nsince:    %s\n", v.PID, v.Since.Format(time.RFC3339))
	}
	if !v.NoOutputSince.IsZero() {
		fmt.Fprintf(stdout, "silent:   no serial output since launch at %s (is the guest booting?)\n", v.NoOutputSince.Format(time.RFC3339))
	}
	fmt.Fprintf(stdout, "restarts: %d\n", v.Restarts)
	if v.LastExit != "" {
		fmt.Fprintf(stdout, "last exit: %s\n", v.LastExit)
	}
	if v.Error != "" {
		fmt.Fprintf(stdout, "error:    %s\n", v.Error)
	}
	for _, l := range v.Links {
		fmt.Fprintf(stdout, "link %s: %s of %s, NIC %s", l.ID, l.Role, l.Peer, l.MAC)
		if len(l.Addrs) > 0 {
			fmt.Fprintf(stdout, ", addrs %s", strings.Join(l.Addrs, " "))
		}
		if len(l.Gateways) > 0 {
			fmt.Fprintf(stdout, " via %s", strings.Join(l.Gateways, " "))
		}
		fmt.Fprintln(stdout)
	}
	for _, u := range v.Uplinks {
		tap := "?"
		if hw, err := mac.Parse(u.MAC); err == nil {
			tap = link.UplinkTapName(hw)
		}
		fmt.Fprintf(stdout, "uplink %s: NIC %s, tap %s\n", u.Iface, u.MAC, tap)
	}
	for _, a := range v.PCI {
		fmt.Fprintf(stdout, "uplink pci %s: host PCI device by VFIO\n", a)
	}
	for _, w := range v.Warnings {
		fmt.Fprintf(stdout, "warning:  %s\n", w)
	}
	return nil
}

// Logs implements `spectrumd logs [-f] NAME`.
func Logs(args []string, stdout, stderr io.Writer) error {
	return logsCmd.Run(args, Stdio{Out: stdout, Err: stderr})
}

var logsCmd = &Command{
	Name:    "logs",
	Summary: "print a VM's serial log (-f follows)",
	Args:    "NAME",
	About:   "Print VM NAME's serial console log.",
	Define: func(fs *flag.FlagSet) Runner {
		df := newDaemonFlags(fs, DefaultTimeout)
		follow := fs.Bool("f", false, "keep printing new lines as they arrive")
		return func(args []string, s Stdio) error { return logs(df, args[0], *follow, s.Out) }
	},
}

func logs(df daemonFlags, name string, follow bool, stdout io.Writer) error {
	_, br, c, err := df.dial(control.Request{Op: "logs", Name: name, Follow: follow})
	if err != nil {
		return err
	}
	defer c.Close()
	_, err = io.Copy(stdout, br)
	return err
}
