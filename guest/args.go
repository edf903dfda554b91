package guest

import (
	"errors"
	"strings"
)

// Usage is the agent's command line synopsis.
const Usage = "usage: spectrum-netcfg [-watch] [-console PATH]"

// Config is what the command line asks for.
type Config struct {
	// Watch keeps the agent running after the first pass to configure NICs
	// as they appear. False: configure what is there and exit.
	Watch bool
	// Console is the path the log is written to. Empty means DefaultConsole.
	Console string
}

// ErrHelp is returned by ParseArgs for -h, -help and --help.
var ErrHelp = errors.New("help requested")

// ErrRoute is returned by ParseArgs for -route, which this program had
// before the provider's router became a program of its own.
var ErrRoute = errors.New("-route is not a flag of spectrum-netcfg: the provider's router is its own program, spectrum-router (it configures and follows the NICs as -watch does, and routes)")

// ParseArgs parses the arguments after the program name. It accepts the
// flag package's syntax (-name, --name, -name=value, -name value) for the
// flags the agent has; it does not use package flag because that alone would
// add about 57 KB to a binary with a size budget.
func ParseArgs(args []string) (Config, error) {
	cfg := Config{Console: DefaultConsole}
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			args = args[i+1:]
			if len(args) > 0 {
				return cfg, errors.New("unexpected argument " + quote(args[0]))
			}
			break
		}
		if len(a) < 2 || a[0] != '-' {
			return cfg, errors.New("unexpected argument " + quote(a))
		}
		name := strings.TrimPrefix(a[1:], "-")
		value, hasValue := "", false
		if k, v, ok := strings.Cut(name, "="); ok {
			name, value, hasValue = k, v, true
		}
		switch name {
		case "h", "help":
			return cfg, ErrHelp
		case "route":
			return cfg, ErrRoute
		case "watch":
			on := true
			if hasValue {
				switch value {
				case "true", "1", "t", "T", "TRUE", "True":
				case "false", "0", "f", "F", "FALSE", "False":
					on = false
				default:
					return cfg, errors.New("invalid value " + quote(value) + " for -" + name)
				}
			}
			cfg.Watch = on
		case "console":
			if !hasValue {
				if i+1 >= len(args) {
					return cfg, errors.New("flag needs an argument: -console")
				}
				i++
				value = args[i]
			}
			if value == "" {
				return cfg, errors.New("-console: empty path")
			}
			cfg.Console = value
		default:
			return cfg, errors.New("flag provided but not defined: " + quote(a))
		}
	}
	return cfg, nil
}

func quote(s string) string { return "\"" + s + "\"" }
