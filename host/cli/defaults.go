// Package cli implements spectrumd's subcommands: serve runs the daemon;
// check validates the configuration offline; list, start, stop, status, logs
// and console talk to a running daemon over its control socket.
package cli

// Default directories. The data directory is relative, as in the reference
// layout (svc/data on the user partition, run from its root); the unit in
// dist/ passes absolute ones.
const (
	DefaultData  = "svc/data"
	DefaultState = "/var/lib/spectrumd"
)

// ErrInvalid is returned by a command that has already printed why it
// failed (check with invalid VMs); main exits 1 without printing it again.
var ErrInvalid = errorString("invalid configuration")

type errorString string

func (e errorString) Error() string { return string(e) }
