// Package man holds the tests of the manual pages, whose Markdown sources
// are the files beside this one (NAME.SECTION.md; the Makefile's `man`
// target turns them into roff with go-md2man). The tests keep the pages
// true: every page lints clean under mandoc, and each program's page names
// exactly the flags the program has, taken from the program itself (built
// and asked for its usage, and made to parse each flag the page names), so
// a flag added, renamed or dropped on either side fails here.
package man

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"

	"spectrum-os.org/netcfg/internal/testenv"
)

// root is the repository, two levels above this package.
const root = "../.."

// A page is a manual page's Markdown source.
type page struct {
	file     string // e.g. spectrumd.8.md
	name     string // spectrumd
	section  string // 8
	src      string
	sections map[string]string // "# OPTIONS" and so on: the text under each
}

func pages(t *testing.T) []page {
	t.Helper()
	files, err := filepath.Glob("*.md")
	if err != nil || len(files) == 0 {
		t.Fatalf("no pages in docs/man (%v)", err)
	}
	var out []page
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		base := strings.TrimSuffix(f, ".md")
		i := strings.LastIndexByte(base, '.')
		if i < 0 {
			t.Fatalf("%s: want NAME.SECTION.md", f)
		}
		p := page{file: f, name: base[:i], section: base[i+1:], src: string(b), sections: map[string]string{}}
		var cur string
		inCode := false
		for _, l := range strings.Split(p.src, "\n") {
			if strings.HasPrefix(l, "```") {
				inCode = !inCode
			}
			if !inCode && strings.HasPrefix(l, "# ") {
				cur = strings.TrimPrefix(l, "# ")
				continue
			}
			if cur != "" {
				p.sections[cur] += l + "\n"
			}
		}
		out = append(out, p)
	}
	return out
}

// An option is a flag as a page's OPTIONS section defines it: a definition
// term "**-name** *ARG*".
type option struct{ name, arg string }

var (
	termRE    = regexp.MustCompile(`^\*\*-([A-Za-z0-9][\w-]*)\*\*(?:\s+\*([^*]+)\*)?`)
	boldRE    = regexp.MustCompile(`\*\*-([A-Za-z0-9][\w-]*)`)
	synFlagRE = regexp.MustCompile(`(?:^|[\s\[|])-([A-Za-z0-9][\w-]*)`)
	helpRE    = regexp.MustCompile(`(?m)^\s+-([A-Za-z0-9][\w-]*)`)
)

// options returns the OPTIONS section's flags by command: under a "##"
// heading, the comma-separated commands it names ("## list, status"); a
// page without such headings has one command, "".
func (p page) options(t *testing.T) map[string][]option {
	t.Helper()
	body, ok := p.sections["OPTIONS"]
	if !ok {
		t.Fatalf("%s: no OPTIONS section", p.file)
	}
	out := map[string][]option{}
	cmds := []string{""}
	for _, l := range strings.Split(body, "\n") {
		if h, ok := strings.CutPrefix(l, "## "); ok {
			cmds = nil
			for _, c := range strings.Split(h, ",") {
				cmds = append(cmds, strings.Fields(c)[0])
			}
			continue
		}
		if m := termRE.FindStringSubmatch(l); m != nil {
			for _, c := range cmds {
				out[c] = append(out[c], option{m[1], m[2]})
			}
		}
	}
	return out
}

// synopsis returns the SYNOPSIS's flags by command: each line that begins
// with the program's name starts an entry (its second word names the
// commands, "start|stop", when the program has commands), and indented
// lines continue it.
func (p page) synopsis(t *testing.T, commands bool) map[string][]string {
	t.Helper()
	out := map[string][]string{}
	var cmds []string
	for _, l := range strings.Split(p.sections["SYNOPSIS"], "\n") {
		if strings.HasPrefix(l, p.name+" ") || l == p.name {
			cmds = []string{""}
			if f := strings.Fields(l); commands && len(f) > 1 {
				cmds = strings.Split(f[1], "|")
			}
			for _, c := range cmds {
				if _, ok := out[c]; !ok {
					out[c] = []string{}
				}
			}
		} else if !strings.HasPrefix(l, " ") {
			continue
		}
		for _, m := range synFlagRE.FindAllStringSubmatch(l, -1) {
			for _, c := range cmds {
				out[c] = append(out[c], m[1])
			}
		}
	}
	if len(out) == 0 {
		t.Fatalf("%s: the SYNOPSIS names no command line of %s", p.file, p.name)
	}
	return out
}

var (
	buildOnce sync.Once
	binDir    string
	buildErr  error
)

// program builds every program of cmd/ once and returns the path of name.
func program(t *testing.T, name string) string {
	t.Helper()
	buildOnce.Do(func() {
		binDir, buildErr = os.MkdirTemp("", "man-bin-")
		if buildErr != nil {
			return
		}
		cmd := exec.Command("go", "build", "-o", binDir+"/", "./cmd/...")
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = errors.New("go build ./cmd/...: " + err.Error() + "\n" + string(out))
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return filepath.Join(binDir, name)
}

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// run runs a program and returns its exit status and all it printed.
func run(t *testing.T, bin string, args ...string) (int, string) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	var exit *exec.ExitError
	switch {
	case err == nil:
		return 0, out.String()
	case errors.As(err, &exit):
		return exit.ExitCode(), out.String()
	}
	t.Fatalf("%s %q: %v", bin, args, err)
	return 0, ""
}

// helpFlags returns the flags a program's usage names: the lines of the
// flag package's defaults ("  -name ...") and the synopsis ("usage: ...").
func helpFlags(help string) []string {
	set := map[string]bool{}
	for _, m := range helpRE.FindAllStringSubmatch(help, -1) {
		set[m[1]] = true
	}
	for _, l := range strings.Split(help, "\n") {
		if strings.HasPrefix(strings.TrimSpace(l), "usage:") {
			for _, m := range synFlagRE.FindAllStringSubmatch(l, -1) {
				set[m[1]] = true
			}
		}
	}
	delete(set, "h")
	delete(set, "help")
	return sortedKeys(set)
}

func sortedKeys(set map[string]bool) []string {
	var out []string
	for k := range set {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func names(opts []option) []string {
	set := map[string]bool{}
	for _, o := range opts {
		set[o.name] = true
	}
	return sortedKeys(set)
}

// value is a value of the type a flag's placeholder names, for making the
// program parse it.
func value(arg string) string {
	switch arg {
	case "D":
		return "1s"
	case "MiB":
		return "1"
	}
	return "x"
}

// commandsOf returns the commands a program lists in its usage ("  name
// what it does" after "commands:"), or [""] for a program without commands.
func commandsOf(t *testing.T, bin string) []string {
	t.Helper()
	_, out := run(t, bin, "-h")
	_, list, ok := strings.Cut(out, "commands:\n")
	if !ok {
		return []string{""}
	}
	var cmds []string
	for _, l := range strings.Split(list, "\n") {
		if !strings.HasPrefix(l, "  ") {
			break
		}
		cmds = append(cmds, strings.Fields(l)[0])
	}
	return cmds
}

// TestFlagsMatchPrograms: each section-8 page documents a program of cmd/,
// and for the program and each of its commands, the flags its usage names,
// the page's OPTIONS and the page's SYNOPSIS are the same; the program
// parses every flag the page defines; and every flag the page sets in bold
// anywhere is one of them.
func TestFlagsMatchPrograms(t *testing.T) {
	for _, p := range pages(t) {
		if p.section != "8" {
			continue
		}
		t.Run(p.name, func(t *testing.T) {
			if _, err := os.Stat(filepath.Join(root, "cmd", p.name)); err != nil {
				t.Fatalf("%s documents a program that is not in cmd/: %v", p.file, err)
			}
			bin := program(t, p.name)
			cmds := commandsOf(t, bin)
			commands := !slices.Equal(cmds, []string{""})
			opts := p.options(t)
			syn := p.synopsis(t, commands)
			all := map[string]bool{"h": true, "help": true}
			var pageCmds []string
			for c := range opts {
				pageCmds = append(pageCmds, c)
			}
			for _, c := range pageCmds {
				if !slices.Contains(cmds, c) {
					t.Errorf("%s: OPTIONS has flags of %q, which %s does not list (it lists %q)", p.file, c, p.name, cmds)
				}
			}
			if commands {
				var headed []string
				for _, l := range strings.Split(p.sections["COMMANDS"], "\n") {
					if h, ok := strings.CutPrefix(l, "## "); ok {
						headed = append(headed, strings.Fields(h)[0])
					}
				}
				if !slices.Equal(headed, cmds) {
					t.Errorf("%s: COMMANDS describes %q; %s lists %q", p.file, headed, p.name, cmds)
				}
				for c := range syn {
					if c != "help" && !slices.Contains(cmds, c) {
						t.Errorf("%s: SYNOPSIS shows %q, which %s does not list (it lists %q)", p.file, c, p.name, cmds)
					}
				}
			}
			unknown := "no-such-flag-anywhere"
			for _, c := range cmds {
				args := []string{}
				if c != "" {
					args = append(args, c)
				}
				status, help := run(t, bin, append(args, "-h")...)
				if status != 0 {
					t.Errorf("%s %s -h: exit status %d, want 0\n%s", p.name, c, status, help)
				}
				want := helpFlags(help)
				got := names(opts[c])
				if !slices.Equal(got, want) {
					t.Errorf("%s %s: the page's OPTIONS name %q; the program's usage names %q\nusage:\n%s", p.name, c, got, want, help)
				}
				synGot := sortedKeys(toSet(syn[c]))
				if !slices.Equal(synGot, want) {
					t.Errorf("%s %s: the page's SYNOPSIS names %q; the program's usage names %q", p.name, c, synGot, want)
				}
				for _, o := range opts[c] {
					all[o.name] = true
					a := append(slices.Clone(args), "-"+o.name)
					if o.arg != "" {
						a = append(a, value(o.arg))
					}
					// Before -h, a flag the program takes changes nothing:
					// the same usage and status as -h alone.
					if s, out := run(t, bin, append(a, "-h")...); s != status || out != help {
						t.Errorf("%s %q -h: the program does not take the page's -%s (exit status %d, not %d as for -h alone):\n%s", p.name, a, o.name, s, status, out)
					}
				}
				// The check above can fail: a flag nobody has shows.
				if s, out := run(t, bin, append(slices.Clone(args), "-"+unknown, "-h")...); s == status && out == help {
					t.Errorf("%s %s -%s -h: the same as -h alone; the flag check cannot tell a flag from none", p.name, c, unknown)
				}
			}
			for _, m := range boldRE.FindAllStringSubmatch(p.src, -1) {
				if !all[m[1]] {
					t.Errorf("%s: names -%s in bold, a flag %s does not have (another program's flag goes in backticks)", p.file, m[1], p.name)
				}
			}
		})
	}
}

func toSet(s []string) map[string]bool {
	set := map[string]bool{}
	for _, v := range s {
		set[v] = true
	}
	delete(set, "h")
	delete(set, "help")
	return set
}

// TestLint turns every page into roff as `make man` does and lints it with
// mandoc: a warning fails, as an error does. The title line names the page
// as its file does.
func TestLint(t *testing.T) {
	mandoc := testenv.Tool(t, "mandoc", "make deps installs mandoc")
	dir := t.TempDir()
	for _, p := range pages(t) {
		t.Run(p.file, func(t *testing.T) {
			if title := strings.Fields(strings.SplitN(p.src, "\n", 2)[0]); len(title) < 3 || title[0] != "%" ||
				title[1] != strings.ToUpper(p.name) || title[2] != p.section {
				t.Errorf("%s: first line %q, want %q", p.file, strings.SplitN(p.src, "\n", 2)[0], "% "+strings.ToUpper(p.name)+" "+p.section+" DATE ...")
			}
			roff := filepath.Join(dir, strings.TrimSuffix(p.file, ".md"))
			gen := exec.Command("go", "tool", "go-md2man", "-in", filepath.Join("docs/man", p.file), "-out", roff)
			gen.Dir = root
			if out, err := gen.CombinedOutput(); err != nil {
				t.Fatalf("go-md2man: %v\n%s", err, out)
			}
			out, err := exec.Command(mandoc, "-T", "lint", "-W", "warning", roff).CombinedOutput()
			if err != nil || len(out) > 0 {
				t.Errorf("mandoc -T lint -W warning %s: %v\n%s", p.file, err, out)
			}
			for _, s := range []string{"NAME", "SYNOPSIS", "DESCRIPTION", "SEE ALSO"} {
				if _, ok := p.sections[s]; !ok {
					t.Errorf("%s: no %s section", p.file, s)
				}
			}
		})
	}
}

// TestEveryProgramHasAPage: each program of cmd/ has its section-8 page,
// but spectrum-demo, which is `make run` and never installed.
func TestEveryProgramHasAPage(t *testing.T) {
	dirs, err := os.ReadDir(filepath.Join(root, "cmd"))
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range dirs {
		if !d.IsDir() || d.Name() == "spectrum-demo" {
			continue
		}
		if _, err := os.Stat(d.Name() + ".8.md"); err != nil {
			t.Errorf("cmd/%s has no manual page: write docs/man/%s.8.md (%v)", d.Name(), d.Name(), err)
		}
	}
}
