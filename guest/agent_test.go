package guest_test

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"spectrum-os.org/netcfg/guest"
	"spectrum-os.org/netcfg/internal/nstest"
)

func TestClient(t *testing.T) {
	ns := nstest.New(t)
	ns.AddTap("eth0", "0a:b3:ec:00:a5:46")
	idx := ifindex(t, ns, "eth0")

	r := runAgent(t, ns)
	if r.code != 0 {
		t.Fatalf("exit status %d, want 0", r.code)
	}
	wantLog := []string{
		"eth0 0a:b3:ec:00:a5:46: set link up",
		"eth0 0a:b3:ec:00:a5:46: added 100.64.165.70/16",
		"eth0 0a:b3:ec:00:a5:46: added route default via 169.254.165.70 metric " + itoa(idx) + " onlink",
		"eth0 0a:b3:ec:00:a5:46: added route 169.254.165.70/32 scope link",
		"eth0 0a:b3:ec:00:a5:46: added fd9f:2b8:5010:a546::2/64",
		"eth0 0a:b3:ec:00:a5:46: added route default via fe80::1 metric " + itoa(idx),
		"eth0 0a:b3:ec:00:a5:46: client 100.64.165.70/16 via 169.254.165.70: configured",
		"spectrum-netcfg: done: 1 configured, 0 failed, status 0",
	}
	if diff := cmp.Diff(wantLog, lines(r.console)); diff != "" {
		t.Errorf("console log mismatch (-want +got):\n%s", diff)
	}
	// IPv6: the link's /64 and the route via the link-local gateway, no
	// duplicate address detection (the address is usable at once).
	if diff := cmp.Diff([]ipAddr{{Family: "inet6", Local: "fd9f:2b8:5010:a546::2", Prefixlen: 64, Scope: "global", NoDAD: true}}, addrs6(t, ns, "eth0")); diff != "" {
		t.Errorf("eth0 IPv6 addresses mismatch (-want +got):\n%s", diff)
	}
	wantRoutes6 := []ipRoute{
		{Dst: "fd9f:2b8:5010:a546::/64", Dev: "eth0", Protocol: "kernel", Metric: 256, Flags: []string{"linkdown"}},
		{Dst: "default", Gateway: "fe80::1", Dev: "eth0", Protocol: "static", Metric: idx, Flags: []string{"linkdown"}},
	}
	if diff := cmp.Diff(wantRoutes6, routes6(t, ns, "")); diff != "" {
		t.Errorf("IPv6 routes mismatch (-want +got):\n%s", diff)
	}
	if r.stderr != "" {
		t.Errorf("stderr = %q, want nothing (the log goes to the console only)", r.stderr)
	}
	wantLink := ipLink{
		Index: idx, Name: "eth0", Flags: upFlags, MAC: "0a:b3:ec:00:a5:46",
		AddrInfo: []ipAddr{{Family: "inet", Local: "100.64.165.70", Prefixlen: 16, Broadcast: "100.64.255.255", Scope: "global"}},
	}
	if diff := cmp.Diff(wantLink, link(t, ns, "eth0")); diff != "" {
		t.Errorf("eth0 mismatch (-want +got):\n%s", diff)
	}
	wantRoutes := []ipRoute{
		{Dst: "default", Gateway: "169.254.165.70", Dev: "eth0", Protocol: "static", Metric: idx, Flags: []string{"onlink", "linkdown"}},
		{Dst: "100.64.0.0/16", Dev: "eth0", Protocol: "kernel", Scope: "link", Prefsrc: "100.64.165.70", Flags: []string{"linkdown"}},
		{Dst: "169.254.165.70", Dev: "eth0", Protocol: "static", Scope: "link", Flags: []string{"linkdown"}},
	}
	if diff := cmp.Diff(wantRoutes, routes(t, ns, "")); diff != "" {
		t.Errorf("routes mismatch (-want +got):\n%s", diff)
	}
	if got := ns.Sysctl("net.ipv4.conf.eth0.rp_filter"); got != "0" {
		t.Errorf("client rp_filter = %s, want 0 (untouched)", got)
	}

	applyTwice(t, ns, []string{
		"eth0 0a:b3:ec:00:a5:46: client 100.64.165.70/16 via 169.254.165.70: already configured",
		"spectrum-netcfg: done: 1 configured, 0 failed, status 0",
	})
}

// applyTwice runs the agent again on a configured namespace: it must exit 0,
// change nothing, and log only that every NIC is already configured.
func applyTwice(t *testing.T, ns *nstest.NS, wantLog []string) {
	t.Helper()
	before := snapshot(t, ns)
	r := runAgent(t, ns)
	if r.code != 0 {
		t.Errorf("second run: exit status %d, want 0", r.code)
	}
	if diff := cmp.Diff(wantLog, lines(r.console)); diff != "" {
		t.Errorf("second run: console log mismatch (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(before, snapshot(t, ns)); diff != "" {
		t.Errorf("second run changed the state (-want +got):\n%s", diff)
	}
}

func TestProvider(t *testing.T) {
	ns := nstest.New(t)
	ns.AddTap("eth1", "0A:B3:EC:80:A5:46")

	r := runAgent(t, ns)
	if r.code != 0 {
		t.Fatalf("exit status %d, want 0", r.code)
	}
	wantLog := []string{
		"eth1 0a:b3:ec:80:a5:46: set rp_filter 1 (strict), was 0",
		"eth1 0a:b3:ec:80:a5:46: set link up",
		"eth1 0a:b3:ec:80:a5:46: added 169.254.165.70/32",
		"eth1 0a:b3:ec:80:a5:46: added route 100.64.165.70/32 scope link",
		"eth1 0a:b3:ec:80:a5:46: added fe80::1/64",
		"eth1 0a:b3:ec:80:a5:46: added fd9f:2b8:5010:a546::1/64",
		"eth1 0a:b3:ec:80:a5:46: provider 169.254.165.70/32 for client 100.64.165.70: configured",
		"spectrum-netcfg: done: 1 configured, 0 failed, status 0",
	}
	if diff := cmp.Diff(wantLog, lines(r.console)); diff != "" {
		t.Errorf("console log mismatch (-want +got):\n%s", diff)
	}
	wantAddrs6 := []ipAddr{
		{Family: "inet6", Local: "fd9f:2b8:5010:a546::1", Prefixlen: 64, Scope: "global", NoDAD: true},
		{Family: "inet6", Local: "fe80::1", Prefixlen: 64, Scope: "link", NoDAD: true},
	}
	if diff := cmp.Diff(wantAddrs6, addrs6(t, ns, "eth1")); diff != "" {
		t.Errorf("eth1 IPv6 addresses mismatch (-want +got):\n%s", diff)
	}
	wantLink := ipLink{
		Index: ifindex(t, ns, "eth1"), Name: "eth1", Flags: upFlags, MAC: "0a:b3:ec:80:a5:46",
		AddrInfo: []ipAddr{{Family: "inet", Local: "169.254.165.70", Prefixlen: 32, Scope: "global"}},
	}
	if diff := cmp.Diff(wantLink, link(t, ns, "eth1")); diff != "" {
		t.Errorf("eth1 mismatch (-want +got):\n%s", diff)
	}
	wantRoutes := []ipRoute{
		{Dst: "100.64.165.70", Dev: "eth1", Protocol: "static", Scope: "link", Flags: []string{"linkdown"}},
	}
	if diff := cmp.Diff(wantRoutes, routes(t, ns, "")); diff != "" {
		t.Errorf("routes mismatch (-want +got):\n%s", diff)
	}
	if got := ns.Sysctl("net.ipv4.conf.eth1.rp_filter"); got != "1" {
		t.Errorf("provider rp_filter = %s, want 1 (strict)", got)
	}
	if got := ns.Sysctl("net.ipv4.ip_forward"); got != "0" {
		t.Errorf("ip_forward = %s, want 0: the agent never turns forwarding on", got)
	}

	applyTwice(t, ns, []string{
		"eth1 0a:b3:ec:80:a5:46: provider 169.254.165.70/32 for client 100.64.165.70: already configured",
		"spectrum-netcfg: done: 1 configured, 0 failed, status 0",
	})
}

// TestClientAndProvider is a VM that is both (a VPN between a network VM
// and an app VM): its own gateway on the provider side must not clash with
// the route via its client side's gateway.
func TestClientAndProvider(t *testing.T) {
	ns := nstest.New(t)
	ns.AddTap("up0", "0a:b3:ec:00:00:07")
	ns.AddTap("down0", "0a:b3:ec:80:00:09")
	r := runAgent(t, ns)
	if r.code != 0 {
		t.Fatalf("exit status %d, want 0", r.code)
	}
	idx := ifindex(t, ns, "up0")
	want := []ipRoute{
		{Dst: "default", Gateway: "169.254.0.7", Dev: "up0", Protocol: "static", Metric: idx, Flags: []string{"onlink", "linkdown"}},
		{Dst: "100.64.0.0/16", Dev: "up0", Protocol: "kernel", Scope: "link", Prefsrc: "100.64.0.7", Flags: []string{"linkdown"}},
		{Dst: "100.64.0.9", Dev: "down0", Protocol: "static", Scope: "link", Flags: []string{"linkdown"}},
		{Dst: "169.254.0.7", Dev: "up0", Protocol: "static", Scope: "link", Flags: []string{"linkdown"}},
	}
	if diff := cmp.Diff(want, routes(t, ns, "")); diff != "" {
		t.Errorf("routes mismatch (-want +got):\n%s", diff)
	}
	applyTwice(t, ns, []string{
		"up0 0a:b3:ec:00:00:07: client 100.64.0.7/16 via 169.254.0.7: already configured",
		"down0 0a:b3:ec:80:00:09: provider 169.254.0.9/32 for client 100.64.0.9: already configured",
		"spectrum-netcfg: done: 2 configured, 0 failed, status 0",
	})
}

func TestSeveralClients(t *testing.T) {
	ns := nstest.New(t)
	macs := map[string]string{"eth0": "0a:b3:ec:00:00:01", "eth1": "0a:b3:ec:00:01:00", "eth2": "0a:b3:ec:00:fe:ff"}
	for _, name := range []string{"eth0", "eth1", "eth2"} {
		ns.AddTap(name, macs[name])
	}
	r := runAgent(t, ns)
	if r.code != 0 {
		t.Fatalf("exit status %d, want 0", r.code)
	}
	var want []ipRoute
	for _, d := range []struct{ dev, gw string }{{"eth0", "169.254.0.1"}, {"eth1", "169.254.1.0"}, {"eth2", "169.254.254.255"}} {
		want = append(want, ipRoute{
			Dst: "default", Gateway: d.gw, Dev: d.dev, Protocol: "static",
			Metric: ifindex(t, ns, d.dev), Flags: []string{"onlink", "linkdown"},
		})
	}
	for _, d := range []struct{ dev, src string }{{"eth0", "100.64.0.1"}, {"eth1", "100.64.1.0"}, {"eth2", "100.64.254.255"}} {
		want = append(want, ipRoute{Dst: "100.64.0.0/16", Dev: d.dev, Protocol: "kernel", Scope: "link", Prefsrc: d.src, Flags: []string{"linkdown"}})
	}
	for _, d := range []struct{ dev, gw string }{{"eth0", "169.254.0.1"}, {"eth1", "169.254.1.0"}, {"eth2", "169.254.254.255"}} {
		want = append(want, ipRoute{Dst: d.gw, Dev: d.dev, Protocol: "static", Scope: "link", Flags: []string{"linkdown"}})
	}
	if diff := cmp.Diff(want, routes(t, ns, "")); diff != "" {
		t.Errorf("routes mismatch (-want +got):\n%s", diff)
	}
	if !strings.HasSuffix(r.console, "spectrum-netcfg: done: 3 configured, 0 failed, status 0\n") {
		t.Errorf("console log does not end with the summary line:\n%s", r.console)
	}
	applyTwice(t, ns, []string{
		"eth0 0a:b3:ec:00:00:01: client 100.64.0.1/16 via 169.254.0.1: already configured",
		"eth1 0a:b3:ec:00:01:00: client 100.64.1.0/16 via 169.254.1.0: already configured",
		"eth2 0a:b3:ec:00:fe:ff: client 100.64.254.255/16 via 169.254.254.255: already configured",
		"spectrum-netcfg: done: 3 configured, 0 failed, status 0",
	})
}

// TestForeignUntouched: links without the OUI keep every address, route,
// flag and sysctl they had, and are never mentioned in the log.
func TestForeignUntouched(t *testing.T) {
	ns := nstest.New(t)
	ns.AddTap("lan0", "52:54:00:12:34:56")
	ns.IP("link", "set", "lan0", "up")
	ns.IP("addr", "add", "10.1.2.3/24", "dev", "lan0")
	ns.IP("addr", "add", "100.64.9.9/16", "dev", "lan0") // our range, not our NIC
	ns.IP("route", "add", "default", "via", "10.1.2.1", "dev", "lan0", "onlink")
	ns.AddTap("near0", "0a:b3:ed:00:a5:46") // one bit away from the OUI
	ns.AddTap("ours0", "0a:b3:ec:00:00:05")
	ns.IP("link", "add", "v0", "type", "veth", "peer", "name", "v1")
	before := snapshot(t, ns)

	r := runAgent(t, ns)
	if r.code != 0 {
		t.Fatalf("exit status %d, want 0", r.code)
	}
	for _, name := range []string{"lo", "lan0", "near0", "v0", "v1"} {
		if strings.Contains(r.console, name+" ") {
			t.Errorf("console log mentions %s:\n%s", name, r.console)
		}
	}
	after := snapshot(t, ns)
	delete(before.Links, "ours0")
	delete(after.Links, "ours0")
	delete(before.RP, "ours0")
	delete(after.RP, "ours0")
	delete(before.Addrs6, "ours0")
	delete(after.Addrs6, "ours0")
	foreign := func(rs []ipRoute) []ipRoute {
		out := []ipRoute{}
		for _, rt := range rs {
			if rt.Dev != "ours0" {
				out = append(out, rt)
			}
		}
		return out
	}
	before.Routes, before.Routes6 = foreign(before.Routes), foreign(before.Routes6)
	after.Routes, after.Routes6 = foreign(after.Routes), foreign(after.Routes6)
	if diff := cmp.Diff(before, after); diff != "" {
		t.Errorf("state outside the OUI changed (-want +got):\n%s", diff)
	}
}

// TestRefused: link ids 00:00 and ff:ff and reserved bits are refused per
// NIC, logged, left untouched, and make the exit status 1; the good NIC
// next to them is still configured.
func TestRefused(t *testing.T) {
	ns := nstest.New(t)
	ns.AddTap("net0", "0a:b3:ec:00:00:00")
	ns.AddTap("bcast0", "0a:b3:ec:80:ff:ff")
	ns.AddTap("resv0", "0a:b3:ec:01:a5:46")
	ns.AddTap("good0", "0a:b3:ec:00:a5:46")
	before := snapshot(t, ns)

	r := runAgent(t, ns)
	if r.code != 1 {
		t.Errorf("exit status %d, want 1", r.code)
	}
	idx := ifindex(t, ns, "good0")
	wantLog := []string{
		"net0 0a:b3:ec:00:00:00: error: refused, left unconfigured: link id 00:00 and ff:ff are never assigned",
		"bcast0 0a:b3:ec:80:ff:ff: error: refused, left unconfigured: link id 00:00 and ff:ff are never assigned",
		"resv0 0a:b3:ec:01:a5:46: error: refused, left unconfigured: reserved bits of the fourth octet are set",
		"good0 0a:b3:ec:00:a5:46: set link up",
		"good0 0a:b3:ec:00:a5:46: added 100.64.165.70/16",
		"good0 0a:b3:ec:00:a5:46: added route default via 169.254.165.70 metric " + itoa(idx) + " onlink",
		"good0 0a:b3:ec:00:a5:46: added route 169.254.165.70/32 scope link",
		"good0 0a:b3:ec:00:a5:46: added fd9f:2b8:5010:a546::2/64",
		"good0 0a:b3:ec:00:a5:46: added route default via fe80::1 metric " + itoa(idx),
		"good0 0a:b3:ec:00:a5:46: client 100.64.165.70/16 via 169.254.165.70: configured",
		"spectrum-netcfg: done: 1 configured, 3 failed, status 1",
	}
	if diff := cmp.Diff(wantLog, lines(r.console)); diff != "" {
		t.Errorf("console log mismatch (-want +got):\n%s", diff)
	}
	after := snapshot(t, ns)
	for _, name := range []string{"net0", "bcast0", "resv0"} {
		if diff := cmp.Diff(before.Links[name], after.Links[name]); diff != "" {
			t.Errorf("refused %s changed (-want +got):\n%s", name, diff)
		}
		if diff := cmp.Diff(before.RP[name], after.RP[name]); diff != "" {
			t.Errorf("refused %s rp_filter changed (-want +got):\n%s", name, diff)
		}
		if rs := routes(t, ns, name); len(rs) != 0 {
			t.Errorf("routes through refused %s: %+v", name, rs)
		}
	}
	if got := after.Links["good0"].AddrInfo; len(got) != 1 || got[0].Local != "100.64.165.70" {
		t.Errorf("good0 addresses = %+v, want 100.64.165.70", got)
	}
}

// TestMACChanged: a NIC keeps its ifindex but gets another MAC (another
// link, or the other side). The stale address and routes go, the new ones
// come, foreign addresses on the NIC stay.
func TestMACChanged(t *testing.T) {
	for _, tt := range []struct {
		name      string
		from, to  string
		wantLog   func(idx int) []string
		wantAddrs []ipAddr
		wantRts   func(idx int) []ipRoute
		wantRP    string
	}{
		{
			name: "client to another link", from: "0a:b3:ec:00:01:02", to: "0a:b3:ec:00:a5:46",
			wantLog: func(idx int) []string {
				return []string{
					"eth0 0a:b3:ec:00:a5:46: set link up",
					"eth0 0a:b3:ec:00:a5:46: removed 100.64.1.2/16",
					"eth0 0a:b3:ec:00:a5:46: added 100.64.165.70/16",
					"eth0 0a:b3:ec:00:a5:46: added route default via 169.254.165.70 metric " + itoa(idx) + " onlink",
					"eth0 0a:b3:ec:00:a5:46: added route 169.254.165.70/32 scope link",
					"eth0 0a:b3:ec:00:a5:46: added fd9f:2b8:5010:a546::2/64",
					"eth0 0a:b3:ec:00:a5:46: added route default via fe80::1 metric " + itoa(idx),
					"eth0 0a:b3:ec:00:a5:46: client 100.64.165.70/16 via 169.254.165.70: configured",
					"spectrum-netcfg: done: 1 configured, 0 failed, status 0",
				}
			},
			wantAddrs: []ipAddr{
				{Family: "inet", Local: "10.9.9.9", Prefixlen: 24, Broadcast: "", Scope: "global"},
				{Family: "inet", Local: "100.64.165.70", Prefixlen: 16, Broadcast: "100.64.255.255", Scope: "global"},
			},
			wantRts: func(idx int) []ipRoute {
				return []ipRoute{
					{Dst: "default", Gateway: "169.254.165.70", Dev: "eth0", Protocol: "static", Metric: idx, Flags: []string{"onlink", "linkdown"}},
					{Dst: "10.9.9.0/24", Dev: "eth0", Protocol: "kernel", Scope: "link", Prefsrc: "10.9.9.9", Flags: []string{"linkdown"}},
					{Dst: "100.64.0.0/16", Dev: "eth0", Protocol: "kernel", Scope: "link", Prefsrc: "100.64.165.70", Flags: []string{"linkdown"}},
					{Dst: "169.254.165.70", Dev: "eth0", Protocol: "static", Scope: "link", Flags: []string{"linkdown"}},
				}
			},
			wantRP: "0",
		},
		{
			name: "client to provider", from: "0a:b3:ec:00:01:02", to: "0a:b3:ec:80:01:02",
			wantLog: func(idx int) []string {
				return []string{
					"eth0 0a:b3:ec:80:01:02: set rp_filter 1 (strict), was 0",
					"eth0 0a:b3:ec:80:01:02: set link up",
					"eth0 0a:b3:ec:80:01:02: removed 100.64.1.2/16",
					"eth0 0a:b3:ec:80:01:02: added 169.254.1.2/32",
					"eth0 0a:b3:ec:80:01:02: added route 100.64.1.2/32 scope link",
					"eth0 0a:b3:ec:80:01:02: added fe80::1/64",
					"eth0 0a:b3:ec:80:01:02: added fd9f:2b8:5010:102::1/64",
					"eth0 0a:b3:ec:80:01:02: provider 169.254.1.2/32 for client 100.64.1.2: configured",
					"spectrum-netcfg: done: 1 configured, 0 failed, status 0",
				}
			},
			wantAddrs: []ipAddr{
				{Family: "inet", Local: "10.9.9.9", Prefixlen: 24, Scope: "global"},
				{Family: "inet", Local: "169.254.1.2", Prefixlen: 32, Scope: "global"},
			},
			wantRts: func(idx int) []ipRoute {
				return []ipRoute{
					{Dst: "10.9.9.0/24", Dev: "eth0", Protocol: "kernel", Scope: "link", Prefsrc: "10.9.9.9", Flags: []string{"linkdown"}},
					{Dst: "100.64.1.2", Dev: "eth0", Protocol: "static", Scope: "link", Flags: []string{"linkdown"}},
				}
			},
			wantRP: "1",
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ns := nstest.New(t)
			ns.AddTap("eth0", tt.from)
			ns.IP("addr", "add", "10.9.9.9/24", "dev", "eth0") // not ours: stays
			if r := runAgent(t, ns); r.code != 0 {
				t.Fatalf("first run: exit status %d, want 0", r.code)
			}
			// A NIC's MAC changes while it is down (as when the host
			// re-plugs it); going down drops its routes and its IPv6
			// addresses (keep_addr_on_down is 0), not its IPv4 ones.
			ns.IP("link", "set", "eth0", "down")
			ns.IP("link", "set", "eth0", "address", tt.to)
			idx := ifindex(t, ns, "eth0")

			r := runAgent(t, ns)
			if r.code != 0 {
				t.Fatalf("exit status %d, want 0", r.code)
			}
			if diff := cmp.Diff(tt.wantLog(idx), lines(r.console)); diff != "" {
				t.Errorf("console log mismatch (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.wantAddrs, link(t, ns, "eth0").AddrInfo); diff != "" {
				t.Errorf("addresses mismatch (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.wantRts(idx), routes(t, ns, "")); diff != "" {
				t.Errorf("routes mismatch (-want +got):\n%s", diff)
			}
			if got := ns.Sysctl("net.ipv4.conf.eth0.rp_filter"); got != tt.wantRP {
				t.Errorf("rp_filter = %s, want %s", got, tt.wantRP)
			}
		})
	}
}

// TestMACChangedWhileUp: a live MAC change leaves the old default route in
// place; the agent removes it along with the old address.
func TestMACChangedWhileUp(t *testing.T) {
	ns := nstest.New(t)
	ns.AddTap("eth0", "0a:b3:ec:00:01:02")
	if r := runAgent(t, ns); r.code != 0 {
		t.Fatalf("first run: exit status %d, want 0", r.code)
	}
	ns.IP("link", "set", "eth0", "address", "0a:b3:ec:00:01:03")
	idx := ifindex(t, ns, "eth0")
	r := runAgent(t, ns)
	if r.code != 0 {
		t.Fatalf("exit status %d, want 0", r.code)
	}
	m := itoa(idx)
	wantLog := []string{
		"eth0 0a:b3:ec:00:01:03: removed route default via 169.254.1.2 metric " + m + " onlink",
		"eth0 0a:b3:ec:00:01:03: removed route 169.254.1.2/32 scope link",
		"eth0 0a:b3:ec:00:01:03: removed 100.64.1.2/16",
		"eth0 0a:b3:ec:00:01:03: added 100.64.1.3/16",
		"eth0 0a:b3:ec:00:01:03: added route default via 169.254.1.3 metric " + m + " onlink",
		"eth0 0a:b3:ec:00:01:03: added route 169.254.1.3/32 scope link",
		"eth0 0a:b3:ec:00:01:03: removed fd9f:2b8:5010:102::2/64",
		"eth0 0a:b3:ec:00:01:03: added fd9f:2b8:5010:103::2/64",
		"eth0 0a:b3:ec:00:01:03: client 100.64.1.3/16 via 169.254.1.3: configured",
		"spectrum-netcfg: done: 1 configured, 0 failed, status 0",
	}
	if diff := cmp.Diff(wantLog, lines(r.console)); diff != "" {
		t.Errorf("console log mismatch (-want +got):\n%s", diff)
	}
	want := []ipRoute{
		{Dst: "default", Gateway: "169.254.1.3", Dev: "eth0", Protocol: "static", Metric: idx, Flags: []string{"onlink", "linkdown"}},
		{Dst: "100.64.0.0/16", Dev: "eth0", Protocol: "kernel", Scope: "link", Prefsrc: "100.64.1.3", Flags: []string{"linkdown"}},
		{Dst: "169.254.1.3", Dev: "eth0", Protocol: "static", Scope: "link", Flags: []string{"linkdown"}},
	}
	if diff := cmp.Diff(want, routes(t, ns, "")); diff != "" {
		t.Errorf("routes mismatch (-want +got):\n%s", diff)
	}
}

// TestConsoleFallback: a console that cannot be opened (no such device, /dev
// not populated) sends the log to stderr, saying so once.
func TestConsoleFallback(t *testing.T) {
	ns := nstest.New(t)
	ns.AddTap("eth0", "0a:b3:ec:00:00:01")
	missing := t.TempDir() + "/ttyS0"
	cmd := ns.Command(context.Background(), agentBin, "-console", missing)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("agent: %v", err)
	}
	if len(out) != 0 {
		t.Errorf("stdout = %q, want nothing", out)
	}
	var stderr strings.Builder
	cmd = ns.Command(context.Background(), agentBin, "-console", missing)
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("agent: %v", err)
	}
	want := []string{
		"spectrum-netcfg: cannot open the console, logging to stderr: open " + missing + ": no such file or directory",
		"eth0 0a:b3:ec:00:00:01: client 100.64.0.1/16 via 169.254.0.1: already configured",
		"spectrum-netcfg: done: 1 configured, 0 failed, status 0",
	}
	if diff := cmp.Diff(want, lines(stderr.String())); diff != "" {
		t.Errorf("stderr mismatch (-want +got):\n%s", diff)
	}
	if _, err := os.Stat(missing); !os.IsNotExist(err) {
		t.Errorf("the agent created its console %s (stat: %v); it must not create files", missing, err)
	}
}

// TestWatch: with -watch the agent configures the NICs present, then a NIC
// hot-plugged later, then ends cleanly on SIGTERM.
func TestWatch(t *testing.T) {
	ns := nstest.New(t)
	ns.AddTap("eth0", "0a:b3:ec:00:00:01")
	console := consoleFile(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := ns.Command(ctx, agentBin, "-watch", "-console", console)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	deadline := time.Now().Add(30 * time.Second)
	if d, ok := t.Deadline(); ok && d.Before(deadline) {
		deadline = d.Add(-5 * time.Second)
	}
	waitLine(t, console, "spectrum-netcfg: watching for new NICs", deadline)

	// A provider NIC is plugged: the tap appears with a random MAC that is
	// then set, as a hot-plugged NIC's driver would.
	start := time.Now()
	ns.AddTap("eth1", "0a:b3:ec:80:12:34")
	for {
		if rs := routes(t, ns, "eth1"); len(rs) == 1 && ns.Sysctl("net.ipv4.conf.eth1.rp_filter") == "1" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("hot-plugged eth1 not configured in time; console:\n%s", readFile(t, console))
		}
		time.Sleep(2 * time.Millisecond)
	}
	// Timing is the benchmark's business; here it is only recorded.
	t.Logf("hot-plugged NIC configured %v after `ip link set address` returned", time.Since(start))
	wantLink := ipLink{
		Index: ifindex(t, ns, "eth1"), Name: "eth1", Flags: upFlags, MAC: "0a:b3:ec:80:12:34",
		AddrInfo: []ipAddr{{Family: "inet", Local: "169.254.18.52", Prefixlen: 32, Scope: "global"}},
	}
	if diff := cmp.Diff(wantLink, link(t, ns, "eth1")); diff != "" {
		t.Errorf("eth1 mismatch (-want +got):\n%s", diff)
	}

	// The NIC is unplugged again (its client stopped): the agent says so
	// once and does not count it as a failure.
	ns.IP("link", "del", "eth1")
	waitLine(t, console, "eth1 0a:b3:ec:80:12:34: removed", deadline)

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("after SIGTERM: %v, want exit status 0; stderr %q", err, stderr.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the agent did not end within 10s of SIGTERM")
	}
	want := []string{
		"eth0 0a:b3:ec:00:00:01: set link up",
		"eth0 0a:b3:ec:00:00:01: added 100.64.0.1/16",
		"eth0 0a:b3:ec:00:00:01: added route default via 169.254.0.1 metric " + itoa(ifindex(t, ns, "eth0")) + " onlink",
		"eth0 0a:b3:ec:00:00:01: added route 169.254.0.1/32 scope link",
		"eth0 0a:b3:ec:00:00:01: added fd9f:2b8:5010:1::2/64",
		"eth0 0a:b3:ec:00:00:01: added route default via fe80::1 metric " + itoa(ifindex(t, ns, "eth0")),
		"eth0 0a:b3:ec:00:00:01: client 100.64.0.1/16 via 169.254.0.1: configured",
		guest.DoneLine(1, 0, 0),
		"spectrum-netcfg: watching for new NICs",
		"eth1 0a:b3:ec:80:12:34: set rp_filter 1 (strict), was 0",
		"eth1 0a:b3:ec:80:12:34: set link up",
		"eth1 0a:b3:ec:80:12:34: added 169.254.18.52/32",
		"eth1 0a:b3:ec:80:12:34: added route 100.64.18.52/32 scope link",
		"eth1 0a:b3:ec:80:12:34: added fe80::1/64",
		"eth1 0a:b3:ec:80:12:34: added fd9f:2b8:5010:1234::1/64",
		"eth1 0a:b3:ec:80:12:34: provider 169.254.18.52/32 for client 100.64.18.52: configured",
		"eth1 0a:b3:ec:80:12:34: removed",
		"spectrum-netcfg: stopped, status 0",
	}
	if diff := cmp.Diff(want, lines(readFile(t, console))); diff != "" {
		t.Errorf("console log mismatch (-want +got):\n%s", diff)
	}
}

// TestWatchRefused: a refused NIC hot-plugged in watch mode is logged once
// and makes the status at SIGTERM 1.
func TestWatchRefused(t *testing.T) {
	ns := nstest.New(t)
	console := consoleFile(t)
	cmd := ns.Command(context.Background(), agentBin, "-watch", "-console", console)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	deadline := time.Now().Add(30 * time.Second)
	waitLine(t, console, "spectrum-netcfg: watching for new NICs", deadline)
	ns.AddTap("bad0", "0a:b3:ec:00:ff:ff")
	ns.IP("link", "set", "bad0", "mtu", "1400") // another notification: no second log line
	ns.AddTap("eth0", "0a:b3:ec:00:00:02")
	waitLine(t, console, "eth0 0a:b3:ec:00:00:02: client 100.64.0.2/16 via 169.254.0.2: configured", deadline)
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	err := cmd.Wait()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 {
		t.Errorf("after SIGTERM: %v, want exit status 1", err)
	}
	log := readFile(t, console)
	if n := strings.Count(log, "bad0 0a:b3:ec:00:ff:ff: error: refused"); n != 1 {
		t.Errorf("refusal logged %d times, want once:\n%s", n, log)
	}
	if !strings.HasSuffix(log, "spectrum-netcfg: stopped, status 1\n") {
		t.Errorf("log does not end with the status line:\n%s", log)
	}
}

// waitLine polls the console file until it has the line.
func waitLine(t *testing.T, path, line string, deadline time.Time) {
	t.Helper()
	for {
		f, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if sc.Text() == line {
				f.Close()
				return
			}
		}
		f.Close()
		if time.Now().After(deadline) {
			t.Fatalf("no line %q in the console by the deadline; console:\n%s", line, readFile(t, path))
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestUsage: a bad command line exits 2 before touching anything; -h
// prints the synopsis and exits 0. No namespace needed: the agent stops
// before it opens its console or rtnetlink.
func TestUsage(t *testing.T) {
	for _, tt := range []struct {
		args []string
		code int
		say  string
	}{
		{[]string{"-bogus"}, 2, `"-bogus"`},
		{[]string{"eth0"}, 2, `"eth0"`},
		{[]string{"-console"}, 2, "-console"},
		// The router is spectrum-router's: the error names it.
		{[]string{"-watch", "-route"}, 2, "spectrum-router"},
		{[]string{"-h"}, 0, ""},
	} {
		cmd := exec.Command(agentBin, tt.args...)
		out, err := cmd.CombinedOutput()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		if code != tt.code {
			t.Errorf("spectrum-netcfg %q: exit status %d, want %d", tt.args, code, tt.code)
		}
		if !strings.Contains(string(out), guest.Usage) {
			t.Errorf("spectrum-netcfg %q: output %q lacks the usage line", tt.args, out)
		}
		if !strings.Contains(string(out), tt.say) {
			t.Errorf("spectrum-netcfg %q: output %q does not name %s", tt.args, out, tt.say)
		}
	}
}

// TestProviderLooseAll: net.ipv4.conf.all.rp_filter=2 (systemd's default)
// overrides a NIC's strict setting. The agent configures the provider NIC
// but reports the failure, and does not change conf/all, which applies to
// every link.
func TestProviderLooseAll(t *testing.T) {
	ns := nstest.New(t)
	if out, err := ns.Command(context.Background(), "sysctl", "-w", "net.ipv4.conf.all.rp_filter=2").CombinedOutput(); err != nil {
		t.Fatalf("sysctl: %v\n%s", err, out)
	}
	ns.AddTap("eth1", "0a:b3:ec:80:00:07")
	ns.AddTap("eth0", "0a:b3:ec:00:00:08") // a client is not concerned
	r := runAgent(t, ns)
	if r.code != 1 {
		t.Errorf("exit status %d, want 1", r.code)
	}
	got := lines(r.console)
	wantTail := []string{
		"eth1 0a:b3:ec:80:00:07: error: net.ipv4.conf.all.rp_filter is 2, which makes this NIC's reverse-path filtering loose: set it to 0 or 1",
		"eth1 0a:b3:ec:80:00:07: provider 169.254.0.7/32 for client 100.64.0.7: failed",
	}
	if len(got) < 8 {
		t.Fatalf("console log too short:\n%s", r.console)
	}
	if diff := cmp.Diff(wantTail, got[6:8]); diff != "" {
		t.Errorf("console log mismatch (-want +got):\n%s", diff)
	}
	if last := got[len(got)-1]; last != guest.DoneLine(1, 1, 1) {
		t.Errorf("last line %q, want %q", last, guest.DoneLine(1, 1, 1))
	}
	if v := ns.Sysctl("net.ipv4.conf.all.rp_filter"); v != "2" {
		t.Errorf("conf/all/rp_filter = %s, want 2 (not the agent's to change)", v)
	}
	if v := ns.Sysctl("net.ipv4.conf.eth1.rp_filter"); v != "1" {
		t.Errorf("eth1 rp_filter = %s, want 1", v)
	}
	if rs := routes(t, ns, "eth1"); len(rs) != 1 {
		t.Errorf("eth1 routes = %+v, want its host route", rs)
	}

	// Once conf/all allows strict filtering, the NIC is configured.
	if out, err := ns.Command(context.Background(), "sysctl", "-w", "net.ipv4.conf.all.rp_filter=1").CombinedOutput(); err != nil {
		t.Fatalf("sysctl: %v\n%s", err, out)
	}
	applyTwice(t, ns, []string{
		"eth1 0a:b3:ec:80:00:07: provider 169.254.0.7/32 for client 100.64.0.7: already configured",
		"eth0 0a:b3:ec:00:00:08: client 100.64.0.8/16 via 169.254.0.8: already configured",
		"spectrum-netcfg: done: 2 configured, 0 failed, status 0",
	})
}

// TestNoProcSysDev runs the agent as an early init hook finds the system:
// /proc, /sys and /dev hidden under empty tmpfs in a private mount
// namespace. rp_filter included, everything is configured through
// rtnetlink; the missing console falls back to stderr.
func TestNoProcSysDev(t *testing.T) {
	ns := nstest.New(t)
	ns.AddTap("eth0", "0a:b3:ec:00:00:21")
	ns.AddTap("eth1", "0a:b3:ec:80:00:22")
	script := `set -e
for d in /proc /sys /dev; do mount -t tmpfs none "$d"; done
test ! -e /proc/sys/net && test ! -e /sys/class/net && test ! -e /dev/ttyS0
exec "$0" -console /dev/ttyS0`
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := ns.Command(ctx, "unshare", "--mount", "--propagation", "private", "sh", "-c", script, agentBin)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("agent without /proc, /sys, /dev: %v\n%s", err, stderr.String())
	}
	got := lines(stderr.String())
	if want := "spectrum-netcfg: cannot open the console, logging to stderr: open /dev/ttyS0: no such file or directory"; got[0] != want {
		t.Errorf("first line %q, want %q", got[0], want)
	}
	if last := got[len(got)-1]; last != guest.DoneLine(2, 0, 0) {
		t.Errorf("last line %q, want %q", last, guest.DoneLine(2, 0, 0))
	}
	if v := ns.Sysctl("net.ipv4.conf.eth1.rp_filter"); v != "1" {
		t.Errorf("eth1 rp_filter = %s, want 1", v)
	}
	if rs := routes(t, ns, "eth0"); len(rs) != 3 {
		t.Errorf("eth0 routes = %+v, want the default route, the prefix route and the route to the gateway", rs)
	}
	if rs := routes(t, ns, "eth1"); len(rs) != 1 {
		t.Errorf("eth1 routes = %+v, want the host route", rs)
	}
}

// TestNoIPv6: a NIC whose IPv6 is off (disable_ipv6, as a kernel booted
// with ipv6.disable=1 has it everywhere) gets IPv4 as always and one
// console line saying IPv6 is off; that is not a failure.
func TestNoIPv6(t *testing.T) {
	ns := nstest.New(t)
	ns.AddTap("eth0", "0a:b3:ec:00:a5:46")
	if out, err := ns.Command(context.Background(), "sysctl", "-w", "net.ipv6.conf.eth0.disable_ipv6=1").CombinedOutput(); err != nil {
		t.Fatalf("sysctl: %v\n%s", err, out)
	}
	idx := ifindex(t, ns, "eth0")
	r := runAgent(t, ns)
	if r.code != 0 {
		t.Errorf("exit status %d, want 0", r.code)
	}
	want := []string{
		"eth0 0a:b3:ec:00:a5:46: IPv6 off (disable_ipv6 is set on it): IPv4 only",
		"eth0 0a:b3:ec:00:a5:46: set link up",
		"eth0 0a:b3:ec:00:a5:46: added 100.64.165.70/16",
		"eth0 0a:b3:ec:00:a5:46: added route default via 169.254.165.70 metric " + itoa(idx) + " onlink",
		"eth0 0a:b3:ec:00:a5:46: added route 169.254.165.70/32 scope link",
		"eth0 0a:b3:ec:00:a5:46: client 100.64.165.70/16 via 169.254.165.70: configured",
		guest.DoneLine(1, 0, 0),
	}
	if diff := cmp.Diff(want, lines(r.console)); diff != "" {
		t.Errorf("console log mismatch (-want +got):\n%s", diff)
	}
	if got := addrs6(t, ns, "eth0"); len(got) != 0 {
		t.Errorf("eth0 has IPv6 addresses %+v with IPv6 off", got)
	}
}
