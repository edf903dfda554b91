package guest

import (
	"io"
	"net"
	"os"

	"golang.org/x/sys/unix"
)

// DefaultConsole is where the agent logs unless -console says otherwise: the
// guest's first serial port, which the host reads and never writes.
const DefaultConsole = "/dev/ttyS0"

// OpenConsole opens path for logging: write-only and with O_NOCTTY, so the
// agent never reads the console and never makes it its controlling terminal.
// When path cannot be opened (no such device, /dev not populated yet) it
// returns fallback instead, together with the reason, which the caller logs
// once. The returned close function is a no-op for fallback.
func OpenConsole(path string, fallback io.Writer) (w io.Writer, closeFn func() error, err error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fallback, func() error { return nil }, err
	}
	return f, f.Close, nil
}

// Log writes the agent's console log: one line per action, refusal and
// outcome. Lines are buffered and written with one write(2) per Flush, so a
// NIC's lines reach a slow serial console together and a crash loses at most
// the NIC being configured. It uses no fmt: the agent's binary has a size
// budget and logs on its hot path.
type Log struct {
	w   io.Writer
	buf []byte
}

// NewLog returns a Log writing to w.
func NewLog(w io.Writer) *Log { return &Log{w: w} }

// Line appends one line made of the concatenated parts.
func (l *Log) Line(parts ...string) {
	for _, p := range parts {
		l.buf = append(l.buf, p...)
	}
	l.buf = append(l.buf, '\n')
}

// NIC appends a line about one NIC: "eth0 0a:b3:ec:00:a5:46: msg".
func (l *Log) NIC(name string, hw net.HardwareAddr, msg string) {
	l.Line(name, " ", hw.String(), ": ", msg)
}

// Flush writes the buffered lines. A console that cannot be written to is
// not an error the agent can do anything about, so it is ignored.
func (l *Log) Flush() {
	if len(l.buf) == 0 {
		return
	}
	_, _ = l.w.Write(l.buf)
	l.buf = l.buf[:0]
}
