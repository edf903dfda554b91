package control

import (
	"errors"
	"fmt"
	"io"
	"sync"
	"testing"
	"time"

	"spectrum-os.org/netcfg/host/vmlog"
)

// fakeHandler answers without a daemon behind it: one VM, "net", running,
// whose log is logs (none if nil).
type fakeHandler struct {
	logs    *vmlog.File
	console io.ReadWriteCloser // nil: no console
}

func (*fakeHandler) List() []VMStatus { return []VMStatus{{Name: "net", State: "running"}} }
func (*fakeHandler) Status(name string) (VMStatus, error) {
	if name != "net" {
		return VMStatus{}, errors.New("no such VM")
	}
	return VMStatus{Name: name, State: "running"}, nil
}
func (*fakeHandler) Start(name string) error {
	if name != "net" {
		return fmt.Errorf("no VM named %q", name)
	}
	return nil
}
func (h *fakeHandler) Stop(name string) error { return h.Start(name) }
func (h *fakeHandler) Logs(name string) (*vmlog.File, error) {
	if h.logs == nil || name != "net" {
		return nil, errors.New("no logs here")
	}
	return h.logs, nil
}
func (h *fakeHandler) Console(string) (io.ReadWriteCloser, error) {
	if h.console == nil {
		return nil, errors.New("no console here")
	}
	return h.console, nil
}

// spewConsole is a guest's console that writes without end until closed.
type spewConsole struct {
	closed chan struct{}
	once   sync.Once
}

func (c *spewConsole) Read(p []byte) (int, error) {
	select {
	case <-c.closed:
		return 0, io.EOF
	default:
	}
	for i := range p {
		p[i] = 'x'
	}
	return len(p), nil
}

func (c *spewConsole) Write(p []byte) (int, error) { return len(p), nil }
func (c *spewConsole) Close() error                { c.once.Do(func() { close(c.closed) }); return nil }

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
