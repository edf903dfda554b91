package qemu

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
)

// fakeGreeting is a QEMU 7.2 greeting.
const fakeGreeting = `{"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7}, "package": "fake"}, "capabilities": ["oob"]}}`

// serveQMP plays a QEMU monitor on conn: it greets once greet is closed
// (nil: at once), then answers each command with an empty return, or with
// the error refuse gives for its name. It returns when conn ends, and
// whether that was before the greeting.
func serveQMP(conn net.Conn, greet <-chan struct{}, refuse map[string]string) (early bool) {
	defer conn.Close()
	lines := make(chan []byte)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(conn)
		for sc.Scan() {
			lines <- append([]byte(nil), sc.Bytes()...)
		}
	}()
	if greet != nil {
		select {
		case <-greet:
		case _, ok := <-lines:
			if !ok {
				return true
			}
		}
	}
	fmt.Fprintln(conn, fakeGreeting)
	for line := range lines {
		var cmd struct {
			Execute string          `json:"execute"`
			ID      json.RawMessage `json:"id"`
		}
		if json.Unmarshal(line, &cmd) != nil {
			return false
		}
		if desc, ok := refuse[cmd.Execute]; ok {
			fmt.Fprintf(conn, `{"error": {"class": "GenericError", "desc": %q}, "id": %s}`+"\n", desc, cmd.ID)
		} else {
			fmt.Fprintf(conn, `{"return": {}, "id": %s}`+"\n", cmd.ID)
		}
	}
	return false
}

// fakeMonitor is a QMP socket that serves every connection with serveQMP.
type fakeMonitor struct {
	path string

	mu    sync.Mutex
	gates map[int]chan struct{} // connection n (from 0) greets once gates[n] is closed
	n     int                   // connections accepted

	early atomic.Int32 // connections that ended before their greeting
}

func newFakeMonitor(t *testing.T) *fakeMonitor {
	t.Helper()
	m := &fakeMonitor{path: filepath.Join(t.TempDir(), "qmp.sock"), gates: map[int]chan struct{}{}}
	l, err := net.Listen("unix", m.path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			m.mu.Lock()
			gate := m.gates[m.n]
			m.n++
			m.mu.Unlock()
			go func() {
				if serveQMP(conn, gate, nil) {
					m.early.Add(1)
				}
			}()
		}
	}()
	return m
}

// gate makes connection n wait for the returned channel to close before
// it greets.
func (m *fakeMonitor) gate(n int) chan struct{} {
	m.mu.Lock()
	defer m.mu.Unlock()
	ch := make(chan struct{})
	m.gates[n] = ch
	return ch
}

// accepted is how many connections the monitor has accepted.
func (m *fakeMonitor) accepted() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.n
}
