package vmlog

import (
	"os"
	"path/filepath"
	"sync"
)

// File is a VM's serial log on disk with a size cap: when the file would
// grow past Max bytes it is renamed to NAME.1 (replacing the previous one) and
// a new file is started, so one VM never holds more than about 2×Max bytes of
// disk however fast its guest writes.
type File struct {
	Path string
	Max  int64 // 0 means DefaultMax

	mu   sync.Mutex
	f    *os.File
	size int64
	subs map[chan string]struct{}
}

// DefaultMax is the cap of one generation of a VM's log file.
const DefaultMax = 4 << 20

// WriteLine appends one line (without its newline) and hands it to every
// follower. Errors are returned but the line still reaches followers.
func (l *File) WriteLine(line string) error {
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
		max = DefaultMax
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
func (l *File) Follow() (<-chan string, func()) {
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

// Release closes the file while nothing writes to it (its VM is not
// running): the next WriteLine opens it again. Followers keep following.
func (l *File) Release() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil {
		return nil
	}
	err := l.f.Close()
	l.f = nil
	return err
}

// Close closes the file; followers are ended.
func (l *File) Close() error {
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
