package control

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"syscall"
	"time"
)

// ErrNoDaemon is returned (wrapped) by Dial when no daemon listens on the
// socket: it does not exist, or nothing accepts on it.
var ErrNoDaemon = errors.New("no daemon listening")

// Dial connects to the daemon's socket at path, sends req and reads the
// reply line. A reply that is not OK is returned with an error holding the
// daemon's message. On success the connection is returned with a reader of
// what follows the reply (the log lines of "logs", the console of
// "console"): the caller closes it.
func Dial(path string, req Request) (Response, *bufio.Reader, net.Conn, error) {
	c, err := net.DialTimeout("unix", path, 5*time.Second)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) || errors.Is(err, syscall.ECONNREFUSED) {
			return Response{}, nil, nil, fmt.Errorf("%w at %s", ErrNoDaemon, path)
		}
		return Response{}, nil, nil, fmt.Errorf("connect to spectrumd at %s: %w", path, err)
	}
	b, _ := json.Marshal(req)
	if _, err := c.Write(append(b, '\n')); err != nil {
		c.Close()
		return Response{}, nil, nil, fmt.Errorf("send to spectrumd: %w", err)
	}
	br := bufio.NewReader(c)
	line, err := br.ReadBytes('\n')
	if err != nil {
		c.Close()
		return Response{}, nil, nil, fmt.Errorf("read reply from spectrumd: %w", err)
	}
	var resp Response
	if err := json.Unmarshal(line, &resp); err != nil {
		c.Close()
		return Response{}, nil, nil, fmt.Errorf("reply from spectrumd %q: %w", line, err)
	}
	if !resp.OK {
		c.Close()
		return resp, nil, nil, errors.New(resp.Error)
	}
	return resp, br, c, nil
}

// Call is Dial for a request whose whole answer is its reply line.
func Call(path string, req Request) (Response, error) {
	resp, _, c, err := Dial(path, req)
	if c != nil {
		c.Close()
	}
	return resp, err
}
