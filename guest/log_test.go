package guest

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// countingWriter records each Write call, to check that a NIC's lines go
// out in one write.
type countingWriter struct{ writes []string }

func (w *countingWriter) Write(b []byte) (int, error) {
	w.writes = append(w.writes, string(b))
	return len(b), nil
}

func TestLogFlushWritesOnce(t *testing.T) {
	w := &countingWriter{}
	l := NewLog(w)
	hw := net.HardwareAddr{0x0a, 0xb3, 0xec, 0, 0xa5, 0x46}
	l.NIC("eth0", hw, "added 100.64.165.70/16")
	l.Line("spectrum-netcfg: ", "done")
	l.Flush()
	l.Flush() // nothing buffered: no write
	want := "eth0 0a:b3:ec:00:a5:46: added 100.64.165.70/16\nspectrum-netcfg: done\n"
	if len(w.writes) != 1 || w.writes[0] != want {
		t.Errorf("writes = %q, want one write %q", w.writes, want)
	}
}

func TestOpenConsole(t *testing.T) {
	p := filepath.Join(t.TempDir(), "console")
	if err := os.WriteFile(p, []byte("before\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	fallback := &strings.Builder{}
	w, closeFn, err := OpenConsole(p, fallback)
	if err != nil {
		t.Fatalf("OpenConsole(%s): %v", p, err)
	}
	if _, err := w.Write([]byte("after\n")); err != nil {
		t.Fatal(err)
	}
	if err := closeFn(); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(p); string(b) != "before\nafter\n" {
		t.Errorf("console = %q, want the line appended", b)
	}
	f, ok := w.(*os.File)
	if !ok {
		t.Fatalf("console writer is %T, want *os.File", w)
	}
	if _, err := f.Read(make([]byte, 1)); err == nil {
		t.Error("console opened readable; it must be write-only")
	}

	missing := filepath.Join(t.TempDir(), "ttyS0")
	w, closeFn, err = OpenConsole(missing, fallback)
	if err == nil || w != fallback {
		t.Errorf("OpenConsole(missing) = %v, %v; want the fallback and an error", w, err)
	}
	if err := closeFn(); err != nil {
		t.Errorf("fallback close: %v", err)
	}
	if _, err := os.Stat(missing); !os.IsNotExist(err) {
		t.Errorf("OpenConsole created %s", missing)
	}
}
