package router_test

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"spectrum-os.org/netcfg/guest"
	"spectrum-os.org/netcfg/internal/nstest"
)

// checkRuleset compares the router's table in ns, read back with nft -j,
// with want.
func checkRuleset(t *testing.T, ns *nstest.NS, want ruleset) {
	t.Helper()
	got, ok := readRuleset(t, ns)
	if !ok {
		t.Fatal("no table inet spectrum-router")
	}
	for _, name := range []string{limitsPrefix + "link-rate", limitsPrefix + "link-conns", limitsPrefix + "link-dns"} {
		if s, ok := got.Sets[name]; ok {
			s.Elems = []string{}
			got.Sets[name] = s
		}
	}
	// Each link's mark is its ifindex, which only ns knows.
	if links, ok := want.Sets["links"]; ok {
		m := nftSet{Type: "iface_index . mark", Elems: []string{}}
		for _, n := range links.Elems {
			m.Elems = append(m.Elems, n+" . "+itoa(link(t, ns, n)))
		}
		slices.Sort(m.Elems)
		want.Sets["link-marks"] = m
	}
	sortLinkRules(want.Rules)
	sortLinkRules(got.Rules)
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("ruleset mismatch (-want +got):\n%s", diff)
	}
}

func checkNoRuleset(t *testing.T, ns *nstest.NS) {
	t.Helper()
	if got, _ := readRuleset(t, ns); len(got.Tables) != 0 {
		t.Errorf("tables %q still there: %+v", got.Tables, got)
	}
}

func checkSysctl(t *testing.T, ns *nstest.NS, key, want string) {
	t.Helper()
	if got := ns.Sysctl(key); got != want {
		t.Errorf("%s = %s, want %s", key, got, want)
	}
}

// TestRuleset: a provider that is also a client (a VPN VM between a
// network VM and an app VM) and has an uplink. The router's table covers
// its provider NIC only, forwarding goes on, DNS goes to the resolver of
// its resolv.conf; SIGTERM takes the provider NIC down, turns forwarding off
// again and removes the table; nothing else of the ruleset is touched.
func TestRuleset(t *testing.T) {
	ns := nstest.New(t)
	ns.AddTap("eth1", "0a:b3:ec:80:12:34")
	ns.AddTap("up0", "0a:b3:ec:00:00:07")
	ns.AddTap("lan0", "52:54:00:12:34:56")
	// Somebody else's table: the router must leave it alone.
	if out, err := ns.Command(context.Background(), "nft", "add table inet other; add chain inet other c { type filter hook input priority 0; }").CombinedOutput(); err != nil {
		t.Fatalf("nft: %v\n%s", err, out)
	}
	checkSysctl(t, ns, "net.ipv4.ip_forward", "0")
	checkSysctl(t, ns, "net.ipv6.conf.all.forwarding", "0")
	// An uplink the provider keeps deaf to router advertisements.
	ns.AddTap("up1", "52:54:00:12:34:57")
	sysctl(t, ns, "net.ipv6.conf.up1.accept_ra=0")

	a := startAgent(t, ns, "nameserver 192.0.2.53\n")
	checkRuleset(t, ns, wantRuleset(map[string]string{"eth1": "100.64.18.52"}, a.dnsPort(), "0"))
	checkSysctl(t, ns, "net.ipv4.ip_forward", "1")
	checkSysctl(t, ns, "net.ipv6.conf.all.forwarding", "1")
	up0 := itoa(link(t, ns, "up0"))
	want := slices.Concat(guardLines("added"), []string{
		guardAdded,
		"spectrum-router: added table inet spectrum-router (1 provider NICs)",
		limitsLine(),
		"spectrum-router: set net.ipv4.ip_forward 1, was 0",
		"spectrum-router: set IPv6 accept_ra 2, was 1, to keep taking router advertisements with forwarding on: default, lan0, up0",
		"spectrum-router: set net.ipv6.conf.all.forwarding 1, was 0",
		"spectrum-router: DNS forwarder on port " + a.dnsPort() + ", UDP and TCP",
		dnsTo + "goes to 192.0.2.53 (first nameserver of /etc/resolv.conf)",
		"eth1 0a:b3:ec:80:12:34: router: routing for client 100.64.18.52",
		"eth1 0a:b3:ec:80:12:34: router: set IPv6 accept_ra 0, autoconf 0 (were 1, 1)",
		"eth1 0a:b3:ec:80:12:34: set rp_filter 1 (strict), was 0",
		"eth1 0a:b3:ec:80:12:34: set link up",
		"eth1 0a:b3:ec:80:12:34: added 169.254.18.52/32",
		"eth1 0a:b3:ec:80:12:34: added route 100.64.18.52/32 scope link",
		"eth1 0a:b3:ec:80:12:34: added fe80::1/64",
		"eth1 0a:b3:ec:80:12:34: added fd9f:2b8:5010:1234::1/64",
		"eth1 0a:b3:ec:80:12:34: provider 169.254.18.52/32 for client 100.64.18.52: configured",
		"up0 0a:b3:ec:00:00:07: set link up",
		"up0 0a:b3:ec:00:00:07: added 100.64.0.7/16",
		"up0 0a:b3:ec:00:00:07: added route default via 169.254.0.7 metric " + up0 + " onlink",
		"up0 0a:b3:ec:00:00:07: added route 169.254.0.7/32 scope link",
		"up0 0a:b3:ec:00:00:07: added fd9f:2b8:5010:7::2/64",
		"up0 0a:b3:ec:00:00:07: added route default via fe80::1 metric 3",
		"up0 0a:b3:ec:00:00:07: client 100.64.0.7/16 via 169.254.0.7: configured",
		guest.DoneLine(2, 0, 0),
		"spectrum-netcfg: watching for new NICs",
	})
	if diff := cmp.Diff(want, a.lines()); diff != "" {
		t.Errorf("console mismatch (-want +got):\n%s", diff)
	}
	// The provider NIC takes nothing from router advertisements; the
	// uplinks (up0, a client NIC, is the provider's own uplink here)
	// keep taking them with forwarding on, and so will NICs to come,
	// unless the provider chose otherwise (up1).
	for nic, want := range map[string]string{"eth1": "0/0", "up0": "2/1", "lan0": "2/1", "up1": "0/1", "default": "2/1"} {
		ra, auto, _ := strings.Cut(want, "/")
		checkSysctl(t, ns, "net.ipv6.conf."+nic+".accept_ra", ra)
		checkSysctl(t, ns, "net.ipv6.conf."+nic+".autoconf", auto)
	}

	n := len(a.lines())
	if code := a.stop(); code != 0 {
		t.Errorf("exit status %d after SIGTERM, want 0", code)
	}
	// The provider NIC goes down first, and forwarding goes back to
	// what it was before the table goes: never forwarding without the
	// rules.
	want = slices.Concat([]string{
		"eth1 0a:b3:ec:80:12:34: set link down",
		"spectrum-router: set net.ipv4.ip_forward 0 again",
		"spectrum-router: set net.ipv6.conf.all.forwarding 0 again",
		"spectrum-router: removed table inet spectrum-router",
		"spectrum-router: removed table inet spectrum-router-limits",
		"spectrum-router: removed table inet spectrum-router-guard",
	}, guardLines("removed"), []string{"spectrum-netcfg: stopped, status 0"})
	if diff := cmp.Diff(want, a.linesSince(n)); diff != "" {
		t.Errorf("console after SIGTERM mismatch (-want +got):\n%s", diff)
	}
	checkNoRuleset(t, ns)
	checkSysctl(t, ns, "net.ipv4.ip_forward", "0")
	checkSysctl(t, ns, "net.ipv6.conf.all.forwarding", "0")
	// accept_ra stays 2: with forwarding off, 2 means what 1 does.
	checkSysctl(t, ns, "net.ipv6.conf.up0.accept_ra", "2")
	if out, err := ns.Command(context.Background(), "nft", "list", "table", "inet", "other").CombinedOutput(); err != nil {
		t.Errorf("the other table is gone: %v\n%s", err, out)
	}
}

// TestRulesetRestart: running the router again, after a clean stop or
// after a crash that left its table behind, gives the same ruleset; the
// restarted router keeps the clients' connections, and still puts
// forwarding back to what it was before the first run.
func TestRulesetRestart(t *testing.T) {
	for _, forwardBefore := range []string{"0", "1"} {
		t.Run("ip_forward="+forwardBefore, func(t *testing.T) {
			ns := nstest.New(t)
			ns.AddTap("eth1", "0a:b3:ec:80:12:34")
			ns.AddTap("eth2", "0a:b3:ec:80:00:09")
			sysctl(t, ns, "net.ipv4.ip_forward="+forwardBefore)
			sysctl(t, ns, "net.ipv6.conf.all.forwarding="+forwardBefore)
			// The forwarder's port is each run's own.
			want := func(a *agent) ruleset {
				return wantRuleset(map[string]string{"eth1": "100.64.18.52", "eth2": "100.64.0.9"}, a.dnsPort(), forwardBefore)
			}

			// Twice, each stopped cleanly.
			for range 2 {
				a := startAgent(t, ns, "nameserver 192.0.2.53\n")
				checkRuleset(t, ns, want(a))
				if code := a.stop(); code != 0 {
					t.Errorf("exit status %d, want 0", code)
				}
				checkNoRuleset(t, ns)
				checkSysctl(t, ns, "net.ipv4.ip_forward", forwardBefore)
				checkSysctl(t, ns, "net.ipv6.conf.all.forwarding", forwardBefore)
			}

			// A crash: the table stays (and keeps the clients
			// isolated) until the next run replaces it.
			a := startAgent(t, ns, "nameserver 192.0.2.53\n")
			a.kill()
			checkRuleset(t, ns, want(a))
			checkSysctl(t, ns, "net.ipv4.ip_forward", "1")
			checkSysctl(t, ns, "net.ipv6.conf.all.forwarding", "1")
			addConntrack(t, ns, "100.64.18.52", "192.0.2.10")

			a = startAgent(t, ns, "nameserver 192.0.2.53\n")
			checkRuleset(t, ns, want(a))
			wantLog := slices.Concat(guardLines("kept the earlier run's"), []string{
				guardAdded,
				"spectrum-router: replaced the earlier run's table inet spectrum-router (2 provider NICs)",
				limitsLine(),
				"spectrum-router: net.ipv4.ip_forward already 1",
				"spectrum-router: net.ipv6.conf.all.forwarding already 1",
				"spectrum-router: DNS forwarder on port " + a.dnsPort() + ", UDP and TCP",
				dnsTo + "goes to 192.0.2.53 (first nameserver of /etc/resolv.conf)",
				"eth1 0a:b3:ec:80:12:34: router: routing for client 100.64.18.52",
				"eth1 0a:b3:ec:80:12:34: provider 169.254.18.52/32 for client 100.64.18.52: already configured",
				"eth2 0a:b3:ec:80:00:09: router: routing for client 100.64.0.9",
				"eth2 0a:b3:ec:80:00:09: provider 169.254.0.9/32 for client 100.64.0.9: already configured",
				guest.DoneLine(2, 0, 0),
				"spectrum-netcfg: watching for new NICs",
			})
			if diff := cmp.Diff(wantLog, a.lines()); diff != "" {
				t.Errorf("console after the restart mismatch (-want +got):\n%s", diff)
			}
			if got := conntrackEntries(t, ns, "-s", "100.64.18.52"); len(got) != 1 {
				t.Errorf("conntrack entries of 100.64.18.52 after the restart: %q, want the one there was", got)
			}
			n := len(a.lines())
			if code := a.stop(); code != 0 {
				t.Errorf("exit status %d, want 0", code)
			}
			restore := []string{"spectrum-router: set net.ipv4.ip_forward 0 again", "spectrum-router: set net.ipv6.conf.all.forwarding 0 again"}
			if forwardBefore == "1" {
				restore = []string{"spectrum-router: left net.ipv4.ip_forward 1, as it was", "spectrum-router: left net.ipv6.conf.all.forwarding 1, as it was"}
			}
			wantLog = slices.Concat([]string{
				"eth1 0a:b3:ec:80:12:34: set link down",
				"eth2 0a:b3:ec:80:00:09: set link down",
				restore[0], restore[1],
				"spectrum-router: removed table inet spectrum-router",
				"spectrum-router: removed table inet spectrum-router-limits",
				"spectrum-router: removed table inet spectrum-router-guard",
			}, guardLines("removed"), []string{"spectrum-netcfg: stopped, status 0"})
			if diff := cmp.Diff(wantLog, a.linesSince(n)); diff != "" {
				t.Errorf("console after SIGTERM mismatch (-want +got):\n%s", diff)
			}
			checkNoRuleset(t, ns)
			checkSysctl(t, ns, "net.ipv4.ip_forward", forwardBefore)
			checkSysctl(t, ns, "net.ipv6.conf.all.forwarding", forwardBefore)
		})
	}
}

// TestRulesetHotplug: provider NICs that come, change and go update the
// table at once; the conntrack entries of a link's client address are
// flushed when the link comes (those from it: NAT state the new client
// could inherit) and when it goes (from and to it), and no other entry is.
func TestRulesetHotplug(t *testing.T) {
	ns := nstest.New(t)
	a := startAgent(t, ns, "nameserver 192.0.2.53\n")
	checkRuleset(t, ns, wantRuleset(nil, a.dnsPort(), "0"))
	// Stale state of an earlier client with the same address, and
	// another client's, which must stay.
	addConntrack(t, ns, "100.64.18.52", "192.0.2.10")
	addConntrack(t, ns, "192.0.2.10", "100.64.18.52")
	addConntrack(t, ns, "100.64.0.99", "192.0.2.10")

	n := len(a.lines())
	ns.AddTap("eth1", "0a:b3:ec:80:12:34")
	a.waitLine("eth1 0a:b3:ec:80:12:34: provider 169.254.18.52/32 for client 100.64.18.52: configured")
	checkRuleset(t, ns, wantRuleset(map[string]string{"eth1": "100.64.18.52"}, a.dnsPort(), "0"))
	want := []string{
		"eth1 0a:b3:ec:80:12:34: router: routing for client 100.64.18.52",
		"eth1 0a:b3:ec:80:12:34: router: set IPv6 accept_ra 0, autoconf 0 (were 2, 1)",
		"eth1 0a:b3:ec:80:12:34: router: flushed 1 conntrack entries of 100.64.18.52",
		"eth1 0a:b3:ec:80:12:34: set rp_filter 1 (strict), was 0",
		"eth1 0a:b3:ec:80:12:34: set link up",
		"eth1 0a:b3:ec:80:12:34: added 169.254.18.52/32",
		"eth1 0a:b3:ec:80:12:34: added route 100.64.18.52/32 scope link",
		"eth1 0a:b3:ec:80:12:34: added fe80::1/64",
		"eth1 0a:b3:ec:80:12:34: added fd9f:2b8:5010:1234::1/64",
		"eth1 0a:b3:ec:80:12:34: provider 169.254.18.52/32 for client 100.64.18.52: configured",
	}
	if diff := cmp.Diff(want, a.linesSince(n)); diff != "" {
		t.Errorf("console mismatch (-want +got):\n%s", diff)
	}
	if got := conntrackEntries(t, ns, "-s", "100.64.18.52"); len(got) != 0 {
		t.Errorf("conntrack entries from 100.64.18.52 after its link came: %q", got)
	}
	if got := conntrackEntries(t, ns, "-d", "100.64.18.52"); len(got) != 1 {
		t.Errorf("conntrack entries to 100.64.18.52 after its link came: %q, want the one there was", got)
	}
	if got := conntrackEntries(t, ns, "-s", "100.64.0.99"); len(got) != 1 {
		t.Errorf("another client's conntrack entries: %q, want the one there was", got)
	}

	ns.AddTap("eth2", "0a:b3:ec:80:00:09")
	a.waitLine("eth2 0a:b3:ec:80:00:09: provider 169.254.0.9/32 for client 100.64.0.9: configured")
	checkRuleset(t, ns, wantRuleset(map[string]string{"eth1": "100.64.18.52", "eth2": "100.64.0.9"}, a.dnsPort(), "0"))

	// The link goes (its client stopped).
	addConntrack(t, ns, "100.64.18.52", "192.0.2.10")
	// IPv6's: the client's address on the link's /64, its connections
	// marked with the link's ifindex as the table marks them; another
	// link's stay.
	const c6 = "fd9f:2b8:5010:1234::2"
	eth1, eth2 := itoa(link(t, ns, "eth1")), itoa(link(t, ns, "eth2"))
	addConntrack(t, ns, c6, "2001:db8::10", "--mark", eth1)
	addConntrack(t, ns, "2001:db8::10", c6, "--mark", eth1)
	addConntrack(t, ns, "fd9f:2b8:5010:9::2", "2001:db8::10", "--mark", eth2)
	n = len(a.lines())
	ns.IP("link", "del", "eth1")
	a.waitLine("eth1 0a:b3:ec:80:12:34: removed")
	want = []string{
		"eth1 0a:b3:ec:80:12:34: removed",
		"eth1 0a:b3:ec:80:12:34: router: stopped routing for client 100.64.18.52",
		"eth1 0a:b3:ec:80:12:34: router: flushed 2 conntrack entries of 100.64.18.52",
		"eth1 0a:b3:ec:80:12:34: router: flushed 2 conntrack entries of " + c6,
	}
	a.waitLine(want[len(want)-1])
	if diff := cmp.Diff(want, a.linesSince(n)); diff != "" {
		t.Errorf("console mismatch (-want +got):\n%s", diff)
	}
	checkRuleset(t, ns, wantRuleset(map[string]string{"eth2": "100.64.0.9"}, a.dnsPort(), "0"))
	if got := conntrackEntries(t, ns, "-s", "100.64.18.52"); len(got) != 0 {
		t.Errorf("conntrack entries from 100.64.18.52 after its link went: %q", got)
	}
	if got := conntrackEntries(t, ns, "-d", "100.64.18.52"); len(got) != 0 {
		t.Errorf("conntrack entries to 100.64.18.52 after its link went: %q", got)
	}
	for _, dir := range []string{"-s", "-d"} {
		if got := conntrackEntries(t, ns, dir, c6); len(got) != 0 {
			t.Errorf("conntrack entries %s %s after its link went: %q", dir, c6, got)
		}
	}
	if got := conntrackEntries(t, ns, "-s", "fd9f:2b8:5010:9::2"); len(got) != 1 {
		t.Errorf("another client's IPv6 conntrack entries: %q, want the one there was", got)
	}

	// Renamed (udev's predictable names): the rules name the ifindex,
	// so they stay as they are and nft shows the new name. A link must
	// be down to be renamed, and the agent brings it up again as soon
	// as it sees it down: try until the rename comes first.
	for i := 0; ; i++ {
		ns.IP("link", "set", "eth2", "down")
		if _, err := ns.TryIP("link", "set", "eth2", "name", "ens5"); err == nil {
			break
		} else if i == 100 {
			t.Fatalf("rename eth2: %v", err)
		}
	}
	checkRuleset(t, ns, wantRuleset(map[string]string{"ens5": "100.64.0.9"}, a.dnsPort(), "0"))

	// Its MAC changes to another link's, then to a client's.
	n = len(a.lines())
	ns.IP("link", "set", "ens5", "address", "0a:b3:ec:80:00:0a")
	a.waitLine("ens5 0a:b3:ec:80:00:0a: provider 169.254.0.10/32 for client 100.64.0.10: configured")
	if got := a.linesSince(n)[0]; got != "ens5 0a:b3:ec:80:00:0a: router: routing for client 100.64.0.10 (was 100.64.0.9)" {
		t.Errorf("first line after the MAC change: %q", got)
	}
	checkRuleset(t, ns, wantRuleset(map[string]string{"ens5": "100.64.0.10"}, a.dnsPort(), "0"))
	ns.IP("link", "set", "ens5", "address", "0a:b3:ec:00:00:0a")
	a.waitLine("ens5 0a:b3:ec:00:00:0a: router: stopped routing for client 100.64.0.10")
	checkRuleset(t, ns, wantRuleset(nil, a.dnsPort(), "0"))

	if code := a.stop(); code != 0 {
		t.Errorf("exit status %d, want 0", code)
	}
	checkNoRuleset(t, ns)
}

// TestRulesetDNS: the forwarder's upstreams follow the provider's
// resolv.conf however it changes (renamed over, written in place, removed,
// a symlink into a directory made later), and the console says why when
// there is none; the table stays as it is through all of it.
func TestRulesetDNS(t *testing.T) {
	ns := nstest.New(t)
	ns.AddTap("eth1", "0a:b3:ec:80:12:34")
	a := startAgent(t, ns, noResolvConf)
	const prefix = dnsTo
	a.waitLine(prefix + "is refused: cannot read /etc/resolv.conf: no such file or directory")
	links := map[string]string{"eth1": "100.64.18.52"}
	want := wantRuleset(links, a.dnsPort(), "0")
	checkRuleset(t, ns, want)

	// The DHCP client's first lease.
	n := a.setResolv("# generated by the DHCP client\nnameserver 198.51.100.53\n")
	a.waitLineAfter(n, prefix+"goes to 198.51.100.53 (first nameserver of /etc/resolv.conf)")
	checkRuleset(t, ns, want)

	// A new lease: the table and the clients' conntrack entries stay (a
	// client reusing its source port reaches the forwarder, which asks
	// the new resolver).
	addConntrack(t, ns, "100.64.18.52", "100.127.255.53")
	n = a.setResolv("nameserver 203.0.113.53\n")
	a.waitLineAfter(n, prefix+"goes to 203.0.113.53 (first nameserver of /etc/resolv.conf)")
	if got := a.linesSince(n); len(got) != 1 {
		t.Errorf("console after the change: %q, want the one line", got)
	}
	if got := conntrackEntries(t, ns, "-s", "100.64.18.52"); len(got) != 1 {
		t.Errorf("conntrack entries of 100.64.18.52 after the change: %q, want the one there was", got)
	}
	checkRuleset(t, ns, want)

	// Written in place.
	n = len(a.lines())
	if err := os.WriteFile(filepath.Join(a.etc(), "resolv.conf"), []byte("nameserver 192.0.2.53\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	a.waitLineAfter(n, prefix+"goes to 192.0.2.53 (first nameserver of /etc/resolv.conf)")

	for _, tt := range []struct{ conf, line string }{
		{"", "is refused: /etc/resolv.conf names no nameserver"},
		{"nameserver 224.0.0.251\n", "is refused: /etc/resolv.conf names no nameserver that may be used"},
		{"nameserver 127.0.0.53\noptions edns0 trust-ad\n", "goes to 127.0.0.53 (first nameserver of /etc/resolv.conf)"},
		{"nameserver 100.127.255.53\n", "goes to 100.127.255.53 (first nameserver of /etc/resolv.conf: this provider's own provider, while it routes through a client NIC)"},
		{"nameserver fd9f:2b8:5010::53\n", "goes to fd9f:2b8:5010::53 (first nameserver of /etc/resolv.conf: this provider's own provider, while it routes through a client NIC)"},
		{"nameserver 2001:db8::53\nnameserver 192.0.2.54\n", "goes to the first of 2001:db8::53, 192.0.2.54 it may use (nameservers of /etc/resolv.conf)"},
	} {
		n := a.setResolv(tt.conf)
		a.waitLineAfter(n, prefix+tt.line)
		checkRuleset(t, ns, want)
	}

	n = len(a.lines())
	if err := os.Remove(filepath.Join(a.etc(), "resolv.conf")); err != nil {
		t.Fatal(err)
	}
	a.waitLineAfter(n, prefix+"is refused: cannot read /etc/resolv.conf: no such file or directory")

	// A symlink into a directory that appears later, as
	// /run/NetworkManager/resolv.conf does at boot.
	n = len(a.lines())
	if err := os.Symlink("nm/resolv.conf", filepath.Join(a.etc(), "resolv.conf")); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(a.etc(), "nm"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(a.etc(), "nm", "resolv.conf"), []byte("nameserver 198.51.100.1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	a.waitLineAfter(n, prefix+"goes to 198.51.100.1 (first nameserver of /etc/resolv.conf)")
	checkRuleset(t, ns, want)

	if code := a.stop(); code != 0 {
		t.Errorf("exit status %d, want 0", code)
	}
}

// TestRouterWithoutProc: without /proc the router cannot turn forwarding
// on. It says so and installs nothing; the provider NIC stays down
// (fail closed), even one an earlier run left up, while a client NIC is
// configured; the router exits with status 1 after that first pass.
func TestRouterWithoutProc(t *testing.T) {
	ns := nstest.New(t)
	ns.AddTap("eth1", "0a:b3:ec:80:12:34")
	ns.AddTap("eth2", "0a:b3:ec:80:12:35")
	ns.AddTap("eth0", "0a:b3:ec:00:56:78")
	ns.IP("link", "set", "eth2", "up") // as an earlier run would have left it
	a := startAgentSh(t, ns, "mount -t tmpfs none /proc", "nameserver 192.0.2.53\n")
	select {
	case <-a.done:
	case <-time.After(time.Until(deadline(t))):
		t.Fatalf("the router did not exit after its first pass; console:\n%s", a.log())
	}
	const why = "read /proc/sys/net/ipv4/ip_forward (the router needs /proc): no such file or directory"
	want := []string{
		"spectrum-router: error: " + why + "; provider NICs stay down",
		"eth1 0a:b3:ec:80:12:34: error: router: no router: " + why,
		"eth1 0a:b3:ec:80:12:34: provider 169.254.18.52/32 for client 100.64.18.52: failed",
		"eth2 0a:b3:ec:80:12:35: error: router: no router: " + why,
		"eth2 0a:b3:ec:80:12:35: set link down",
		"eth2 0a:b3:ec:80:12:35: provider 169.254.18.53/32 for client 100.64.18.53: failed",
		"eth0 0a:b3:ec:00:56:78: set link up",
		"eth0 0a:b3:ec:00:56:78: added 100.64.86.120/16",
		"eth0 0a:b3:ec:00:56:78: added route default via 169.254.86.120 metric 4 onlink",
		"eth0 0a:b3:ec:00:56:78: added route 169.254.86.120/32 scope link",
		"eth0 0a:b3:ec:00:56:78: added fd9f:2b8:5010:5678::2/64",
		"eth0 0a:b3:ec:00:56:78: added route default via fe80::1 metric 4",
		"eth0 0a:b3:ec:00:56:78: client 100.64.86.120/16 via 169.254.86.120: configured",
		guest.DoneLine(1, 2, 1),
	}
	if diff := cmp.Diff(want, a.lines()); diff != "" {
		t.Errorf("console mismatch (-want +got):\n%s", diff)
	}
	checkNoRuleset(t, ns)
	checkSysctl(t, ns, "net.ipv4.ip_forward", "0")
	for _, nic := range []string{"eth1", "eth2"} {
		if out := string(ns.IP("-j", "link", "show", nic)); strings.Contains(out, `"UP"`) {
			t.Errorf("%s is up: %s", nic, out)
		}
	}
	var ee *exec.ExitError
	if !errors.As(a.err, &ee) || ee.ExitCode() != 1 {
		t.Errorf("exit: %v, want status 1", a.err)
	}
}
