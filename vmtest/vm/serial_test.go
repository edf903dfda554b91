package vm

import (
	"context"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
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

func TestSerialState(t *testing.T) {
	r, w := io.Pipe()
	s := NewSerial(r, time.Now())
	go func() {
		for _, l := range []string{
			"link eth0 index=2 mac=0a:b3:ec:00:a5:46 up=false rp_filter=0 t=1.0",
			"state done n=1 t=1.1",
			"fail ping 1.2.3.4 icmp: unreachable t=1.2",
			"link eth0 index=2 mac=0a:b3:ec:00:a5:46 up=true rp_filter=0 t=2.0",
			"addr eth0 100.64.165.70/16 t=2.0",
			"state done n=2 t=2.1",
		} {
			io.WriteString(w, Prefix+l+"\n")
		}
		w.Close()
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	got, err := s.WaitState(ctx, func(st []string) bool { return len(st) == 2 })
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"link eth0 index=2 mac=0a:b3:ec:00:a5:46 up=true rp_filter=0", "addr eth0 100.64.165.70/16"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("WaitState (-want +got):\n%s", diff)
	}
	first, ok := s.State(1)
	if diff := cmp.Diff([]string{"link eth0 index=2 mac=0a:b3:ec:00:a5:46 up=false rp_filter=0"}, first); diff != "" || !ok {
		t.Errorf("State(1) ok=%v (-want +got):\n%s", ok, diff)
	}
	if last, _ := s.State(0); !cmp.Equal(last, want) {
		t.Errorf("State(0) = %q, want %q", last, want)
	}
	if _, ok := s.State(3); ok {
		t.Errorf("State(3) ok, want not yet")
	}
}
