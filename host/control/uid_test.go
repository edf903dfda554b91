package control

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"spectrum-os.org/netcfg/internal/testenv"
)

// nobody is the uid the other-user tests connect as.
const nobody = 65534

func TestMain(m *testing.M) {
	testenv.RunHelper(map[string]func() int{helperDial: dialHelper})
	os.Exit(m.Run())
}

// helperDial is the helper process of dialAsNobody: it connects to the
// socket in SPECTRUM_DIAL, sends a list request and prints the reply or the
// error.
const helperDial = "dial"

func dialHelper() int {
	c, err := net.Dial("unix", os.Getenv("SPECTRUM_DIAL"))
	if err != nil {
		fmt.Println("dial:", err)
		return 0
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c, `{"op":"list"}`+"\n")
	line, err := bufio.NewReader(c).ReadString('\n')
	fmt.Println("reply:", strings.TrimSpace(line), errString(err))
	return 0
}

// dialAsNobody runs dialHelper as uid 65534 against path from bin, a copy
// of the test binary that user can run (testenv.SharedBinary), and returns
// what it printed.
func dialAsNobody(t *testing.T, bin, path string) string {
	t.Helper()
	cmd := testenv.HelperCommandOf(context.Background(), bin, helperDial, "SPECTRUM_DIAL="+path)
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
	testenv.Root(t, "to run a helper as another user")
	// t.TempDir's parent is private to root: uid 65534 could not reach
	// the binary or the sockets there.
	bin := testenv.SharedBinary(t)
	dir := filepath.Dir(bin)
	n := 0
	serve := func(allow int) string {
		n++
		path := filepath.Join(dir, fmt.Sprintf("control-%d.sock", n))
		ln, err := Listen(path)
		if err != nil {
			t.Fatal(err)
		}
		srv := &Server{Handler: &fakeHandler{}, AllowUID: allow, Log: slog.New(slog.DiscardHandler)}
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
