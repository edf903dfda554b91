package daemon

import (
	"bufio"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// nobody is the uid the other-user tests connect as.
const nobody = 65534

// TestControlDialHelper is not a test: run as another user by
// dialAsNobody, it connects to the socket in SPECTRUM_DIAL, sends a list
// request and prints the reply or the error.
func TestControlDialHelper(t *testing.T) {
	path := os.Getenv("SPECTRUM_DIAL")
	if path == "" {
		t.Skip("not a test (in CI neither): the helper process of the other-user tests")
	}
	c, err := net.Dial("unix", path)
	if err != nil {
		fmt.Println("dial:", err)
		os.Exit(0)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c, `{"op":"list"}`+"\n")
	line, err := bufio.NewReader(c).ReadString('\n')
	fmt.Println("reply:", strings.TrimSpace(line), errString(err))
	os.Exit(0)
}

// dialAsNobody runs TestControlDialHelper as uid 65534 against path and
// returns what it printed. The test binary is copied where that user can
// run it (go test's build directory is private).
func dialAsNobody(t *testing.T, bin, path string) string {
	t.Helper()
	cmd := exec.Command(bin, "-test.run=^TestControlDialHelper$")
	cmd.Env = append(os.Environ(), "SPECTRUM_DIAL="+path)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody}}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("helper as uid %d: %v\n%s", nobody, err, out)
	}
	for _, l := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(l, "dial:") || strings.HasPrefix(l, "reply:") {
			return l
		}
	}
	t.Fatalf("helper printed no result:\n%s", out)
	return ""
}

func TestControlRefusesOtherUsers(t *testing.T) {
	if os.Geteuid() != 0 {
		if os.Getenv("CI") != "" {
			t.Fatal("must run as root in CI (switches to uid 65534)")
		}
		t.Skip("needs root to run a helper as another user; runs in CI")
	}
	// t.TempDir's parent is private to root: uid 65534 could not reach
	// the binary or the sockets.
	dir, err := os.MkdirTemp("", "spectrum-uid-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "daemon.test")
	b, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, b, 0o755); err != nil {
		t.Fatal(err)
	}
	n := 0
	serve := func(allow int) string {
		n++
		path := filepath.Join(dir, fmt.Sprintf("control-%d.sock", n))
		ln, err := Listen(path)
		if err != nil {
			t.Fatal(err)
		}
		srv := &ControlServer{Handler: fakeHandler{}, AllowUID: allow, Log: slog.New(slog.DiscardHandler)}
		done := make(chan error)
		go func() { done <- srv.Serve(ln) }()
		t.Cleanup(func() { ln.Close(); <-done })
		return path
	}

	t.Run("socket mode 0600 refuses at connect", func(t *testing.T) {
		got := dialAsNobody(t, bin, serve(-1))
		if !strings.Contains(got, "permission denied") {
			t.Errorf("uid %d: %s; want permission denied at connect", nobody, got)
		}
	})
	// Root passes the file mode anyway; the peer credentials are the second
	// line. Open the socket to everyone to reach that check.
	t.Run("peer credentials refuse", func(t *testing.T) {
		path := serve(-1)
		os.Chmod(path, 0o666)
		got := dialAsNobody(t, bin, path)
		if !strings.Contains(got, `"ok":false`) || !strings.Contains(got, "uid 65534 is not allowed") {
			t.Errorf("uid %d: %s; want a reply refusing it", nobody, got)
		}
	})
	t.Run("AllowUID admits that user", func(t *testing.T) {
		path := serve(nobody)
		os.Chmod(path, 0o666)
		got := dialAsNobody(t, bin, path)
		if !strings.Contains(got, `"ok":true`) {
			t.Errorf("uid %d with AllowUID %d: %s; want list answered", nobody, nobody, got)
		}
	})
}
