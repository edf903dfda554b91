package router_test

import (
	"context"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"spectrum-os.org/netcfg/internal/mac"
	"spectrum-os.org/netcfg/internal/nstest"
)

var clientRange = netip.MustParsePrefix("100.64.0.0/16")

// The guards (issue 17, guard.go): what passes while the router's table
// is gone.

// wantGuards is the router's policy routing rules, as ip rule shows them
// (IPv4's, then IPv6's).
var wantGuards = []string{
	"10:	from all iif lo goto 12",
	"11:	from 100.64.0.0/16 to 100.64.0.0/16 prohibit",
	"12:	from all nop",
	"10:	from all iif lo goto 12",
	"11:	from fd9f:2b8:5010::/48 to fd9f:2b8:5010::/48 prohibit",
	"12:	from all nop",
}

// wantGuardTable is the router's guard table as nft list shows it, a
// line each.
var wantGuardTable = []string{
	"table inet spectrum-router-guard { # progname spectrum-router",
	"flags owner",
	"chain forward {",
	"type filter hook forward priority filter + 10; policy accept;",
	`meta mark & 0x10000000 == 0x00000000 ip saddr 100.64.0.0/16 drop comment "not seen by table inet spectrum-router, which is gone: nothing of a client's is forwarded"`,
	`meta mark & 0x10000000 == 0x00000000 ip daddr 100.64.0.0/16 drop comment "not seen by table inet spectrum-router, which is gone: nothing of a client's is forwarded"`,
	`meta mark & 0x10000000 == 0x00000000 ip6 saddr fd9f:2b8:5010::/48 drop comment "not seen by table inet spectrum-router, which is gone: nothing of a client's is forwarded"`,
	`meta mark & 0x10000000 == 0x00000000 ip6 daddr fd9f:2b8:5010::/48 drop comment "not seen by table inet spectrum-router, which is gone: nothing of a client's is forwarded"`,
	"}",
	"}",
}

// The router's console lines about its guards.
const (
	guardRules4 = "ip rules 10: iif lo goto 12; 11: from 100.64.0.0/16 to 100.64.0.0/16 prohibit; 12: nop"
	guardRules6 = "ip -6 rules 10: iif lo goto 12; 11: from fd9f:2b8:5010::/48 to fd9f:2b8:5010::/48 prohibit; 12: nop"
	guardAdded  = "spectrum-router: added table inet spectrum-router-guard (owned by the router: nothing of a client's is forwarded without table inet spectrum-router)"
)

// guardLines is the router's lines about its guard rules, with verb
// ("added", "kept the earlier run's", "removed") before each.
func guardLines(verb string) []string {
	return []string{"spectrum-router: " + verb + " " + guardRules4, "spectrum-router: " + verb + " " + guardRules6}
}

// guards is ns's policy routing rules of priorities 10 to 12, IPv4's then
// IPv6's, as ip rule shows them.
func guards(t *testing.T, ns *nstest.NS) []string {
	t.Helper()
	var got []string
	for _, fam := range []string{"-4", "-6"} {
		for _, l := range strings.Split(string(ns.IP(fam, "rule", "show")), "\n") {
			if p, _, ok := strings.Cut(l, ":"); ok && p >= "10" && p <= "12" && len(p) == 2 {
				got = append(got, strings.TrimSpace(l))
			}
		}
	}
	return got
}

// checkGuards fails the test unless ns has the router's guards, its
// rules and its table (on), or none of them.
func checkGuards(t *testing.T, ns *nstest.NS, on bool) {
	t.Helper()
	var want []string
	if on {
		want = wantGuards
	}
	if got := guards(t, ns); !slices.Equal(got, want) {
		t.Errorf("ip rules 10-12:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	// nft -j cannot show the owner flag (nft 1.0.6 ends its output
	// there): the text form.
	out, err := ns.Command(context.Background(), "nft", "list", "table", "inet", "spectrum-router-guard").Output()
	if !on {
		if err == nil {
			t.Errorf("table inet spectrum-router-guard still there: %s", out)
		}
		return
	}
	if err != nil {
		t.Fatalf("nft list table inet spectrum-router-guard: %v", err)
	}
	var got []string
	for _, l := range strings.Split(string(out), "\n") {
		if l = strings.TrimSpace(l); l != "" {
			got = append(got, l)
		}
	}
	if diff := cmp.Diff(wantGuardTable, got); diff != "" {
		t.Errorf("table inet spectrum-router-guard mismatch (-want +got):\n%s", diff)
	}
}

// TestGuardFlushLeaks (issue 17; what row 3's fix left): another program
// flushes the whole ruleset again and again while client 1 sends to the
// LAN and the LAN (which routes the clients' range to the provider) sends
// to client 1, each a datagram a millisecond; IPv4, then IPv6. From each
// flush until the router has put its tables back nothing NATs or filters,
// and forwarding is on: without the guard table, client 1's datagrams
// left the uplink with its own address and the LAN's reached it. None
// may, and the provider's own traffic to a client, and from a client's
// address (a chained provider's own address on its uplink is one), passes.
func TestGuardFlushLeaks(t *testing.T) {
	tc := newAttackNet(t)
	checkGuards(t, tc.prov, true)
	tc.lan.ns.IP("route", "add", "100.64.0.0/16", "via", uplinkAddr)
	tc.lan.ns.IP("-6", "route", "add", mac.ULA.String(), "via", uplinkAddr6)
	waitDAD(t, tc.c1)
	// What the provider sends out of its uplink, as the LAN gets it (a
	// capture of a protocol sees only what comes in).
	wire4, wire6 := captureIPv4(t, tc.lan.ns, "lan0"), captureIPv6(t, tc.lan.ns, "lan0")
	for _, f := range []struct{ lan, client string }{{webAddr, "100.64.0.1"}, {webAddr6, "fd9f:2b8:5010:1::2"}} {
		out := startFloodTo(t, tc.c1, tc.lan.ns, f.lan)
		in := startFloodTo(t, tc.lan.ns, tc.c1, f.client)
		time.Sleep(50 * time.Millisecond)
		const flushes = 30
		n := 0
		for range flushes {
			n = len(tc.pa.lines())
			nftIn(t, tc.prov, "flush ruleset\n")
			time.Sleep(20 * time.Millisecond)
		}
		tc.pa.waitLineAfter(n, "spectrum-router: nft removed table inet spectrum-router: put it back")
		time.Sleep(50 * time.Millisecond)
		sent, got := out.end(), in.end()
		t.Logf("%s, %d flushes: %d of client 1's datagrams reached the LAN, %d of the LAN's client 1", f.client, flushes, sent, got)
		if got > 0 {
			t.Errorf("client 1 (%s) got %d datagrams the LAN sent it around %d flushes of the ruleset", f.client, got, flushes)
		}
		if sent == 0 {
			t.Errorf("none of client 1's datagrams reached the LAN at %s: the test's set-up is wrong", f.lan)
		}
	}
	var leaked []string
	for _, p := range wire4() {
		if clientRange.Contains(p.src) {
			leaked = append(leaked, p.src.String()+" -> "+p.dst.String())
		}
	}
	leaked = append(leaked, wire6.find(func(src, _ netip.Addr, _ byte, _ []byte) bool { return mac.ULA.Contains(src) })...)
	t.Logf("%d packets left the uplink with a client's address", len(leaked))
	if len(leaked) > 0 {
		t.Errorf("%d packets left the uplink with a client's address around the flushes of the ruleset, the first: %s", len(leaked), leaked[0])
	}
	checkRuleset(t, tc.prov, wantRuleset(map[string]string{"p1": "100.64.0.1", "p2": "100.64.0.2"}, tc.pa.dnsPort(), "0"))
	checkGuards(t, tc.prov, true)
	tc.checkNAT(t)

	// The provider's own traffic: to a client (IPv4 and IPv6), and from a
	// client's address.
	serveWho(t, tc.c1, ":9996")
	for _, a := range []string{"100.64.0.1", "fd9f:2b8:5010:1::2"} {
		if _, err := dialTCP(t, tc.prov, a, 9996); err != nil {
			t.Errorf("the provider's own connection to client 1 at %s: %v", a, err)
		}
	}
	tc.prov.IP("addr", "add", "100.64.0.250/32", "dev", "up0")
	var c net.Conn
	var err error
	inNS(t, tc.prov, func() {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("100.64.0.250")}, Timeout: 3 * time.Second}
		c, err = d.Dial("tcp", webAddr+":7")
	})
	if err != nil {
		t.Errorf("the provider's own connection from 100.64.0.250 to %s: %v", webAddr, err)
	} else {
		c.Close()
	}
	if code := tc.pa.stop(); code != 0 {
		t.Errorf("exit status %d after SIGTERM, want 0", code)
	}
	checkGuards(t, tc.prov, false)
	checkSysctl(t, tc.prov, "net.ipv4.conf.all.src_valid_mark", "0")
}

// TestGuardFwmarkRouting: a provider whose VPN routes everything by fwmark,
// as wg-quick sets it up (a rule "not fwmark 51820 table 51820" whose table
// has the default route through the tunnel, "table main
// suppress_prefixlength 0", src_valid_mark 1, and a prerouting chain that
// sets the whole mark of every UDP packet to its connection's): clients
// still reach the Internet, through the tunnel and NATed to its address,
// with the strict rp_filter on every NIC, tunnel included. The tunnel is a
// veth to a namespace standing for the VPN server's end (the test machine
// has no WireGuard), with a server at 192.0.2.10 that echoes UDP.
func TestGuardFwmarkRouting(t *testing.T) {
	tc := newAttackNet(t)
	vpn := nstest.New(t)
	tc.prov.IP("link", "add", "wg0", "type", "veth", "peer", "name", "vpn0", "netns", vpn.Name)
	vpn.IP("addr", "add", "198.51.100.1/24", "dev", "vpn0")
	vpn.IP("addr", "add", "192.0.2.10/32", "dev", "lo")
	vpn.IP("link", "set", "vpn0", "up")
	vpn.IP("link", "set", "lo", "up")
	tc.prov.IP("addr", "add", "198.51.100.2/24", "dev", "wg0")
	tc.prov.IP("link", "set", "wg0", "up")
	tc.prov.IP("route", "add", "default", "via", "198.51.100.1", "dev", "wg0", "table", "51820")
	tc.prov.IP("rule", "add", "not", "fwmark", "51820", "table", "51820")
	tc.prov.IP("rule", "add", "table", "main", "suppress_prefixlength", "0")
	sysctl(t, tc.prov, "net.ipv4.conf.all.src_valid_mark=1")
	for _, nic := range []string{"all", "wg0", "up0"} {
		sysctl(t, tc.prov, "net.ipv4.conf."+nic+".rp_filter=1")
	}
	nftIn(t, tc.prov, `table ip wg-quick-wg0 {
	chain premangle { type filter hook prerouting priority mangle; policy accept;
		meta l4proto udp meta mark set ct mark
	}
	chain postmangle { type filter hook postrouting priority mangle; policy accept;
		meta l4proto udp meta mark 0x0000ca6c ct mark set meta mark
	}
}
`)
	serveWho(t, vpn, "192.0.2.10:7")
	for i := range 3 {
		b, err := udpExchange(t, tc.c1, "", 0, "192.0.2.10", 7, []byte("through the tunnel"))
		if err != nil {
			t.Fatalf("client 1 -> 192.0.2.10:7 through the tunnel (try %d): %v", i, err)
		}
		if from, _, _ := strings.Cut(string(b), ":"); from != "198.51.100.2" {
			t.Errorf("the server behind the tunnel saw client 1 at %q, want the tunnel's 198.51.100.2", b)
		}
	}
	got, err := dialTCP(t, tc.c1, "192.0.2.10", 7)
	if err != nil {
		t.Fatalf("client 1 -> 192.0.2.10:7 TCP through the tunnel: %v", err)
	}
	if host, _, _ := net.SplitHostPort(got); host != "198.51.100.2" {
		t.Errorf("the server behind the tunnel saw client 1's TCP at %s, want 198.51.100.2", got)
	}
	if out, err := tc.prov.Command(context.Background(), "nft", "list", "table", "ip", "wg-quick-wg0").CombinedOutput(); err != nil {
		t.Errorf("the VPN's table is gone: %v\n%s", err, out)
	}
}

// serveWho serves TCP and UDP on addr in ns until the test ends, telling
// each peer the address it sees it at (a line on TCP, a datagram's
// answer on UDP).
func serveWho(t *testing.T, ns *nstest.NS, addr string) {
	t.Helper()
	var l net.Listener
	var u net.PacketConn
	inNS(t, ns, func() {
		var err error
		if l, err = net.Listen("tcp", addr); err != nil {
			t.Fatal(err)
		}
		if u, err = net.ListenPacket("udp", addr); err != nil {
			t.Fatal(err)
		}
	})
	t.Cleanup(func() { l.Close(); u.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Write([]byte(c.RemoteAddr().String() + "\n"))
			c.Close()
		}
	}()
	go func() {
		buf := make([]byte, 512)
		for {
			_, from, err := u.ReadFrom(buf)
			if err != nil {
				return
			}
			u.WriteTo([]byte(from.String()), from)
		}
	}()
}
