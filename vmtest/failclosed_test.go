package vmtest

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"spectrum-os.org/netcfg/vmtest/initramfs"
)

// TestRouterMissingModule: a provider whose kernel lacks a module the
// router's ruleset needs (nft_masq: the test initramfs carries it empty,
// so neither the init nor the kernel's on-demand loading can load it, and
// the kernel refuses the table's transaction), and whose OS had
// net.ipv4.ip_forward=1 before the router (a sysctl on the kernel command
// line, as sysctl.d would). The router cannot start: it says why, leaves
// the provider NICs down and exits 1; client2 cannot reach client1
// (issue 17, row 4: "a missing module"). The namespace tests fake only a
// kernel without nfnetlink (guest/router TestFailClosedStartFails): the
// machine's kernel is shared and has everything built in.
func TestRouterMissingModule(t *testing.T) {
	e := newEnv(t, 8*time.Minute)
	e.vm("netvm", nil, "spectrum.watch spectrum.route sysctl.net.ipv4.ip_forward=1")
	// The VM directory's initramfs is a hard link to the cached one:
	// replace the link, never write through it.
	var add bytes.Buffer
	if err := initramfs.WriteFiles(&add, []initramfs.File{{Path: "lib/modules/nft_masq.ko", Data: nil}}); err != nil {
		t.Fatal(err)
	}
	base, err := os.ReadFile(e.a.Initramfs)
	if err != nil {
		t.Fatal(err)
	}
	initrd := filepath.Join(e.data, "netvm", "initramfs")
	if err := os.Remove(initrd); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(initrd, append(base, add.Bytes()...), 0o644); err != nil {
		t.Fatal(err)
	}
	e.vm("client1", []string{"netvm"}, "")
	e.vm("client2", []string{"netvm"}, "")
	d := e.serve()
	addr1 := d.LinkID(t, "client1", "netvm").ClientAddr().String()
	ctx := e.ctx
	e.setTest("netvm", "serve")
	e.setTest("client1", "serve")
	e.setTest("client2", "noreach:"+addr1+",serve")

	d.Start(t, "client1")
	netvm := d.Proc("netvm")
	c2 := d.Start(t, "client2")

	// The init's own report that it could not load the module.
	netvm.Wait(t, ctx, "fail module nft_masq")
	l := netvm.Wait(t, ctx, "fail agent watch exited")
	if !strings.Contains(l.Text, "exited: exit status 1 ") {
		t.Errorf("netvm's router: %q, want exit status 1", l.Text)
	}
	console := netvm.Serial.String()
	for _, want := range []string{"spectrum-router: error: add table inet spectrum-router: ", "; provider NICs stay down"} {
		if !strings.Contains(console, want) {
			t.Errorf("netvm's console has no %q", want)
		}
	}
	// The init's spectrum-netcfg, run once before the router as a
	// provider's initramfs hook would, brought both provider NICs up:
	// the router took them down.
	if n := strings.Count(console, ": set link down\n"); n != 2 {
		t.Errorf("netvm's console has %d \"set link down\" lines, want 2 (both provider NICs)", n)
	}
	ok(t, ctx, c2, "noreach "+addr1+" ok")
	if t.Failed() {
		t.Logf("netvm's console:\n%s", console)
	}
}
