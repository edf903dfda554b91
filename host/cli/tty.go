package cli

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// tty is a terminal put in raw mode, with the settings to put back.
type tty struct {
	fd    int
	saved *unix.Termios // nil: not a terminal, nothing to put back
}

// makeRaw puts f in raw mode (as cfmakeraw) if it is a terminal.
func makeRaw(f *os.File) (*tty, error) {
	fd := int(f.Fd())
	saved, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err != nil {
		return &tty{fd: fd}, nil // not a terminal: input is read as it comes
	}
	raw := *saved
	raw.Iflag &^= unix.IGNBRK | unix.BRKINT | unix.PARMRK | unix.ISTRIP | unix.INLCR | unix.IGNCR | unix.ICRNL | unix.IXON
	raw.Oflag &^= unix.OPOST
	raw.Lflag &^= unix.ECHO | unix.ECHONL | unix.ICANON | unix.ISIG | unix.IEXTEN
	raw.Cflag &^= unix.CSIZE | unix.PARENB
	raw.Cflag |= unix.CS8
	raw.Cc[unix.VMIN] = 1
	raw.Cc[unix.VTIME] = 0
	if err := unix.IoctlSetTermios(fd, unix.TCSETS, &raw); err != nil {
		return nil, fmt.Errorf("raw mode: %w", err)
	}
	return &tty{fd: fd, saved: saved}, nil
}

// restore puts the terminal's settings back once what was written has
// gone out, and discards input not read yet (TCSETSF): a mouse report or
// a key typed for the guest in the last instant must not reach the shell
// the operator returns to.
func (t *tty) restore() error {
	if t.saved == nil {
		return nil
	}
	if err := unix.IoctlSetTermios(t.fd, unix.TCSETSF, t.saved); err != nil {
		return fmt.Errorf("restore the terminal's settings: %w", err)
	}
	return nil
}

// isTerminal tells whether w is a terminal.
func isTerminal(w any) bool {
	f, ok := w.(interface{ Fd() uintptr })
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}
