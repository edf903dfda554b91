package vmtest

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"spectrum-os.org/netcfg/vmtest/vm"
)

// TestBrokenVMDir puts a VM directory without its vmlinux beside the
// documented pair: `spectrumd check` and `spectrumd serve` report it naming
// the file, starting it fails with an error naming the file, and the valid
// VMs still start and exchange packets under the same spectrumd.
func TestBrokenVMDir(t *testing.T) {
	e := newEnv(t, 3*time.Minute)
	e.vm("netvm", nil, "spectrum.watch")
	e.vm("appvm-lynx", []string{"netvm"}, "")
	e.vm("broken", []string{"netvm"}, "")
	missingFile := filepath.Join(e.data, "broken", "vmlinux")
	if err := os.Remove(missingFile); err != nil {
		t.Fatal(err)
	}

	t.Run("check", func(t *testing.T) {
		var stdout, stderr strings.Builder
		cmd := exec.Command(spectrumdBin, "check", "-json", "-data", e.data, "-state", e.state)
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		if code := cmd.ProcessState.ExitCode(); code != 1 {
			t.Errorf("spectrumd check: %v, exit status %d, want 1 (a VM is invalid)\n%s", err, code, stderr.String())
		}
		var rep struct {
			VMs []struct {
				Name string `json:"name"`
			} `json:"vms"`
			Errors []struct {
				VM, Path, Error string
			} `json:"errors"`
		}
		if err := json.Unmarshal([]byte(stdout.String()), &rep); err != nil {
			t.Fatalf("spectrumd check -json: %v\n%s", err, stdout.String())
		}
		if len(rep.Errors) != 1 || rep.Errors[0].VM != "broken" || !strings.Contains(rep.Errors[0].Path+" "+rep.Errors[0].Error, missingFile) {
			t.Errorf("check errors %+v, want one for broken naming %s", rep.Errors, missingFile)
		}
		var valid []string
		for _, v := range rep.VMs {
			valid = append(valid, v.Name)
		}
		if strings.Join(valid, " ") != "netvm appvm-lynx" {
			t.Errorf("check's valid VMs %q, want netvm then appvm-lynx", valid)
		}
	})

	d := e.serve()
	r, err := d.WaitRecord(e.ctx, func(r vm.Record) bool { return r.Msg == "invalid VM" })
	if err != nil {
		t.Fatalf("spectrumd serve never reported the broken VM: %v", err)
	}
	if !strings.Contains(r.Err, missingFile) || r.Level != "ERROR" {
		t.Errorf("serve reported %s %q: %s, want an error naming %s", r.Level, r.Msg, r.Err, missingFile)
	}
	if err := d.TryStart(t, "broken"); err == nil || !strings.Contains(err.Error(), missingFile) {
		t.Errorf("spectrumd start broken: %v, want an error naming %s", err, missingFile)
	}

	id := d.LinkID(t, "appvm-lynx", "netvm")
	e.setTest("netvm", "serve")
	e.setTest("appvm-lynx", "ping:"+id.Gateway().String()+",serve")
	app := d.Start(t, "appvm-lynx")
	for _, proto := range []string{"icmp", "udp"} {
		if l := app.Wait(t, e.ctx, "ping "+id.Gateway().String()+" "+proto+" ", "fail ping"); !hasEvent(l, "ping "+id.Gateway().String()+" "+proto+" ok") {
			t.Errorf("appvm-lynx: %s", l.Text)
		}
	}
	for _, v := range d.List(t) {
		if v.Name == "broken" && v.PID != 0 {
			t.Errorf("broken VM runs: %+v", v)
		}
	}
}
