package main

import (
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"spectrum-os.org/netcfg/host/cli"
	"spectrum-os.org/netcfg/host/control"
	"spectrum-os.org/netcfg/host/control/controltest"
	"spectrum-os.org/netcfg/host/vmlog"
)

// asMain makes this test binary spectrumd itself when the completion
// script runs it (as "spectrumd", from the PATH the test gives bash).
const asMain = "SPECTRUMD_TEST_AS_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(asMain) == "1" {
		main()
	}
	os.Exit(m.Run())
}

// listOnly is a daemon whose list holds names no data directory has.
type listOnly struct{}

func (listOnly) List() []control.VMStatus {
	return []control.VMStatus{{Name: "from-daemon"}, {Name: "also-daemon"}, {Name: "bad\x1b[2Jname"}}
}
func (listOnly) Status(string) (control.VMStatus, error) { return control.VMStatus{}, errors.New("no") }
func (listOnly) Start(string) error                      { return errors.New("no") }
func (listOnly) Stop(string) error                       { return errors.New("no") }
func (listOnly) Logs(string) (*vmlog.File, error)        { return nil, errors.New("no") }
func (listOnly) Console(string) (io.ReadWriteCloser, error) {
	return nil, errors.New("no")
}

// completer runs the completion script in a real bash, in a directory
// holding the default data directory (svc/data), with spectrumd on PATH.
type completer struct {
	script, cwd, path string
}

func newCompleter(t *testing.T) *completer {
	if _, err := exec.LookPath("bash"); err != nil {
		t.Fatalf("bash: %v", err) // Debian's essential shell: never missing where the tests run
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	bin := t.TempDir()
	if err := os.Symlink(self, filepath.Join(bin, "spectrumd")); err != nil {
		t.Fatal(err)
	}
	script, err := filepath.Abs(filepath.Join("..", "..", "dist", "completion", "spectrumd.bash"))
	if err != nil {
		t.Fatal(err)
	}
	return &completer{script: script, cwd: t.TempDir(), path: bin + ":" + os.Getenv("PATH")}
}

func (c *completer) bash(t *testing.T, program string, args ...string) string {
	t.Helper()
	cmd := exec.Command("bash", append([]string{"--norc", "--noprofile", "-c", program, "bash", c.script}, args...)...)
	cmd.Dir = c.cwd
	cmd.Env = append(os.Environ(), "PATH="+c.path, asMain+"=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("bash: %v\n%s", err, out)
	}
	return string(out)
}

// complete calls the completion function as bash does for a line ending in
// words (the last one the word under the cursor) and returns COMPREPLY.
func (c *completer) complete(t *testing.T, words ...string) []string {
	t.Helper()
	out := c.bash(t, `source "$1"; shift
COMP_WORDS=(spectrumd "$@"); COMP_CWORD=$#
COMP_LINE="${COMP_WORDS[*]}"; COMP_POINT=${#COMP_LINE}
_spectrumd
(( ${#COMPREPLY[@]} )) && printf '%s\n' "${COMPREPLY[@]}"
exit 0`, words...)
	var got []string
	for l := range strings.Lines(out) {
		got = append(got, strings.TrimSuffix(l, "\n"))
	}
	slices.Sort(got)
	return got
}

func mkdirs(t *testing.T, root string, dirs ...string) {
	for _, d := range dirs {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
}

// TestBashCompletion drives the completion script in bash: `complete -p`
// names its function; the function completes commands, each command's
// flags (from its flag set), the values of -data/-state/-run (directories),
// -accel and -start, and VM names: those the daemon at -run lists, or,
// when none answers (none there, or one that never replies), the
// directories of the data directory (the default, or -data on the line).
func TestBashCompletion(t *testing.T) {
	c := newCompleter(t)
	mkdirs(t, c.cwd, "svc/data/appvm-lynx", "svc/data/netvm", "svc/data/.hidden", "svc/data/bad\x1b[2Jname")
	if err := os.WriteFile(filepath.Join(c.cwd, "svc/data/notes.txt"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/elsewhere/vm", filepath.Join(c.cwd, "svc/data/linked")); err != nil {
		t.Fatal(err)
	}
	other := t.TempDir()
	mkdirs(t, other, "x1", "x2")
	none := t.TempDir() // a run directory with no daemon
	daemon := filepath.Dir(controltest.Serve(t, &control.Server{Handler: listOnly{}}))
	hung := t.TempDir()
	controltest.Silent(t, cli.ControlSocket(hung))

	if got := c.bash(t, `source "$1"; complete -p spectrumd`); got != "complete -F _spectrumd spectrumd\n" {
		t.Errorf("complete -p spectrumd: %q", got)
	}
	var commands []string
	for _, cmd := range cli.Commands() {
		commands = append(commands, cmd.Name)
	}
	slices.Sort(commands)
	dataNames := []string{"appvm-lynx", "linked", "netvm"}
	for _, tt := range []struct {
		name  string
		words []string
		want  []string
	}{
		{"commands", []string{""}, slices.Sorted(slices.Values(append(slices.Clone(commands), "help")))},
		{"command prefix", []string{"st"}, []string{"start", "status", "stop"}},
		{"help's command", []string{"help", ""}, commands},
		{"no such command", []string{"stauts", ""}, nil},
		{"status flags", []string{"status", "-"}, []string{"-json", "-run", "-timeout"}},
		{"two dashes", []string{"status", "--r"}, []string{"--run"}},
		{"serve flags", []string{"serve", "-s"}, []string{"-silent-after", "-start", "-state", "-stop-timeout"}},
		{"logs flags after the name", []string{"logs", "app", "-"}, []string{"-f", "-run", "-timeout"}},
		{"names, no daemon: the default data directory", []string{"status", "-run", none, ""}, dataNames},
		{"name prefix", []string{"stop", "-run", none, "n"}, []string{"netvm"}},
		{"names after a bool flag", []string{"console", "-run", none, "-timeout", "1s", ""}, dataNames},
		{"names after --", []string{"start", "-run", none, "--", ""}, dataNames},
		{"no flags after --", []string{"start", "-run", none, "--", "-"}, nil},
		{"one name only", []string{"status", "-run", none, "netvm", ""}, nil},
		{"no names for list", []string{"list", "-run", none, ""}, nil},
		{"names from the daemon", []string{"status", "-json", "-run", daemon, ""}, []string{"also-daemon", "from-daemon"}},
		{"names from the daemon, -run=", []string{"logs", "-run", "=", daemon, "f"}, []string{"from-daemon"}},
		{"hung daemon: the data directory", []string{"status", "-run", hung, ""}, dataNames},
		{"-data: directories", []string{"check", "-data", ""}, []string{"svc"}},
		{"-data: a level down", []string{"check", "-data", "svc/"}, []string{"svc/data"}},
		{"-data=", []string{"check", "-data", "="}, []string{"svc"}},
		{"-state=s", []string{"serve", "-state", "=", "s"}, []string{"svc"}},
		{"-accel", []string{"serve", "-accel", ""}, []string{"auto", "kvm", "tcg"}},
		{"-accel prefix", []string{"serve", "-accel", "k"}, []string{"kvm"}},
		{"-timeout: no guess", []string{"status", "-timeout", ""}, nil},
		{"-start from the data directory", []string{"serve", "-start", "n"}, []string{"netvm"}},
		{"-start after a comma, -data on the line", []string{"serve", "-data", other, "-start", "x1,"}, []string{"x1,x2"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, c.complete(t, tt.words...)); diff != "" {
				t.Errorf("spectrumd %s<TAB> (-want +got):\n%s", strings.Join(tt.words, " "), diff)
			}
		})
	}
}

// TestZshCompletion: compinit registers dist/completion/_spectrumd for
// spectrumd, and the function hands spectrumd's candidates to zsh: here to
// stand-ins of compadd, compset and _files (builtins of a completion widget,
// which a script cannot run), which print what they are given. The
// candidates are those the bash completion gets (TestBashCompletion); what
// zsh's own part does (-data=DIR as one word) is checked here.
func TestZshCompletion(t *testing.T) {
	if _, err := exec.LookPath("zsh"); err != nil {
		t.Fatalf("zsh: %v (scripts/deps.sh installs it)", err)
	}
	c := newCompleter(t)
	mkdirs(t, c.cwd, "svc/data/appvm-lynx", "svc/data/netvm")
	other := t.TempDir()
	mkdirs(t, other, "x1", "x2")
	none := t.TempDir()
	daemon := filepath.Dir(controltest.Serve(t, &control.Server{Handler: listOnly{}}))
	fpath := filepath.Dir(c.script)
	zsh := func(t *testing.T, program string, args ...string) string {
		t.Helper()
		cmd := exec.Command("zsh", append([]string{"-f", "-c", `fpath=("$1" $fpath); shift
autoload -U compinit; compinit -u -D
` + program, "zsh", fpath}, args...)...)
		cmd.Dir = c.cwd
		cmd.Env = append(os.Environ(), "PATH="+c.path, asMain+"=1")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("zsh: %v\n%s", err, out)
		}
		return string(out)
	}
	if got := zsh(t, `print -r -- $_comps[spectrumd]`); got != "_spectrumd\n" {
		t.Errorf("compinit registers %q for spectrumd, want _spectrumd", got)
	}
	for _, tt := range []struct {
		name  string
		words []string
		want  []string
	}{
		{"command prefix", []string{"st"}, []string{"start", "status", "stop"}},
		{"flags", []string{"logs", "app", "-"}, []string{"-f", "-run", "-timeout"}},
		{"names, no daemon", []string{"status", "-run", none, ""}, []string{"appvm-lynx", "netvm"}},
		{"names from the daemon, -run=DIR one word", []string{"status", "-run=" + daemon, ""}, []string{"also-daemon", "from-daemon"}},
		{"-data=: directories after the =", []string{"check", "-data=sv"}, []string{"COMPSET -P *=", "FILES -/"}},
		{"-data DIR", []string{"check", "-data", ""}, []string{"FILES -/"}},
		{"-accel=k", []string{"serve", "-accel=k"}, []string{"COMPSET -P *=", "kvm"}},
		{"-start=x1, with -data", []string{"serve", "-data", other, "-start=x1,"}, []string{"COMPSET -P *=", "x1,x2"}},
		{"nothing", []string{"list", "-run", none, ""}, nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			out := zsh(t, `compadd() { [[ $1 == -a ]] && print -rl -- "${(@P)2}" }
compset() { print -r -- "COMPSET $*" }
_files() { print -r -- "FILES $*" }
words=(spectrumd "$@"); CURRENT=$#words
_spectrumd`, tt.words...)
			var got []string
			for l := range strings.Lines(out) {
				got = append(got, strings.TrimSuffix(l, "\n"))
			}
			slices.Sort(got)
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("spectrumd %s<TAB> (-want +got):\n%s", strings.Join(tt.words, " "), diff)
			}
		})
	}
}
