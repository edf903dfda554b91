package link

import (
	"log/slog"
	"strings"
	"testing"

	"spectrum-os.org/netcfg/internal/mac"
	"spectrum-os.org/netcfg/internal/nstest"
	"spectrum-os.org/netcfg/internal/syncbuf"
)

// TestUplinkWarnsOfHostAddress: an uplink on a bridge that carries the
// host's addresses is logged as a warning naming the bridge and each
// address (the VM is an ordinary LAN peer of the host); one on a bridge
// with no address is not; the bridge is left as it was either way.
func TestUplinkWarnsOfHostAddress(t *testing.T) {
	ns := nstest.New(t)
	var log syncbuf.Buffer
	n, err := OpenPath(ns.Path(), slog.New(slog.NewTextHandler(&log, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	for _, br := range []string{"br-lan", "br-quiet"} {
		ns.IP("link", "add", br, "type", "bridge")
		ns.IP("link", "set", br, "up")
	}
	ns.Command(t.Context(), "sysctl", "-qw", "net.ipv6.conf.br-quiet.disable_ipv6=1").Run()
	ns.IP("addr", "add", "192.0.2.1/24", "dev", "br-lan")
	ns.IP("addr", "add", "2001:db8::1/64", "dev", "br-lan", "nodad")
	before := string(ns.IP("-j", "addr", "show", "dev", "br-lan"))

	if err := n.CreateUplink("br-quiet", mac.DeriveUplink("netvm", "br-quiet")); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(log.String(), "WARN") {
		t.Errorf("an uplink on a bridge with no address was warned of:\n%s", log.String())
	}
	if err := n.CreateUplink("br-lan", mac.DeriveUplink("netvm", "br-lan")); err != nil {
		t.Fatal(err)
	}
	var warn string
	for _, l := range strings.Split(log.String(), "\n") {
		if strings.Contains(l, "level=WARN") {
			warn = l
		}
	}
	for _, want := range []string{"host bridge br-lan has the host's address", "192.0.2.1/24", "2001:db8::1/64", "ordinary LAN peer of the host", "bridge=br-lan"} {
		if !strings.Contains(warn, want) {
			t.Errorf("the warning lacks %q: %q\nlog:\n%s", want, warn, log.String())
		}
	}
	if after := string(ns.IP("-j", "addr", "show", "dev", "br-lan")); after != before {
		t.Errorf("br-lan's addresses changed:\nbefore %s\nafter  %s", before, after)
	}
}
