package cli

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"spectrum-os.org/netcfg/host/control"
	"spectrum-os.org/netcfg/host/vmlog"
	"spectrum-os.org/netcfg/internal/mac"
)

func TestCheckUplinks(t *testing.T) {
	dir := t.TempDir()
	data, state := filepath.Join(dir, "data"), filepath.Join(dir, "state")
	writeVM(t, data, "netvm")
	writeVM(t, data, "other")
	writeVM(t, data, "twin")
	for f, body := range map[string]string{
		"netvm/uplinks/net/br-lan": "",
		"netvm/uplinks/net/wlan0":  "52:54:00:12:34:56\n",
		"other/uplinks/net/br:0":   "",
		"twin/uplinks/net/br-lan":  "52:54:00:12:34:56",
	} {
		p := filepath.Join(data, f)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	derived := mac.DeriveUplink("netvm", "br-lan")
	out, _, err := check(t, "-data", data, "-state", state)
	if !errors.Is(err, ErrInvalid) {
		t.Fatalf("check: %v, want ErrInvalid\n%s", err, out)
	}
	for _, want := range []string{
		fmt.Sprintf("  uplink     br-lan           tap spu%s  mac %s  (derived)\n", strings.ReplaceAll(derived.String(), ":", ""), derived),
		"  uplink     wlan0            tap spu525400123456  mac 52:54:00:12:34:56  (given)\n",
		"invalid other: " + filepath.Join(data, "other", "uplinks", "net", "br:0") + `: not a valid host interface name "br:0": holds ':'`,
		"invalid twin: " + filepath.Join(data, "twin", "uplinks", "net", "br-lan") + ": uplink MAC in use: MAC 52:54:00:12:34:56 is already VM netvm's, on wlan0",
		"1 VMs valid, 2 invalid",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}

	out, _, _ = check(t, "-data", data, "-state", state, "-json")
	var r checkReport
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("-json output does not parse: %v\n%s", err, out)
	}
	want := []uplinkReport{
		{Iface: "br-lan", MAC: derived.String(), Derived: true, Tap: "spu" + strings.ReplaceAll(derived.String(), ":", "")},
		{Iface: "wlan0", MAC: "52:54:00:12:34:56", Tap: "spu525400123456"},
	}
	if len(r.VMs) != 1 {
		t.Fatalf("VMs %+v, want netvm", r.VMs)
	}
	if diff := cmp.Diff(want, r.VMs[0].Uplinks); diff != "" {
		t.Errorf("uplinks (-want +got):\n%s", diff)
	}
	var paths []string
	for _, e := range r.Errors {
		paths = append(paths, e.Path)
	}
	if diff := cmp.Diff([]string{filepath.Join(data, "other", "uplinks", "net", "br:0"), filepath.Join(data, "twin", "uplinks", "net", "br-lan")}, paths); diff != "" {
		t.Errorf("error paths (-want +got):\n%s", diff)
	}
}

// statusHandler answers list and status with fixed statuses.
type statusHandler struct{ vms []control.VMStatus }

func (h statusHandler) List() []control.VMStatus { return h.vms }
func (h statusHandler) Status(name string) (control.VMStatus, error) {
	for _, v := range h.vms {
		if v.Name == name {
			return v, nil
		}
	}
	return control.VMStatus{}, fmt.Errorf("no VM named %q", name)
}
func (statusHandler) Start(string) error               { return nil }
func (statusHandler) Stop(string) error                { return nil }
func (statusHandler) Logs(string) (*vmlog.File, error) { return nil, errors.New("no logs") }
func (statusHandler) Console(string) (io.ReadWriteCloser, error) {
	return nil, errors.New("no console")
}

// TestListStatusUplinks: list and status show each VM's uplinks and MACs,
// and its PCI uplinks.
func TestListStatusUplinks(t *testing.T) {
	run := t.TempDir()
	ln, err := control.Listen(ControlSocket(run))
	if err != nil {
		t.Fatal(err)
	}
	srv := &control.Server{Handler: statusHandler{vms: []control.VMStatus{
		{Name: "app", State: "stopped", Links: []control.LinkStatus{{Peer: "netvm", Role: "client", ID: "a5:46", MAC: "0a:b3:ec:00:a5:46"}}},
		{Name: "netvm", State: "running", PID: 42,
			Links:   []control.LinkStatus{{Peer: "app", Role: "provider", ID: "a5:46", MAC: "0a:b3:ec:80:a5:46"}},
			Uplinks: []control.UplinkStatus{{Iface: "br-lan", MAC: "3e:53:19:79:9f:e9"}, {Iface: "wlan0", MAC: "52:54:00:12:34:56"}},
			PCI:     []string{"0000:03:00.0"}},
	}}, Log: slog.New(slog.NewTextHandler(io.Discard, nil)), AllowUID: os.Getuid()}
	go srv.Serve(ln)
	t.Cleanup(func() { ln.Close() })

	var out bytes.Buffer
	if err := List([]string{"-run", run}, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	want := "NAME   STATE    PID  RESTARTS  LINKS                       UPLINKS\n" +
		"app    stopped  -    0         <-netvm(0a:b3:ec:00:a5:46)  -\n" +
		"netvm  running  42   0         ->app(0a:b3:ec:80:a5:46)    br-lan(3e:53:19:79:9f:e9) wlan0(52:54:00:12:34:56) pci:0000:03:00.0\n"
	if diff := cmp.Diff(want, out.String()); diff != "" {
		t.Errorf("list (-want +got):\n%s", diff)
	}
	out.Reset()
	if err := Status([]string{"-run", run, "netvm"}, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	for _, line := range []string{
		"uplink br-lan: NIC 3e:53:19:79:9f:e9, tap spu3e5319799fe9\n",
		"uplink wlan0: NIC 52:54:00:12:34:56, tap spu525400123456\n",
		"uplink pci 0000:03:00.0: host PCI device by VFIO\n",
	} {
		if !strings.Contains(out.String(), line) {
			t.Errorf("status lacks %q:\n%s", line, out.String())
		}
	}
	out.Reset()
	if err := Status([]string{"-run", run, "-json", "netvm"}, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), `"uplinks":[{"iface":"br-lan","mac":"3e:53:19:79:9f:e9"},{"iface":"wlan0","mac":"52:54:00:12:34:56"}],"pci":["0000:03:00.0"]`) {
		t.Errorf("status -json: %s", out.String())
	}
}
