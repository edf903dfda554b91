package daemon

import (
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"spectrum-os.org/netcfg/host/control"
	"spectrum-os.org/netcfg/host/control/controltest"
)

// wait bounds a test's wait for the daemon's reply: far more than it
// needs, so only a daemon that does not answer fails on it.
const wait = 20 * time.Second

// serveControl serves the daemon's control socket as spectrumd serve does
// and returns its path.
func serveControl(t testing.TB, d *Daemon) string {
	t.Helper()
	return controltest.Serve(t, &control.Server{Handler: d})
}

// TestDaemonControlSocket: the daemon behind its control socket, as the
// CLI sees it.
func TestDaemonControlSocket(t *testing.T) {
	d, _, _ := newTestDaemon(t, map[string][]string{"netvm": nil, "appvm-lynx": {"netvm"}})
	path := serveControl(t, d)
	if _, err := control.Call(path, control.Request{Op: "start", Name: "appvm-lynx"}, wait); err != nil {
		t.Fatal(err)
	}
	if _, err := control.Call(path, control.Request{Op: "start", Name: "ghost"}, wait); err == nil || !strings.Contains(err.Error(), "ghost") {
		t.Errorf("start ghost: %v, want an error naming it", err)
	}
	r, err := control.Call(path, control.Request{Op: "list"}, wait)
	if err != nil || len(r.VMs) != 2 || r.VMs[0].Name != "appvm-lynx" || r.VMs[0].State != "running" || r.VMs[1].State != "running" {
		t.Errorf("list = %+v, %v", r.VMs, err)
	}
	r, err = control.Call(path, control.Request{Op: "status", Name: "appvm-lynx"}, wait)
	if err != nil || len(r.VMs) != 1 || len(r.VMs[0].Links) != 1 || r.VMs[0].Links[0].Peer != "netvm" || !strings.HasPrefix(r.VMs[0].Links[0].MAC, "0a:b3:ec:00:") {
		t.Errorf("status = %+v, %v", r.VMs, err)
	} else if l := r.VMs[0].Links[0]; len(l.Addrs) != 2 || len(l.Gateways) != 2 {
		t.Errorf("status link %+v: want two addresses and two gateways (IPv4, IPv6)", l)
	}
	if _, err := control.Call(path, control.Request{Op: "stop", Name: "appvm-lynx"}, wait); err != nil {
		t.Errorf("stop: %v", err)
	}
}

func TestControlConsoleOneUser(t *testing.T) {
	d, _, _ := newTestDaemon(t, map[string][]string{"net": nil})
	if err := d.Start("net"); err != nil {
		t.Fatal(err)
	}
	// Stand in for QEMU's console socket: echo what is typed.
	ln, err := net.Listen("unix", d.consolePath("net"))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go io.Copy(c, c)
		}
	}()
	path := serveControl(t, d)
	_, br, c, err := control.Dial(path, control.Request{Op: "console", Name: "net"}, wait)
	if err != nil {
		t.Fatalf("console: %v", err)
	}
	defer c.Close()
	io.WriteString(c, "hi\n")
	if l, _ := br.ReadString('\n'); l != "hi\n" {
		t.Errorf("echo %q", l)
	}
	if _, err := control.Call(path, control.Request{Op: "console", Name: "net"}, wait); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Errorf("second console user got %v, want in-use error", err)
	}
	c.Close()
	waitFor(t, "console released", func() bool {
		con, err := d.Console("net")
		if err == nil {
			con.Close()
		}
		return err == nil
	})
}
