package daemon

import (
	"os"
	"path/filepath"
	"sync"
	"unicode/utf8"
)

// LogFile is a VM's serial log on disk with a size cap: when the file would
// grow past Max bytes it is renamed to NAME.1 (replacing the previous one) and
// a new file is started, so one VM never holds more than about 2×Max bytes of
// disk however fast its guest writes.
type LogFile struct {
	Path string
	Max  int64 // 0 means DefaultLogMax

	mu   sync.Mutex
	f    *os.File
	size int64
	subs map[chan string]struct{}
}

// DefaultLogMax is the cap of one generation of a VM's log file.
const DefaultLogMax = 4 << 20

// maxLine is the longest line kept; longer lines are cut and marked, so a
// guest that never writes a newline cannot make the host buffer without end.
const maxLine = 4096

// cutMark ends a line that was cut.
const cutMark = "…[cut]"

// WriteLine appends one line (without its newline) and hands it to every
// follower. Errors are returned but the line still reaches followers.
func (l *LogFile) WriteLine(line string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	for ch := range l.subs {
		select {
		case ch <- line:
		default: // a slow follower loses lines rather than stalling the VM's console
		}
	}
	max := l.Max
	if max == 0 {
		max = DefaultLogMax
	}
	if l.f != nil && l.size+int64(len(line))+1 > max {
		l.f.Close()
		l.f = nil
		if err := os.Rename(l.Path, l.Path+".1"); err != nil && !os.IsNotExist(err) {
			return err
		}
	}
	if l.f == nil {
		if err := os.MkdirAll(filepath.Dir(l.Path), 0o750); err != nil {
			return err
		}
		f, err := os.OpenFile(l.Path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640)
		if err != nil {
			return err
		}
		st, err := f.Stat()
		if err != nil {
			f.Close()
			return err
		}
		l.f, l.size = f, st.Size()
	}
	n, err := l.f.WriteString(line + "\n")
	l.size += int64(n)
	return err
}

// Follow returns a channel that receives every line written from now on, and
// a function that stops following.
func (l *LogFile) Follow() (<-chan string, func()) {
	ch := make(chan string, 256)
	l.mu.Lock()
	if l.subs == nil {
		l.subs = make(map[chan string]struct{})
	}
	l.subs[ch] = struct{}{}
	l.mu.Unlock()
	return ch, func() {
		l.mu.Lock()
		if _, ok := l.subs[ch]; ok {
			delete(l.subs, ch)
			close(ch)
		}
		l.mu.Unlock()
	}
}

// Close closes the file; followers are ended.
func (l *LogFile) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	for ch := range l.subs {
		delete(l.subs, ch)
		close(ch)
	}
	if l.f == nil {
		return nil
	}
	err := l.f.Close()
	l.f = nil
	return err
}

// Sanitize makes a line the guest wrote safe to put in the host's logs:
// control characters (including ESC, CR and the C1 range) and invalid UTF-8
// are written as Go escapes, so a guest cannot forge a line that looks like
// spectrumd's own, move the terminal's cursor, or split one line into two.
// Lines longer than maxLine bytes are cut and marked.
func Sanitize(s string) string {
	clean := true
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == 0x7f || c >= 0x80 {
			clean = false
			break
		}
	}
	if clean && len(s) <= maxLine {
		return s
	}
	const hex = "0123456789abcdef"
	b := make([]byte, 0, len(s)+16)
	for i := 0; i < len(s) && len(b) < maxLine; {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size <= 1:
			b = append(b, '\\', 'x', hex[s[i]>>4], hex[s[i]&0xf])
		case r == '\t':
			b = append(b, '\\', 't')
		case r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) || r == 0x2028 || r == 0x2029:
			if r > 0xff {
				b = append(b, '\\', 'u', hex[r>>12&0xf], hex[r>>8&0xf], hex[r>>4&0xf], hex[r&0xf])
			} else {
				b = append(b, '\\', 'x', hex[r>>4], hex[r&0xf])
			}
		default:
			b = append(b, s[i:i+size]...)
		}
		i += size
	}
	if len(b) >= maxLine {
		b = append(b[:maxLine], cutMark...)
	}
	return string(b)
}
