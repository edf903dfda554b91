package vm

import (
	"context"
	"io"
	"strings"
	"testing"
	"time"
)

func TestSerialWait(t *testing.T) {
	r, w := io.Pipe()
	s := NewSerial(r, time.Now())
	go func() {
		io.WriteString(w, "[    1.0] kernel noise\n")
		io.WriteString(w, "[    1.1] x"+Prefix+"init pid=1 t=1.100000\r\n")
		time.Sleep(10 * time.Millisecond)
		io.WriteString(w, Prefix+"addr eth0 100.64.165.70/16 t=2.000000\n")
		w.Close()
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	l, err := s.Wait(ctx, "nothing", "addr eth0")
	if err != nil {
		t.Fatal(err)
	}
	if e, _ := Event(l.Text); e != "addr eth0 100.64.165.70/16 t=2.000000" {
		t.Errorf("Wait returned %q", e)
	}
	// An event already read is found again.
	if _, err := s.Wait(ctx, "init "); err != nil {
		t.Errorf("Wait for an earlier line: %v", err)
	}
	// After EOF a missing event fails at once instead of waiting.
	if _, err := s.Wait(ctx, "never"); err == nil || !strings.Contains(err.Error(), "closed") {
		t.Errorf("Wait after EOF = %v, want console closed", err)
	}
	if got := Field("init pid=1 t=1.100000", "t"); got != "1.100000" {
		t.Errorf("Field t = %q", got)
	}
}

func TestSerialWaitDeadline(t *testing.T) {
	r, w := io.Pipe()
	defer w.Close()
	s := NewSerial(r, time.Now())
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := s.Wait(ctx, "init"); err == nil {
		t.Error("Wait without output returned no error")
	}
}

func TestShellQuote(t *testing.T) {
	got := shellQuote([]string{"qemu", "-append", "console=ttyS0 panic=-1", "romfile=", ""})
	want := `qemu -append 'console=ttyS0 panic=-1' romfile= ''`
	if got != want {
		t.Errorf("shellQuote = %s, want %s", got, want)
	}
}
