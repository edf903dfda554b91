package control

import (
	"errors"
	"fmt"
	"io"
	"testing"
	"time"

	"spectrum-os.org/netcfg/host/vmlog"
)

// fakeHandler answers without a daemon behind it: one VM, "net", running,
// whose log is logs (none if nil).
type fakeHandler struct {
	logs *vmlog.File
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
func (*fakeHandler) Console(string) (io.ReadWriteCloser, error) {
	return nil, errors.New("no console here")
}

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
