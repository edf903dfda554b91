package qmp

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// greeting is QEMU 7.2's greeting, as Debian's build sends it.
const greeting = `{"QMP": {"version": {"qemu": {"micro": 22, "minor": 2, "major": 7}, "package": "Debian 1:7.2+dfsg-7+deb12u18+b3"}, "capabilities": ["oob"]}}`

// command is one command the fake received.
type command struct {
	Execute   string          `json:"execute"`
	Arguments map[string]any  `json:"arguments"`
	ID        json.RawMessage `json:"id"`
	FD        bool            `json:"-"` // a descriptor came with it (SCM_RIGHTS)
}

// peer is a fake QEMU on one end of a connection: it sends a greeting and
// hands every command (qmp_capabilities too) to handle, which answers
// with whatever lines it likes, or none.
type peer struct {
	t      *testing.T
	conn   *net.UnixConn
	handle func(p *peer, cmd command)

	wmu sync.Mutex // one writer at a time: handle and a flooding goroutine

	mu  sync.Mutex
	got []command
}

// socketpair returns both ends of a connected unix stream socket, closed
// when the test ends.
func socketpair(t testing.TB) (*net.UnixConn, *net.UnixConn) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	var conns [2]*net.UnixConn
	for i, fd := range fds {
		f := os.NewFile(uintptr(fd), "socketpair")
		c, err := net.FileConn(f)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		conns[i] = c.(*net.UnixConn)
		t.Cleanup(func() { c.Close() })
	}
	return conns[0], conns[1]
}

// startPeer serves conn as a fake QEMU that sends greet first.
func startPeer(t *testing.T, conn *net.UnixConn, greet string, handle func(*peer, command)) *peer {
	p := &peer{t: t, conn: conn, handle: handle}
	go p.serve(greet)
	return p
}

// newPeer is a fake QEMU on a socketpair, and a Client connected to it.
func newPeer(t *testing.T, handle func(*peer, command)) (*peer, *Client) {
	t.Helper()
	ours, theirs := socketpair(t)
	p := startPeer(t, theirs, greeting, handle)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := Dialer{}.Handshake(ctx, ours)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return p, c
}

// answering is a handler that answers every command at once: reply gives
// the return value (nil for {}), or an error description, and the events
// to send after the reply.
func answering(reply func(cmd string, args map[string]any) (ret any, errDesc string, events []string)) func(*peer, command) {
	return func(p *peer, cmd command) {
		if cmd.Execute == "qmp_capabilities" {
			p.reply(cmd, map[string]any{})
			return
		}
		ret, desc, events := reply(cmd.Execute, cmd.Arguments)
		if desc != "" {
			p.fail(cmd, "GenericError", desc)
		} else {
			if ret == nil {
				ret = map[string]any{}
			}
			p.reply(cmd, ret)
		}
		for _, ev := range events {
			p.line(ev)
		}
	}
}

func (p *peer) serve(greet string) {
	p.line(greet)
	buf := make([]byte, 64<<10)
	oob := make([]byte, unix.CmsgSpace(4*4))
	var pending []byte
	for {
		n, oobn, _, _, err := p.conn.ReadMsgUnix(buf, oob)
		if err != nil {
			return
		}
		withFD := false
		if oobn > 0 {
			msgs, _ := unix.ParseSocketControlMessage(oob[:oobn])
			for _, m := range msgs {
				fds, _ := unix.ParseUnixRights(&m)
				for _, fd := range fds {
					withFD = true
					unix.Close(fd)
				}
			}
		}
		pending = append(pending, buf[:n]...)
		// Commands are JSON objects, one after another, as QEMU parses
		// them: a line end is not required.
		for {
			dec := json.NewDecoder(bytes.NewReader(pending))
			var cmd command
			err := dec.Decode(&cmd)
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				break
			}
			if err != nil {
				p.t.Errorf("fake qemu: bad command %q: %v", pending, err)
				return
			}
			pending = pending[dec.InputOffset():]
			cmd.FD, withFD = withFD, false
			p.mu.Lock()
			p.got = append(p.got, cmd)
			p.mu.Unlock()
			p.handle(p, cmd)
		}
	}
}

// line sends one line (the fake adds QEMU's "\r\n").
func (p *peer) line(s string) error {
	p.wmu.Lock()
	defer p.wmu.Unlock()
	_, err := p.conn.Write([]byte(s + "\r\n"))
	return err
}

func (p *peer) reply(cmd command, ret any) {
	b, _ := json.Marshal(map[string]any{"return": ret, "id": cmd.ID})
	p.line(string(b))
}

func (p *peer) fail(cmd command, class, desc string) {
	b, _ := json.Marshal(map[string]any{"error": map[string]string{"class": class, "desc": desc}, "id": cmd.ID})
	p.line(string(b))
}

// commands lists the commands received after the handshake, "+fd" marking
// those that came with a descriptor.
func (p *peer) commands() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var names []string
	for _, c := range p.got {
		if c.Execute == "qmp_capabilities" {
			continue
		}
		n := c.Execute
		if c.FD {
			n += "+fd"
		}
		names = append(names, n)
	}
	return names
}

func (p *peer) received() []command {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]command(nil), p.got...)
}

// listenPeer is a fake QEMU listening on a unix socket path (for Dial).
func listenPeer(t *testing.T, handle func(*peer, command)) (string, *peer) {
	path := filepath.Join(t.TempDir(), "qmp.sock")
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	p := &peer{t: t, handle: handle}
	go func() {
		c, err := l.AcceptUnix()
		if err != nil {
			return
		}
		t.Cleanup(func() { c.Close() })
		p.conn = c
		p.serve(greeting)
	}()
	return path, p
}

// peakHeap runs fn and returns by how much the heap grew at most while it
// ran, sampled every few milliseconds.
func peakHeap(fn func()) uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	base := ms.HeapAlloc
	peak := base
	stop, stopped := make(chan struct{}), make(chan struct{})
	sample := func() {
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		peak = max(peak, m.HeapAlloc)
	}
	go func() {
		defer close(stopped)
		tick := time.NewTicker(2 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				sample()
			}
		}
	}()
	fn()
	close(stop)
	<-stopped
	sample()
	return peak - base
}
