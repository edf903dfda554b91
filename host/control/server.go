package control

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"spectrum-os.org/netcfg/host/vmlog"
	"spectrum-os.org/netcfg/internal/printable"
)

// Handler is what the control socket asks of the daemon.
type Handler interface {
	List() []VMStatus
	Status(name string) (VMStatus, error)
	Start(name string) error
	Stop(name string) error
	// Logs returns the VM's log file, for reading and following.
	Logs(name string) (*vmlog.File, error)
	// Console connects to the VM's virtio-console. Only one user at a time:
	// a second gets an error saying who holds it.
	Console(name string) (io.ReadWriteCloser, error)
}

const (
	maxRequest = 64 << 10
	// DefaultRequestTimeout is how long a client has to send its request
	// line once connected.
	DefaultRequestTimeout = 10 * time.Second
	// DefaultReplyTimeout is how long one write to a client may block (a
	// client that stops reading a long log is dropped after it).
	DefaultReplyTimeout = 30 * time.Second
	// MaxClients is how many connections are served at once; the excess
	// get a "too many clients" reply and are closed.
	MaxClients = 64
)

// Server serves the control socket: one goroutine per connection, at most
// MaxClients at once, each bounded by RequestTimeout and ReplyTimeout.
type Server struct {
	Handler Handler
	Log     *slog.Logger
	// AllowUID is the one non-root user allowed to connect, besides root;
	// -1 allows root only.
	AllowUID int
	// RequestTimeout bounds the wait for a client's request line; 0 means
	// DefaultRequestTimeout.
	RequestTimeout time.Duration
	// ReplyTimeout bounds each write to a client; 0 means
	// DefaultReplyTimeout.
	ReplyTimeout time.Duration

	wg       sync.WaitGroup
	sema     chan struct{}
	refusing chan struct{}
}

// hangUp closes a client's connection so that it still reads the reply:
// closing a unix socket with unread input resets it, and the peer's next
// read fails with ECONNRESET before it sees the data queued for it. So the
// write side is shut first, and what the client still sends (at most
// maxRequest bytes, for at most a second) is read and dropped.
func hangUp(c *net.UnixConn) {
	c.CloseWrite()
	c.SetReadDeadline(time.Now().Add(time.Second))
	io.Copy(io.Discard, io.LimitReader(c, maxRequest))
	c.Close()
}

// Listen creates the control socket at path with mode 0600, replacing a
// stale socket left by a daemon that died.
func Listen(path string) (*net.UnixListener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, err
	}
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return nil, fmt.Errorf("control socket %s: another spectrumd is serving it", path)
	}
	os.Remove(path)
	old := unix.Umask(0o177)
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	unix.Umask(old)
	if err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, err
	}
	return ln, nil
}

// Serve accepts connections until ln is closed, then waits for the
// connections being served to end.
func (s *Server) Serve(ln *net.UnixListener) error {
	s.sema = make(chan struct{}, MaxClients)
	s.refusing = make(chan struct{}, MaxClients)
	defer s.wg.Wait()
	for {
		c, err := ln.AcceptUnix()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return err
		}
		select {
		case s.sema <- struct{}{}:
		default:
			// Refusals get a goroutine of their own too (the reply must
			// not stall the accept loop), but only so many at once:
			// beyond that a client is simply hung up on.
			select {
			case s.refusing <- struct{}{}:
				s.wg.Add(1)
				go func() {
					defer func() { <-s.refusing; s.wg.Done() }()
					s.reply(c, Response{Error: "too many clients; try again"})
					hangUp(c)
				}()
			default:
				c.Close()
			}
			continue
		}
		s.wg.Add(1)
		go func() {
			defer func() { <-s.sema; s.wg.Done() }()
			defer hangUp(c)
			s.serveConn(c)
		}()
	}
}

func (s *Server) peerAllowed(c *net.UnixConn) error {
	raw, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var cred *unix.Ucred
	var cerr error
	if err := raw.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return err
	}
	if cerr != nil {
		return cerr
	}
	if cred.Uid == 0 || (s.AllowUID >= 0 && int(cred.Uid) == s.AllowUID) {
		return nil
	}
	return fmt.Errorf("uid %d is not allowed to control spectrumd", cred.Uid)
}

func (s *Server) requestTimeout() time.Duration {
	if s.RequestTimeout > 0 {
		return s.RequestTimeout
	}
	return DefaultRequestTimeout
}

func (s *Server) replyTimeout() time.Duration {
	if s.ReplyTimeout > 0 {
		return s.ReplyTimeout
	}
	return DefaultReplyTimeout
}

// reply writes r, its error escaped (printable.Lines): it quotes names and
// paths anyone could choose, and any client may print it as it is.
func (s *Server) reply(c net.Conn, r Response) error {
	r.Error = printable.Lines(r.Error)
	c.SetWriteDeadline(time.Now().Add(s.replyTimeout()))
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	_, err = c.Write(append(b, '\n'))
	c.SetWriteDeadline(time.Time{})
	return err
}

func (s *Server) serveConn(c *net.UnixConn) {
	if err := s.peerAllowed(c); err != nil {
		s.Log.Warn("control socket: refused a client", "err", err)
		s.reply(c, Response{Error: err.Error()})
		return
	}
	c.SetReadDeadline(time.Now().Add(s.requestTimeout()))
	br := bufio.NewReaderSize(io.LimitReader(c, maxRequest), 4096)
	line, err := br.ReadSlice('\n')
	if err != nil && !(err == io.EOF && len(line) > 0) {
		msg := "bad request: " + err.Error()
		if errors.Is(err, bufio.ErrBufferFull) || err == io.EOF {
			msg = "bad request: want one JSON object on one line, at most 4096 bytes"
		}
		s.reply(c, Response{Error: msg})
		return
	}
	c.SetReadDeadline(time.Time{})
	var req Request
	if err := json.Unmarshal(line, &req); err != nil {
		s.reply(c, Response{Error: "bad request: " + err.Error()})
		return
	}
	s.Log.Debug("control request", "op", req.Op, "vm", req.Name)
	switch req.Op {
	case "list":
		s.reply(c, Response{OK: true, VMs: s.Handler.List()})
	case "status":
		st, err := s.Handler.Status(req.Name)
		s.replyErr(c, err, st)
	case "start":
		s.replyErr(c, s.Handler.Start(req.Name))
	case "stop":
		s.replyErr(c, s.Handler.Stop(req.Name))
	case "logs":
		s.serveLogs(c, req)
	case "console":
		s.serveConsole(c, br, req)
	default:
		s.reply(c, Response{Error: fmt.Sprintf("unknown op %q (want list, start, stop, status, logs, console)", req.Op)})
	}
}

func (s *Server) replyErr(c net.Conn, err error, st ...VMStatus) {
	if err != nil {
		s.reply(c, Response{Error: err.Error()})
		return
	}
	s.reply(c, Response{OK: true, VMs: st})
}

func (s *Server) serveLogs(c *net.UnixConn, req Request) {
	lf, err := s.Handler.Logs(req.Name)
	if err != nil {
		s.reply(c, Response{Error: err.Error()})
		return
	}
	var lines <-chan string
	stop := func() {}
	if req.Follow {
		// Follow before copying the file, so no line falls between the two.
		lines, stop = lf.Follow()
	}
	defer stop()
	if s.reply(c, Response{OK: true}) != nil {
		return
	}
	for _, p := range []string{lf.Path + ".1", lf.Path} {
		f, err := os.Open(p)
		if err != nil {
			continue
		}
		c.SetWriteDeadline(time.Now().Add(s.replyTimeout()))
		_, err = io.Copy(c, f)
		f.Close()
		if err != nil {
			return
		}
	}
	if !req.Follow {
		return
	}
	// End when the client goes away: it never writes after its request.
	gone := make(chan struct{})
	go func() { io.Copy(io.Discard, c); close(gone) }()
	for {
		select {
		case l, ok := <-lines:
			if !ok {
				return
			}
			c.SetWriteDeadline(time.Now().Add(s.replyTimeout()))
			if _, err := io.WriteString(c, l+"\n"); err != nil {
				return
			}
		case <-gone:
			return
		}
	}
}

func (s *Server) serveConsole(c *net.UnixConn, br *bufio.Reader, req Request) {
	con, err := s.Handler.Console(req.Name)
	if err != nil {
		s.reply(c, Response{Error: err.Error()})
		return
	}
	defer con.Close()
	if s.reply(c, Response{OK: true}) != nil {
		return
	}
	// A client that stops reading while the guest writes is dropped after
	// the reply timeout, which releases the console; one that only stops
	// typing is an idle terminal, and stays.
	done := make(chan struct{}, 2)
	go func() { io.Copy(con, io.MultiReader(br, c)); done <- struct{}{} }()
	go func() { io.Copy(&deadlineWriter{c: c, d: s.replyTimeout()}, con); done <- struct{}{} }()
	<-done
}

// deadlineWriter bounds each write to a client.
type deadlineWriter struct {
	c net.Conn
	d time.Duration
}

func (w *deadlineWriter) Write(p []byte) (int, error) {
	w.c.SetWriteDeadline(time.Now().Add(w.d))
	return w.c.Write(p)
}
