package control

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"syscall"
	"time"
)

// ErrNoDaemon is returned (wrapped) by Dial when no daemon listens on the
// socket: it does not exist, or nothing accepts on it.
var ErrNoDaemon = errors.New("no daemon listening")

// NoReplyError is returned by Dial when the daemon did not answer within
// the wait: it may be hung, or still doing what it was asked.
type NoReplyError struct {
	Path string        // the daemon's socket
	Req  Request       // what was asked
	Wait time.Duration // how long the client waited
	Err  error         // the I/O error (a deadline)
}

func (e *NoReplyError) Error() string {
	what := strconv.Quote(e.Req.Op)
	if e.Req.Name != "" {
		what = strconv.Quote(e.Req.Op + " " + e.Req.Name)
	}
	return fmt.Sprintf("no reply from spectrumd at %s to %s within %v", e.Path, what, e.Wait)
}

func (e *NoReplyError) Unwrap() error { return e.Err }

// Dial connects to the daemon's socket at path, sends req and reads the
// reply line, all within wait: a daemon that accepts and never answers
// costs the wait, not a hung client. A reply that is not OK is returned
// with an error holding the daemon's message. On success the connection is
// returned, with no deadline left on it, and a reader of what follows the
// reply (the log lines of "logs", the console of "console"): the caller
// closes it.
func Dial(path string, req Request, wait time.Duration) (Response, *bufio.Reader, net.Conn, error) {
	deadline := time.Now().Add(wait)
	c, err := net.DialTimeout("unix", path, wait)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) || errors.Is(err, syscall.ECONNREFUSED) {
			return Response{}, nil, nil, fmt.Errorf("%w at %s", ErrNoDaemon, path)
		}
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return Response{}, nil, nil, &NoReplyError{Path: path, Req: req, Wait: wait, Err: err}
		}
		return Response{}, nil, nil, fmt.Errorf("connect to spectrumd at %s: %w", path, err)
	}
	fail := func(what string, err error) (Response, *bufio.Reader, net.Conn, error) {
		c.Close()
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return Response{}, nil, nil, &NoReplyError{Path: path, Req: req, Wait: wait, Err: err}
		}
		return Response{}, nil, nil, fmt.Errorf("%s spectrumd at %s: %w", what, path, err)
	}
	c.SetDeadline(deadline)
	b, _ := json.Marshal(req)
	if _, err := c.Write(append(b, '\n')); err != nil {
		return fail("send to", err)
	}
	br := bufio.NewReader(c)
	line, err := br.ReadBytes('\n')
	if err != nil {
		return fail("read the reply of", err)
	}
	var resp Response
	if err := json.Unmarshal(line, &resp); err != nil {
		c.Close()
		return Response{}, nil, nil, fmt.Errorf("reply from spectrumd at %s %q: %w", path, line, err)
	}
	if !resp.OK {
		c.Close()
		return resp, nil, nil, errors.New(resp.Error)
	}
	c.SetDeadline(time.Time{})
	return resp, br, c, nil
}

// Call is Dial for a request whose whole answer is its reply line.
func Call(path string, req Request, wait time.Duration) (Response, error) {
	resp, _, c, err := Dial(path, req, wait)
	if c != nil {
		c.Close()
	}
	return resp, err
}
