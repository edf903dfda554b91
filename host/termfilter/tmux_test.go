package termfilter

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"spectrum-os.org/netcfg/internal/testenv"
)

func TestMain(m *testing.M) {
	testenv.RunHelper(map[string]func() int{helperReplay: replayHelper})
	os.Exit(m.Run())
}

// helperReplay writes the file SPECTRUM_REPLAY through a Filter to its
// terminal, then waits to be killed (so the screen stays).
const helperReplay = "replay"

func replayHelper() int {
	b, err := os.ReadFile(os.Getenv("SPECTRUM_REPLAY"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	// script(1) writes a line of its own first, which the program's pane
	// never showed.
	if bytes.HasPrefix(b, []byte("Script started")) {
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			b = b[i+1:]
		}
	}
	var f Filter
	os.Stdout.Write(f.Append(nil, b))
	time.Sleep(10 * time.Minute)
	return 0
}

// roughSequences finds escape sequences in a recording, for the log.
var roughSequences = regexp.MustCompile(`\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)|P[^\x1b]*\x1b\\|[ -/]*[0-~])`)

// screenState is what two panes must agree on: every cell with its
// attributes (capture-pane -e), the cursor, and the modes.
const screenState = "cursor=#{cursor_x},#{cursor_y} alternate_on=#{alternate_on} cursor_flag=#{cursor_flag} " +
	"keypad=#{keypad_flag} keypad_cursor=#{keypad_cursor_flag} insert=#{insert_flag} wrap=#{wrap_flag} " +
	"mouse=#{mouse_any_flag}#{mouse_sgr_flag} region=#{scroll_region_upper}-#{scroll_region_lower}"

// TestFullScreenProgramsLookTheSame runs lynx, less and vim in a real terminal (a
// tmux pane) under script(1), which records what they write, then replays
// the recording through the filter into a second pane: both panes must
// show the same, cell for cell, attributes, cursor and modes included. So
// the filter drops nothing these programs draw with.
func TestFullScreenProgramsLookTheSame(t *testing.T) {
	bin := testenv.Tool(t, "tmux", "make deps installs tmux")
	dir, err := os.MkdirTemp("", "tf")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	page := filepath.Join(dir, "page.html")
	if err := os.WriteFile(page, []byte(`<html><head><title>spectrum test page</title></head><body>
<h1>A heading</h1><p>Some <b>bold</b> and <em>emphasised</em> text, and a <a href="next.html">link</a>.</p>
<ul><li>one</li><li>two</li></ul><pre>  preformatted   text  </pre>
<table border=1><tr><td>cell</td><td>table</td></tr></table></body></html>`), 0o644); err != nil {
		t.Fatal(err)
	}
	text := filepath.Join(dir, "text.txt")
	if err := os.WriteFile(text, []byte("line one\n\tindented line\nline three with a long tail "+strings.Repeat("x", 90)+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "tmux.sock")
	tm := func(args ...string) string {
		t.Helper()
		out, err := exec.Command(bin, append([]string{"-S", sock}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("tmux %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return strings.TrimRight(string(out), "\n")
	}
	conf := filepath.Join(dir, "tmux.conf")
	if err := os.WriteFile(conf, []byte("set -g remain-on-exit on\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tm("-f", conf, "new-session", "-d", "-x", "80", "-y", "24", "-s", "keep", "sleep 600")
	t.Cleanup(func() { exec.Command(bin, "-S", sock, "kill-server").Run() })

	for _, p := range []struct {
		name, tool, cmd string
		ready           string   // on the screen once the program has drawn
		keys            []string // typed, then the screen is compared again
		after           string   // on the screen after the keys
	}{
		{name: "lynx", tool: "lynx", cmd: "lynx -nopause -noreferer " + page, ready: "A heading", keys: []string{"Down", "Down"}, after: "A heading"},
		// A guest's getty on hvc0 says TERM=vt220 (systemd) or linux.
		{name: "lynx-vt220", tool: "lynx", cmd: "env TERM=vt220 lynx -nopause -noreferer " + page, ready: "A heading", keys: []string{"Down"}, after: "A heading"},
		{name: "lynx-linux", tool: "lynx", cmd: "env TERM=linux lynx -nopause -noreferer " + page, ready: "A heading", keys: []string{"Down"}, after: "A heading"},
		{name: "less", tool: "less", cmd: "less " + text, ready: "indented line", keys: []string{"G", "/", "three", "Enter"}, after: "three"},
		{name: "vim", tool: "vim", cmd: "vim -u DEFAULTS -i NONE -N " + text, ready: "indented line", keys: []string{"j", "A", "typed", "Escape", "v", "j"}, after: "VISUAL"},
	} {
		t.Run(p.name, func(t *testing.T) {
			testenv.Tool(t, p.tool, "make deps installs "+p.tool)
			rec := filepath.Join(dir, p.name+".rec")
			tm("new-window", "-d", "-t", "keep", "-n", p.name, fmt.Sprintf("script -q -f -c %q %s", p.cmd, rec))
			waitScreen := func(win, want string) {
				t.Helper()
				deadline := time.Now().Add(30 * time.Second)
				for !strings.Contains(tm("capture-pane", "-p", "-t", win), want) {
					if time.Now().After(deadline) {
						t.Fatalf("%s never showed %q:\n%s", win, want, tm("capture-pane", "-p", "-t", win))
					}
					time.Sleep(50 * time.Millisecond)
				}
			}
			compare := func(step string) {
				t.Helper()
				// Let the program finish drawing: the recording stops
				// growing.
				var size int64 = -1
				for i := 0; i < 100; i++ {
					time.Sleep(100 * time.Millisecond)
					st, err := os.Stat(rec)
					if err == nil && st.Size() == size {
						break
					}
					if err == nil {
						size = st.Size()
					}
				}
				replay := p.name + "-replay"
				tm("new-window", "-d", "-t", "keep", "-n", replay,
					fmt.Sprintf("env %s %s", strings.Join([]string{"SPECTRUM_TEST_HELPER=" + helperReplay, "SPECTRUM_REPLAY=" + rec}, " "), os.Args[0]))
				defer tm("kill-window", "-t", replay)
				var want, got string
				deadline := time.Now().Add(30 * time.Second)
				for {
					want = tm("capture-pane", "-p", "-e", "-t", p.name) + "\n" + tm("display", "-p", "-t", p.name, screenState)
					got = tm("capture-pane", "-p", "-e", "-t", replay) + "\n" + tm("display", "-p", "-t", replay, screenState)
					if want == got || time.Now().After(deadline) {
						break
					}
					time.Sleep(100 * time.Millisecond)
				}
				if diff := cmp.Diff(want, got); diff != "" {
					b, _ := os.ReadFile(rec)
					var f Filter
					t.Errorf("%s, %s: the filtered replay differs from %s itself (-want +got):\n%s\nthe recording: %q\nfiltered: %q",
						p.name, step, p.name, diff, b, f.Append(nil, b))
				}
			}
			waitScreen(p.name, p.ready)
			compare("drawn")
			for _, k := range p.keys {
				if k == "typed" || k == "three" {
					tm("send-keys", "-t", p.name, "-l", k)
				} else {
					tm("send-keys", "-t", p.name, k)
				}
			}
			waitScreen(p.name, p.after)
			compare("after " + strings.Join(p.keys, " "))
			// What the filter changed of the recording, for the log.
			b, _ := os.ReadFile(rec)
			var f Filter
			out := f.Append(nil, b)
			var changed []string
			for _, seq := range roughSequences.FindAll(b, -1) {
				var g Filter
				if got := g.Append(nil, seq); !bytes.Equal(got, seq) {
					changed = append(changed, fmt.Sprintf("%q->%q", seq, got))
				}
			}
			t.Logf("%s: %d bytes recorded, %d after the filter; sequences changed: %v", p.name, len(b), len(out), changed)
		})
	}
}
