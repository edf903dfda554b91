package cli

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"spectrum-os.org/netcfg/host/control"
	"spectrum-os.org/netcfg/host/vmlog"
	"spectrum-os.org/netcfg/internal/testenv"
)

// helperConsole is `spectrumd console` with the arguments in
// SPECTRUM_CONSOLE_ARGS (one per line), on the helper's own terminal.
const helperConsole = "console"

func consoleHelper() int {
	if err := Console(strings.Split(os.Getenv("SPECTRUM_CONSOLE_ARGS"), "\n"), os.Stdin, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "console:", err)
		return 1
	}
	return 0
}

// consoleHandler is a daemon with one VM, "vm", whose console is the
// test's: each console request hands the test the guest's end.
type consoleHandler struct{ guests chan net.Conn }

func (*consoleHandler) List() []control.VMStatus { return nil }
func (*consoleHandler) Status(string) (control.VMStatus, error) {
	return control.VMStatus{}, errors.New("no status here")
}
func (*consoleHandler) Start(string) error               { return errors.New("no start here") }
func (*consoleHandler) Stop(string) error                { return errors.New("no stop here") }
func (*consoleHandler) Logs(string) (*vmlog.File, error) { return nil, errors.New("no logs here") }
func (h *consoleHandler) Console(name string) (io.ReadWriteCloser, error) {
	if name != "vm" {
		return nil, fmt.Errorf("no VM named %q", name)
	}
	host, guest := net.Pipe()
	h.guests <- guest
	return host, nil
}

// serveConsoles serves a control socket in run whose VM "vm" has a console
// the test plays the guest of.
func serveConsoles(t *testing.T, run string) <-chan net.Conn {
	t.Helper()
	ln, err := control.Listen(ControlSocket(run))
	if err != nil {
		t.Fatal(err)
	}
	h := &consoleHandler{guests: make(chan net.Conn, 1)}
	srv := &control.Server{Handler: h, Log: slog.New(slog.DiscardHandler), AllowUID: -1}
	done := make(chan struct{})
	go func() { srv.Serve(ln); close(done) }()
	t.Cleanup(func() { ln.Close(); <-done })
	return h.guests
}

// tmux runs a private tmux server for one test.
type tmux struct {
	t    *testing.T
	bin  string
	sock string
}

func (m *tmux) run(args ...string) string {
	m.t.Helper()
	out, err := exec.Command(m.bin, append([]string{"-S", m.sock}, args...)...).CombinedOutput()
	if err != nil {
		m.t.Fatalf("tmux %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return strings.TrimRight(string(out), "\n")
}

// paneState is what the pane's terminal (tmux's emulation of it) is in:
// every mode a guest could leave behind that tmux shows.
const paneState = "alternate_on=#{alternate_on} mouse_any=#{mouse_any_flag} mouse_all=#{mouse_all_flag} " +
	"mouse_button=#{mouse_button_flag} mouse_standard=#{mouse_standard_flag} mouse_sgr=#{mouse_sgr_flag} " +
	"cursor=#{cursor_flag} keypad=#{keypad_flag} keypad_cursor=#{keypad_cursor_flag} insert=#{insert_flag} " +
	"wrap=#{wrap_flag} origin=#{origin_flag} region=#{scroll_region_upper}-#{scroll_region_lower} title=#{pane_title}"

func (m *tmux) waitFor(what string, cond func() bool) {
	m.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			m.t.Fatalf("timed out waiting for %s; the pane shows:\n%s\nits state: %s", what,
				m.run("capture-pane", "-p", "-t", "t"), m.run("display", "-p", "-t", "t", paneState))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Hostile console output, written by the test's guest while attached.
const (
	// On the normal screen: a fake notice and a fake host prompt, and a
	// second fake prompt drawn at the bottom with the cursor put back.
	guestFakeDetach = "guest$ \r\n\u23cf spectrumd: detached from vm: Ctrl-] pressed\r\nroot@host:~# " +
		"\x1b7\x1b[24;1Hroot@host:~# fake-bottom\x1b8"
	// Everything a guest must not do to the terminal: clipboard, title,
	// queries that tmux answers (DA, DA2, DSR, CPR, DECRQSS, XTVERSION,
	// the title report), a reset, tmux's passthrough.
	guestHostile = "\x1b]52;c;ZWNobyBwd25lZA==\x07\x1b]2;pwned\x07\x1b]0;pwned too\x1b\\\x1bk pwned window\x1b\\" +
		"\x1b[c\x1b[>c\x1b[5n\x1b[6n\x1bP$qm\x1b\\\x1b[>q\x1b[21t\x1bPtmux;\x1b\x1b]52;c;eA==\x07\x1b\\" +
		"\u009d52;c;eA==\u0007"
	// And the modes of a full-screen program, which it may change while
	// attached; the alternate screen last, so it shows.
	guestModes = "\x1b[?1049h\x1b[?1000;1002;1006h\x1b[?2004h\x1b[?1h\x1b=\x1b[?25l\x1b[4h\x1b[2;5r\x1b[?6h\x1b[?7l" +
		"\x1b[1;31mred\x1b(0lqk"
)

// TestConsoleKeepsTheTerminal attaches `spectrumd console` in a real
// terminal (a tmux pane) to a guest that sends hostile output: the
// clipboard stays empty, the title as it was, no query is answered into
// the guest, the modes a full-screen program turns on work while attached
// and are all off after Ctrl-], stty's settings are the same before and
// after, and the "detached" notice, with nothing of the guest's below it,
// is the only line that begins with the marker.
func TestConsoleKeepsTheTerminal(t *testing.T) {
	bin := testenv.Tool(t, "tmux", "make deps installs tmux")
	dir, err := os.MkdirTemp("", "sc") // a short path: a unix socket's is at most 107 bytes
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	run := filepath.Join(dir, "run")
	guests := serveConsoles(t, run)

	// The pane: stty's settings before and after the console, then raw
	// input for the bracketed paste check.
	script := filepath.Join(dir, "pane.sh")
	env := fmt.Sprintf("SPECTRUM_TEST_HELPER=%s SPECTRUM_CONSOLE_ARGS='-run\n%s\nvm'", helperConsole, run)
	if err := os.WriteFile(script, []byte(fmt.Sprintf(`cd %s
stty -g >before
read go
env %s %s
echo $? >status
stty -g >after
stty raw -echo
head -c 5 >pasted.tmp && mv pasted.tmp pasted
sleep 600
`, dir, env, os.Args[0])), 0o700); err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(dir, "tmux.conf")
	// set-clipboard on: an OSC 52 that reached tmux would make a buffer.
	// allow-rename on: a guest's rename sequence would change the window's
	// name; automatic-rename off, so nothing else does (tmux names a window
	// after its pane's command, which went from bash to sh as the pane's
	// shell exec'd the script, sometimes after the name was read).
	if err := os.WriteFile(conf, []byte("set -g set-clipboard on\nset -g remain-on-exit on\nset -g allow-rename on\nset -g automatic-rename off\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	m := &tmux{t: t, bin: bin, sock: filepath.Join(dir, "tmux.sock")}
	m.run("-f", conf, "new-session", "-d", "-x", "80", "-y", "24", "-s", "t", "sh "+script)
	t.Cleanup(func() { exec.Command(bin, "-S", m.sock, "kill-server").Run() })
	m.run("select-pane", "-t", "t", "-T", "operator's title")
	before := m.run("display", "-p", "-t", "t", paneState)
	windowName := m.run("display", "-p", "-t", "t", "#{window_name}")
	m.run("send-keys", "-t", "t", "go", "Enter")

	var guest net.Conn
	select {
	case guest = <-guests:
	case <-time.After(30 * time.Second):
		t.Fatalf("the console never connected; the pane shows:\n%s", m.run("capture-pane", "-p", "-t", "t"))
	}
	defer guest.Close()
	typed := make(chan []byte, 1)
	go func() {
		// What reaches the guest: the operator's keys, and nothing else.
		var got []byte
		buf := make([]byte, 256)
		for !bytes.Contains(got, []byte("typed")) {
			n, err := guest.Read(buf)
			got = append(got, buf[:n]...)
			if err != nil {
				break
			}
		}
		typed <- got
	}()
	if _, err := io.WriteString(guest, guestFakeDetach+guestHostile+guestModes); err != nil {
		t.Fatal(err)
	}
	m.waitFor("the guest's modes while attached", func() bool {
		s := m.run("display", "-p", "-t", "t", "#{alternate_on} #{mouse_button_flag} #{cursor_flag} #{insert_flag}")
		return s == "1 1 0 1"
	})
	m.run("send-keys", "-t", "t", "-l", "typed")
	select {
	case got := <-typed:
		if string(got) != "typed" {
			t.Errorf("the guest read %q, want only the keys typed (a query was answered)", got)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the typed keys never reached the guest")
	}

	m.run("send-keys", "-t", "t", "C-]")
	m.waitFor("the console to exit", func() bool { _, err := os.Stat(filepath.Join(dir, "after")); return err == nil })
	if b, _ := os.ReadFile(filepath.Join(dir, "status")); strings.TrimSpace(string(b)) != "0" {
		t.Errorf("spectrumd console exited with %q", b)
	}

	after := m.run("display", "-p", "-t", "t", paneState)
	if diff := cmp.Diff(before, after); diff != "" {
		t.Errorf("the pane's state after detaching (-want +got):\n%s", diff)
	}
	if got := m.run("display", "-p", "-t", "t", "#{window_name}"); got != windowName {
		t.Errorf("window name %q, was %q", got, windowName)
	}
	if bufs := m.run("list-buffers"); bufs != "" {
		t.Errorf("tmux's paste buffers (the clipboard) hold:\n%s", bufs)
	}
	sttyBefore, _ := os.ReadFile(filepath.Join(dir, "before"))
	sttyAfter, _ := os.ReadFile(filepath.Join(dir, "after"))
	if len(sttyBefore) == 0 || string(sttyBefore) != string(sttyAfter) {
		t.Errorf("stty -g before %q, after %q", sttyBefore, sttyAfter)
	}

	screen := m.run("capture-pane", "-p", "-t", "t")
	t.Logf("the pane after detaching:\n%s", screen)
	var marked []string
	lines := strings.Split(screen, "\n")
	last := -1
	for i, l := range lines {
		if strings.HasPrefix(l, "\u23cf") {
			marked = append(marked, l)
		}
		if strings.TrimSpace(l) != "" {
			last = i
		}
	}
	want := []string{"\u23cf spectrumd: connected to vm's console; Ctrl-] detaches", "\u23cf spectrumd: detached from vm: Ctrl-] pressed"}
	if diff := cmp.Diff(want, marked); diff != "" {
		t.Errorf("lines with the marker (-want +got):\n%s\nthe screen:\n%s", diff, screen)
	}
	if last < 0 || lines[last] != want[1] {
		t.Errorf("the last line is not the notice; the screen:\n%s", screen)
	}
	if !strings.Contains(screen, "\uFFFD spectrumd: detached from vm") {
		t.Errorf("the guest's fake notice is not shown as the guest's (with U+FFFD); the screen:\n%s", screen)
	}

	// Bracketed paste is off again: a paste reaches the shell as it is.
	m.run("set-buffer", "hello")
	m.run("paste-buffer", "-p", "-t", "t")
	m.waitFor("the paste", func() bool { _, err := os.Stat(filepath.Join(dir, "pasted")); return err == nil })
	if b, _ := os.ReadFile(filepath.Join(dir, "pasted")); string(b) != "hello" {
		t.Errorf("pasted %q, want hello (bracketed paste left on)", b)
	}
}
