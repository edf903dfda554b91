// Package tput measures TCP throughput between a test guest and a server
// (another guest or the test LAN): the sender writes for a fixed time, half-
// closes, and the receiver answers with the number of bytes it read, so the
// figure counts only what arrived, not what sat in socket buffers. Both the
// guests' init (vmtest/cmd/testinit) and the LAN (vmtest/lan) use it.
package tput

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"time"
)

// Port is where the receivers listen.
const Port = 5001

// Serve receives on ln until it is closed: each connection is read to its
// end and answered with the byte count (8 bytes, big endian).
func Serve(ln net.Listener) error {
	for {
		c, err := ln.Accept()
		if err != nil {
			return err
		}
		go Receive(c)
	}
}

// Receive reads c to its end, answers with the byte count (8 bytes, big
// endian) and closes c: the receiver's side of one measurement, on a
// connection either side opened.
func Receive(c net.Conn) {
	defer c.Close()
	// A sender that stalls must not hold the goroutine forever.
	c.SetDeadline(time.Now().Add(10 * time.Minute))
	n, err := io.Copy(io.Discard, c)
	if err != nil {
		return
	}
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], uint64(n))
	c.Write(b[:])
}

// BackPort is where a sender listens for a receiver that connects to it
// (SendOn): a client measuring its path to its provider, which accepts no
// connection from its clients but their replies.
const BackPort = 5002

// Result is one measurement.
type Result struct {
	Bytes int64
	Took  time.Duration // from the connection's start to the receiver's count
}

// BitsPerSecond is the throughput the receiver saw.
func (r Result) BitsPerSecond() float64 {
	if r.Took <= 0 {
		return 0
	}
	return float64(r.Bytes) * 8 / r.Took.Seconds()
}

// Send connects to addr, writes for d, and waits for the receiver's count
// (at most timeout in all). The count must equal what was written.
func Send(addr string, d, timeout time.Duration) (Result, error) {
	start := time.Now()
	c, err := net.DialTimeout("tcp", addr, timeout)
	if err != nil {
		return Result{}, err
	}
	return send(c, start, d, timeout)
}

// SendOn is Send on the first connection a receiver opens to ln (one
// that runs Receive on it), waiting up to timeout for it.
func SendOn(ln *net.TCPListener, d, timeout time.Duration) (Result, error) {
	ln.SetDeadline(time.Now().Add(timeout))
	c, err := ln.Accept()
	if err != nil {
		return Result{}, err
	}
	return send(c, time.Now(), d, timeout)
}

// send writes to c from start for d, then half-closes and reads the
// receiver's count; c is closed on return.
func send(c net.Conn, start time.Time, d, timeout time.Duration) (Result, error) {
	addr := c.RemoteAddr().String()
	defer c.Close()
	c.SetDeadline(start.Add(timeout))
	buf := make([]byte, 64<<10)
	var sent int64
	for end := start.Add(d); time.Now().Before(end); {
		n, err := c.Write(buf)
		sent += int64(n)
		if err != nil {
			return Result{}, fmt.Errorf("send to %s: %w", addr, err)
		}
	}
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return Result{}, errors.New("not a TCP connection")
	}
	if err := tc.CloseWrite(); err != nil {
		return Result{}, err
	}
	var b [8]byte
	if _, err := io.ReadFull(c, b[:]); err != nil {
		return Result{}, fmt.Errorf("count from %s: %w", addr, err)
	}
	got := int64(binary.BigEndian.Uint64(b[:]))
	if got != sent {
		return Result{}, fmt.Errorf("%s received %d bytes, %d sent", addr, got, sent)
	}
	return Result{Bytes: got, Took: time.Since(start)}, nil
}
