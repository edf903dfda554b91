package cli

import (
	"flag"
	"fmt"
	"io/fs"
	"os"
	"slices"
	"strings"
	"time"

	"spectrum-os.org/netcfg/host/control"
	"spectrum-os.org/netcfg/internal/printable"
)

// completeCmd is the hidden command the shell completion scripts
// (dist/completion/) call: `spectrumd __complete WORD... CURRENT` prints
// what CURRENT, the word being completed, can become after the words before
// it (the command line without "spectrumd"), one per line; or the single
// line dirsDirective when it is a directory. The commands' flags come from
// their own flag sets, so the completion never falls out of date.
const completeCmd = "__complete"

// dirsDirective tells the script to complete directory names itself.
const dirsDirective = ":dirs"

// completeTimeout bounds how long completion waits for the daemon's list:
// a shell waits for it.
const completeTimeout = time.Second

// complete implements `spectrumd __complete`. It always exits 0: a
// completion that finds nothing offers nothing.
func complete(words []string, s Stdio) int {
	if len(words) == 0 {
		return 0
	}
	for _, c := range completions(words[:len(words)-1], words[len(words)-1], DefaultData) {
		fmt.Fprintln(s.Out, c)
	}
	return 0
}

// completions returns what cur can become after the words before it.
// defaultData is the data directory when the line gives none.
func completions(before []string, cur, defaultData string) []string {
	// Bash splits "-data=DIR" into "-data", "=", "DIR" (COMP_WORDBREAKS):
	// what follows "=" is the flag's value, the "=" alone its empty start.
	valueOf := ""
	switch n := len(before); {
	case cur == "=" && n > 0 && isFlagWord(before[n-1]):
		valueOf, cur, before = before[n-1], "", before[:n-1]
	case n > 1 && before[n-1] == "=" && isFlagWord(before[n-2]):
		valueOf, before = before[n-2], before[:n-2]
	}
	if len(before) == 0 {
		return withPrefix(append(commandNames(), "help"), cur)
	}
	if before[0] == "help" {
		if len(before) == 1 {
			return withPrefix(commandNames(), cur)
		}
		return nil
	}
	c := lookup(before[0])
	if c == nil {
		return nil
	}
	fs, _ := c.flags()
	l := scan(fs, before[1:])
	if valueOf == "" && l.wants != nil {
		valueOf = "-" + l.wants.Name
	}
	if valueOf != "" {
		f := fs.Lookup(strings.TrimLeft(valueOf, "-"))
		if f == nil || isBool(f) {
			return nil
		}
		return flagValues(f, cur, l.data(defaultData))
	}
	if strings.HasPrefix(cur, "-") && !l.ended {
		dashes := "-"
		if strings.HasPrefix(cur, "--") {
			dashes = "--"
		}
		var names []string
		fs.VisitAll(func(f *flag.Flag) { names = append(names, dashes+f.Name) })
		return withPrefix(names, cur)
	}
	if c.Args != "" && l.args == 0 {
		return withPrefix(vmNames(l.run(), l.data(defaultData)), cur)
	}
	return nil
}

func isFlagWord(w string) bool { return len(w) > 1 && w[0] == '-' && w != "--" }

// line is what scan learnt of a command's words.
type line struct {
	wants *flag.Flag        // the last word is this flag, which takes a value
	ended bool              // "--" was seen: no more flags
	args  int               // positional arguments given
	given map[string]string // flag values given, by name (the last one)
}

func (l line) run() string {
	if r, ok := l.given["run"]; ok {
		return r
	}
	return DefaultRun
}

func (l line) data(def string) string {
	if d, ok := l.given["data"]; ok {
		return d
	}
	return def
}

// scan reads a command's words as its parser would (see split), forgiving
// what it does not know.
func scan(fs *flag.FlagSet, words []string) line {
	l := line{given: map[string]string{}}
	for i := 0; i < len(words); i++ {
		w := words[i]
		if w == "--" && !l.ended {
			l.ended = true
			continue
		}
		if l.ended || !isFlagWord(w) {
			l.args++
			continue
		}
		name, value, hasValue := strings.Cut(strings.TrimPrefix(w[1:], "-"), "=")
		f := fs.Lookup(name)
		if f == nil || isBool(f) {
			continue
		}
		if !hasValue && i+1 < len(words) && words[i+1] == "=" { // bash's "-run=DIR"
			i++
			value, hasValue = "", i+1 < len(words)
			if hasValue {
				i++
				value = words[i]
			}
		}
		switch {
		case hasValue:
			l.given[name] = value
		case i+1 < len(words):
			i++
			l.given[name] = words[i]
		default:
			l.wants = f
		}
	}
	return l
}

// flagValues completes the value of flag f: directories for a DIR, the
// choices of a flag that lists them (a|b|c), VM names for VMS (after the
// last comma).
func flagValues(f *flag.Flag, cur, data string) []string {
	switch name := valueName(f); {
	case name == "DIR":
		return []string{dirsDirective}
	case strings.Contains(name, "|"):
		return withPrefix(strings.Split(name, "|"), cur)
	case name == "VMS":
		done := cur[:strings.LastIndexByte(cur, ',')+1]
		given := strings.Split(done, ",")
		var out []string
		for _, n := range withPrefix(dataNames(data), cur[len(done):]) {
			if !slices.Contains(given, n) {
				out = append(out, done+n)
			}
		}
		return out
	}
	return nil
}

func commandNames() []string {
	var names []string
	for _, c := range Commands() {
		names = append(names, c.Name)
	}
	return names
}

func withPrefix(words []string, prefix string) []string {
	var out []string
	for _, w := range words {
		if strings.HasPrefix(w, prefix) {
			out = append(out, w)
		}
	}
	return out
}

// vmNames are the VMs the daemon at run lists, or, when none answers, the
// VM directories in data.
func vmNames(run, data string) []string {
	resp, _, c, err := control.Dial(ControlSocket(run), control.Request{Op: "list"}, completeTimeout)
	if c != nil {
		c.Close()
	}
	if err != nil {
		return dataNames(data)
	}
	var names []string
	for _, v := range resp.VMs {
		if completable(v.Name) {
			names = append(names, v.Name)
		}
	}
	return names
}

// dataNames are the names of the directories (and symlinks) in data, as
// Load finds VMs there, valid or not.
func dataNames(data string) []string {
	ents, err := os.ReadDir(data)
	if err != nil {
		return nil
	}
	var names []string
	for _, e := range ents {
		if (e.IsDir() || e.Type()&fs.ModeSymlink != 0) && completable(e.Name()) {
			names = append(names, e.Name())
		}
	}
	return names
}

// completable tells whether a name can be offered to a shell as it is: a
// line of its own, no blank or character a terminal would act on.
func completable(name string) bool {
	return name != "" && name[0] != '.' && name[0] != '-' &&
		!strings.ContainsFunc(name, func(r rune) bool { return printable.Unsafe(r) || r == ' ' || r == '\t' })
}
