package cli

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"spectrum-os.org/netcfg/internal/printable"
)

// Stdio is what a command reads and writes.
type Stdio struct {
	In       *os.File // the operator's terminal or input (console reads it)
	Out, Err io.Writer
}

// A Runner runs a command with its positional arguments, its flags parsed.
type Runner func(args []string, s Stdio) error

// A Command is one of spectrumd's subcommands. Its Define is the one home of
// its flags: the dispatcher parses with them, -h prints them, and the shell
// completion (`spectrumd __complete`) offers them.
type Command struct {
	Name    string
	Summary string // one line, for `spectrumd help`
	Args    string // the positional argument: "" (none) or "NAME" (exactly one VM name)
	About   string // what -h says between the synopsis and the flags
	// Define declares the command's flags on fs and returns what runs it.
	Define func(fs *flag.FlagSet) Runner
}

// ErrUsage is returned by a command whose arguments were wrong, having
// printed what was wrong and its synopsis: main exits 2.
var ErrUsage = errorString("usage error")

// Commands are spectrumd's subcommands, in the order help lists them.
func Commands() []*Command {
	return []*Command{serveCmd, checkCmd, listCmd, startCmd, stopCmd, statusCmd, logsCmd, consoleCmd}
}

// lookup returns the command called name, or nil.
func lookup(name string) *Command {
	for _, c := range Commands() {
		if c.Name == name {
			return c
		}
	}
	return nil
}

// flags makes c's flag set. The flag package prints nothing: parse says
// what was wrong in spectrumd's words.
func (c *Command) flags() (*flag.FlagSet, Runner) {
	fs := flag.NewFlagSet("spectrumd "+c.Name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	run := c.Define(fs)
	return fs, run
}

// valueName is how a flag's value is shown ("" for a boolean flag).
func valueName(f *flag.Flag) string {
	if isBool(f) {
		return ""
	}
	name, _ := flag.UnquoteUsage(f)
	return name
}

func isBool(f *flag.Flag) bool {
	b, ok := f.Value.(interface{ IsBoolFlag() bool })
	return ok && b.IsBoolFlag()
}

// Synopsis is c's one-line usage: every flag, then the argument.
func (c *Command) Synopsis() string {
	fs, _ := c.flags()
	return c.synopsis(fs)
}

func (c *Command) synopsis(fs *flag.FlagSet) string {
	var b strings.Builder
	b.WriteString("spectrumd " + c.Name)
	fs.VisitAll(func(f *flag.Flag) {
		if v := valueName(f); v != "" {
			fmt.Fprintf(&b, " [-%s %s]", f.Name, v)
		} else {
			fmt.Fprintf(&b, " [-%s]", f.Name)
		}
	})
	if c.Args != "" {
		b.WriteString(" " + c.Args)
	}
	return b.String()
}

// help writes c's help: the synopsis, what it does, the flags.
func (c *Command) help(w io.Writer, fs *flag.FlagSet) {
	fmt.Fprintf(w, "usage: %s\n\n%s\n", c.synopsis(fs), strings.TrimSpace(c.About))
	if c.Args != "" {
		fmt.Fprintf(w, "\nFlags may come before or after %s; -- ends them.\n", c.Args)
	}
	fmt.Fprintln(w, "\nflags:")
	fs.SetOutput(w)
	fs.PrintDefaults()
	fs.SetOutput(io.Discard)
}

// errHelp is what split returns when -h or --help is among the flags.
var errHelp = errors.New("help requested")

// split separates args into what fs parses and the positional arguments:
// flags may come before and after the positional ones (`status app -json`),
// and "--" ends the flags. An unknown flag is an error naming it; -h, -help
// and --help ask for help. As with the flag package, the first of them on
// the line is what counts.
func split(fs *flag.FlagSet, args []string) (flags, pos []string, err error) {
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			return flags, append(pos, args[i+1:]...), nil
		}
		if len(a) < 2 || a[0] != '-' {
			pos = append(pos, a)
			continue
		}
		name, _, hasValue := strings.Cut(strings.TrimPrefix(a[1:], "-"), "=")
		f := fs.Lookup(name)
		switch {
		case f == nil && (name == "h" || name == "help"):
			return nil, nil, errHelp
		case f == nil:
			shown, _, _ := strings.Cut(a, "=")
			return nil, nil, fmt.Errorf("unknown flag %s", printable.String(shown))
		}
		flags = append(flags, a)
		if !hasValue && !isBool(f) && i+1 < len(args) {
			i++
			flags = append(flags, args[i])
		}
	}
	return flags, pos, nil
}

// parse parses args for c into fs and returns the positional arguments.
func (c *Command) parse(fs *flag.FlagSet, args []string) ([]string, error) {
	flags, pos, err := split(fs, args)
	if err != nil {
		return nil, err
	}
	if err := fs.Parse(flags); err != nil {
		return nil, err
	}
	switch {
	case c.Args == "" && len(pos) > 0:
		return nil, fmt.Errorf("unexpected argument %q", pos[0])
	case c.Args != "" && len(pos) == 0:
		return nil, fmt.Errorf("missing %s", c.Args)
	case c.Args != "" && len(pos) > 1:
		return nil, fmt.Errorf("unexpected argument %q", pos[1])
	}
	return pos, nil
}

// Run runs c with its command-line arguments. -h prints c's help to s.Out
// and returns nil; a usage error is said on s.Err with c's synopsis, and
// ErrUsage returned.
func (c *Command) Run(args []string, s Stdio) error {
	fs, run := c.flags()
	pos, err := c.parse(fs, args)
	if errors.Is(err, errHelp) {
		c.help(s.Out, fs)
		return nil
	}
	if err != nil {
		fmt.Fprintf(s.Err, "spectrumd %s: %s\nusage: %s\n", c.Name, err, c.synopsis(fs))
		return ErrUsage
	}
	return run(pos, s)
}

// usage writes spectrumd's own help: the commands.
func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: spectrumd COMMAND [flags] [NAME]\n\ncommands:")
	for _, c := range Commands() {
		fmt.Fprintf(w, "  %-8s %s\n", c.Name, c.Summary)
	}
	fmt.Fprintln(w, "\n`spectrumd help COMMAND` or `spectrumd COMMAND -h` shows a command's flags.")
}

// Main runs spectrumd with its arguments (without the program's name) and
// returns the exit status: 0 success, 1 failure, 2 usage.
func Main(args []string, s Stdio) int {
	if len(args) == 0 {
		usage(s.Err)
		return 2
	}
	switch args[0] {
	case "-h", "-help", "--help":
		usage(s.Out)
		return 0
	case "help":
		return help(args[1:], s)
	case completeCmd:
		return complete(args[1:], s)
	}
	c := lookup(args[0])
	if c == nil {
		fmt.Fprintf(s.Err, "spectrumd: unknown command %q\n", args[0])
		usage(s.Err)
		return 2
	}
	err := c.Run(args[1:], s)
	switch {
	case err == nil:
		return 0
	case errors.Is(err, ErrUsage):
		return 2
	case errors.Is(err, ErrInvalid):
		return 1
	}
	// Escaped: an error may quote a name or a path anyone could choose,
	// or a daemon's reply.
	fmt.Fprintf(s.Err, "spectrumd %s: %s\n", c.Name, printable.Lines(err.Error()))
	return 1
}

// help implements `spectrumd help [COMMAND]`.
func help(args []string, s Stdio) int {
	switch {
	case len(args) == 0:
		usage(s.Out)
		return 0
	case len(args) > 1:
		fmt.Fprintf(s.Err, "spectrumd help: unexpected argument %q\nusage: spectrumd help [COMMAND]\n", args[1])
		return 2
	}
	c := lookup(args[0])
	if c == nil {
		fmt.Fprintf(s.Err, "spectrumd help: unknown command %q\n", args[0])
		usage(s.Err)
		return 2
	}
	fs, _ := c.flags()
	c.help(s.Out, fs)
	return 0
}
