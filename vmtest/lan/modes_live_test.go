package lan_test

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	gocmp "github.com/google/go-cmp/cmp"

	"spectrum-os.org/netcfg/internal/nstest"
	"spectrum-os.org/netcfg/vmtest/dhcpc"
	"spectrum-os.org/netcfg/vmtest/lan"
)

// TestLANModes runs the LAN in each mode and uses it from a host on its
// bridge whose network manager is the guests' (package dhcpc, with its
// IPv6 side on, as the test netvm runs it): in each family the LAN speaks,
// the address (a DHCP lease; SLAAC, or DHCPv6 in the stateful variant),
// the default route, read back with ip -j; resolv.conf naming the
// resolvers of both families, IPv4's first; the web name's A and AAAA
// records; the front page fetched over each family, the page and the
// server's record saying which family reached it; echo, and the capture
// seeing the client's own source; in a family the LAN does not speak, no
// record, no address, and the LAN has no address of it. The LAN has no
// route to the VMs' ULA. The client forwards IPv6 (a provider's router
// does), so it gets IPv6 only because it takes advertisements all the same
// (accept_ra=2). A Renumber moves the IPv6 resolver: the
// advertisements and DHCPv6 name the new one, which resolv.conf follows.
func TestLANModes(t *testing.T) {
	nstest.RequirePrivileged(t)
	if _, err := lan.Dnsmasq(); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name     string
		mode     lan.Mode
		stateful bool
		mtu      int
	}{
		{"ipv4", lan.IPv4Only, false, 0},
		{"dual", lan.DualStack, false, 0},
		{"ipv6", lan.IPv6Only, false, 0},
		{"ipv6-stateful", lan.IPv6Only, true, 0},
		{"dual-mtu1400", lan.DualStack, false, 1400},
		{"ipv6-mtu1280", lan.IPv6Only, false, 1280},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			host := nstest.New(t)
			const bridge = "lanbr0"
			l, err := lan.Start(lan.Config{HostNS: host.Name, Bridge: bridge, Mode: tc.mode, Stateful: tc.stateful, MTU: tc.mtu})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() {
				if t.Failed() {
					t.Logf("LAN log:\n%s", l.Log())
				}
				if err := l.Close(); err != nil {
					t.Errorf("Close: %v", err)
				}
			})
			// The client forwards IPv6, as a provider does: it takes the
			// advertisements only because it sets accept_ra=2.
			c := newClientWith(t, ctx, host, bridge, clientOpts{ipv6: true, forward: true})
			var wantDNS []string
			var v4, v6 netip.Addr
			if tc.mode.IPv4() {
				first := c.lease(t, ctx)
				if !inPool(first.Addr.Addr(), lan.First) || first.Router != lan.Router {
					t.Fatalf("lease %v, want one of the first pool via %v", first, lan.Router)
				}
				if first.MTU != tc.mtu {
					t.Errorf("lease %v: MTU %d, want %d", first, first.MTU, tc.mtu)
				}
				v4 = first.Addr.Addr()
				wantDNS = append(wantDNS, lan.First.DNS.String())
			}
			if tc.mode.IPv6() {
				l6 := c.lease6(t, ctx, func(l dhcpc.Lease6) bool { return len(l.DNS) > 0 })
				if len(l6.Addrs) != 1 || !l6.Router.IsLinkLocalUnicast() || l6.Managed != tc.stateful || (!tc.stateful && !l6.Other) ||
					!slices.Equal(l6.DNS, []netip.Addr{lan.First.DNS6}) {
					t.Fatalf("IPv6 configuration %v: want one address, a link-local router, m=%v, DNS %v", l6, tc.stateful, lan.First.DNS6)
				}
				// dnsmasq advertises its NIC's MTU, 1500 unless set.
				if want := cmp.Or(tc.mtu, 1500); l6.MTU != uint32(want) {
					t.Errorf("IPv6 configuration %v: MTU %d, want %d", l6, l6.MTU, want)
				}
				a := l6.Addrs[0]
				switch {
				case tc.stateful && (a.Bits() != 128 || a.Addr().Compare(lan.First.Range6Start) < 0 || a.Addr().Compare(lan.First.Range6End) > 0):
					t.Errorf("DHCPv6 address %v, want a /128 of %v-%v", a, lan.First.Range6Start, lan.First.Range6End)
				case !tc.stateful && (a.Bits() != 64 || !lan.Prefix6.Contains(a.Addr())):
					t.Errorf("SLAAC address %v, want a /64 in %v", a, lan.Prefix6)
				}
				v6 = a.Addr()
				wantDNS = append(wantDNS, lan.First.DNS6.String())
				if diff := gocmp.Diff([]string{"default " + l6.Router.String() + " " + clientIface}, c.defaultRoutes(t, "-6")); diff != "" {
					t.Errorf("IPv6 default routes (-want +got):\n%s", diff)
				}
			}
			if diff := gocmp.Diff(wantDNS, nameservers(t, c.resolv)); diff != "" {
				t.Errorf("resolv.conf nameservers (-want +got):\n%s", diff)
			}
			// The link's MTU from the lease; IPv6's from the
			// advertisements (on an IPv6-only LAN, the link keeps 1500).
			if tc.mtu != 0 {
				want := tc.mtu
				if !tc.mode.IPv4() {
					want = 1500
				}
				var ls []struct{ MTU int }
				if err := json.Unmarshal(c.ns.IP("-j", "link", "show", "dev", clientIface), &ls); err != nil || len(ls) != 1 || ls[0].MTU != want {
					t.Errorf("%s's MTU %+v, %v; want %d", clientIface, ls, err, want)
				}
				if tc.mode.IPv6() {
					var mtu6 []byte
					if err := lan.Do(c.ns.Path(), func() (err error) {
						mtu6, err = readFile("/proc/sys/net/ipv6/conf/" + clientIface + "/mtu")
						return err
					}); err != nil || strings.TrimSpace(string(mtu6)) != fmt.Sprint(tc.mtu) {
						t.Errorf("%s's IPv6 MTU %q, %v; want %d", clientIface, mtu6, err, tc.mtu)
					}
				}
			}
			if !tc.mode.IPv4() {
				if got := c.defaultRoutes(t, "-4"); len(got) != 0 {
					t.Errorf("IPv4 routes on an IPv6-only LAN: %q", got)
				}
				out, err := exec.Command("ip", "-n", l.NS(), "-j", "-4", "addr", "show", "dev", lan.Iface).Output()
				if err != nil || strings.Contains(string(out), `"inet"`) {
					t.Errorf("the IPv6-only LAN has an IPv4 address: %s %v", out, err)
				}
			}
			if !tc.mode.IPv6() {
				if out := c.ns.IP("-j", "-6", "addr", "show", "dev", clientIface, "scope", "global"); strings.Contains(string(out), `"inet6"`) {
					t.Errorf("a global IPv6 address on an IPv4-only LAN: %s", out)
				}
			}

			// DNS: each family's record where the LAN speaks it, none
			// where it does not.
			for _, q := range []struct {
				on        bool
				server    netip.Addr
				net, want string
				web       netip.Addr
			}{
				{tc.mode.IPv4(), lan.First.DNS, "ip4", "IPv4", lan.First.Web},
				{tc.mode.IPv6(), lan.First.DNS6, "ip6", "IPv6", lan.First.Web6},
			} {
				if !q.on {
					continue
				}
				for _, fam := range []struct {
					net string
					web netip.Addr
					on  bool
				}{{"ip4", lan.First.Web, tc.mode.IPv4()}, {"ip6", lan.First.Web6, tc.mode.IPv6()}} {
					got, err := c.lookupNet(ctx, q.server, fam.net, lan.WebName)
					if fam.on && (err != nil || !slices.Equal(got, []netip.Addr{fam.web})) {
						t.Errorf("%s %s via %v = %v, %v; want %v", fam.net, lan.WebName, q.server, got, err, fam.web)
					}
					if !fam.on && err == nil {
						t.Errorf("%s %s via %v = %v; want no record", fam.net, lan.WebName, q.server, got)
					}
				}
			}

			// The page over each family, and echo with the capture.
			for _, f := range []struct {
				on     bool
				net    string
				family string
				dns    netip.Addr
				self   netip.Addr
				echo   netip.Addr
			}{
				{tc.mode.IPv4(), "ip4", "IPv4", lan.First.DNS, v4, lan.Router},
				{tc.mode.IPv6(), "ip6", "IPv6", lan.First.DNS6, v6, lan.Router6},
			} {
				if !f.on {
					continue
				}
				n := len(l.Requests())
				if body := get(t, c.httpClientNet(f.dns, f.net), "http://"+lan.WebName+"/"); body != lan.FrontPageFor(f.family) ||
					!strings.Contains(body, lan.PageFamily(f.family)) {
					t.Errorf("front page over %s: %q", f.family, body)
				}
				if reqs := l.Requests(); len(reqs) != n+1 || reqs[n].Family != f.family || reqs[n].Remote.Addr() != f.self {
					t.Errorf("web requests %+v, want one more over %s from %v", reqs, f.family, f.self)
				}
				payload := "hello " + f.family
				conn, err := lan.Dial(c.ns.Path(), "udp", netip.AddrPortFrom(f.echo, lan.EchoPort).String())
				if err != nil {
					t.Fatal(err)
				}
				conn.SetDeadline(time.Now().Add(5 * time.Second))
				conn.Write([]byte(payload))
				buf := make([]byte, 64)
				if n, err := conn.Read(buf); err != nil || string(buf[:n]) != payload {
					t.Errorf("echo over %s: %q, %v", f.family, buf[:n], err)
				}
				conn.Close()
				p, _, err := l.WaitPacket(ctx, func(p lan.Packet) bool { return p.Proto == 17 && p.Payload == payload })
				if err != nil || p.Src != f.self || p.Dst != f.echo || p.DstPort != lan.EchoPort {
					t.Errorf("captured %+v, %v; want from %v to %v port %d", p, err, f.self, f.echo, lan.EchoPort)
				}
			}
			if tc.mode.IPv6() {
				if out, err := exec.Command("ip", "-n", l.NS(), "route", "get", "fd9f:2b8:5010:1::2").CombinedOutput(); err == nil {
					t.Errorf("the LAN has a route to the VMs' ULA: %s", out)
				}
				// Renumber: the new resolver in the advertisements and
				// in DHCPv6, and in resolv.conf.
				if err := l.Renumber(lan.Second); err != nil {
					t.Fatal(err)
				}
				l6 := c.lease6(t, ctx, func(l dhcpc.Lease6) bool { return slices.Equal(l.DNS, []netip.Addr{lan.Second.DNS6}) })
				t.Logf("after Renumber: %v", l6)
				want := slices.Clone(wantDNS)
				want[len(want)-1] = lan.Second.DNS6.String()
				if got := nameservers(t, c.resolv); tc.mode.IPv4() && len(got) > 0 && got[0] == lan.Second.DNS.String() {
					// The IPv4 side follows at its next renewal,
					// which may have come already.
					want[0] = lan.Second.DNS.String()
				}
				if diff := gocmp.Diff(want, nameservers(t, c.resolv)); diff != "" {
					t.Errorf("resolv.conf nameservers after Renumber (-want +got):\n%s", diff)
				}
				got, err := c.lookupNet(ctx, lan.Second.DNS6, "ip6", lan.WebName)
				if err != nil || !slices.Equal(got, []netip.Addr{lan.Second.Web6}) {
					t.Errorf("AAAA via %v after Renumber = %v, %v; want %v", lan.Second.DNS6, got, err, lan.Second.Web6)
				}
			}
		})
	}
}

// lease6 waits for the client's next IPv6 configuration that match
// accepts.
func (c *client) lease6(t *testing.T, ctx context.Context, match func(dhcpc.Lease6) bool) dhcpc.Lease6 {
	t.Helper()
	for {
		select {
		case l := <-c.leases6:
			if match(l) {
				return l
			}
			t.Logf("IPv6 configuration %v: not yet", l)
		case <-ctx.Done():
			t.Fatalf("no IPv6 configuration: %v", ctx.Err())
			return dhcpc.Lease6{}
		}
	}
}

// defaultRoutes reads the client's default routes of a family ("-4",
// "-6") back with ip -j: "default GATEWAY DEV" each.
func (c *client) defaultRoutes(t *testing.T, family string) []string {
	t.Helper()
	var rs []struct{ Dst, Gateway, Dev string }
	if err := json.Unmarshal(c.ns.IP("-j", family, "route", "show", "default"), &rs); err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, r := range rs {
		out = append(out, strings.TrimSpace(r.Dst+" "+r.Gateway+" "+r.Dev))
	}
	return out
}

func (c *client) lookupNet(ctx context.Context, dns netip.Addr, network, name string) ([]netip.Addr, error) {
	r := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, n, _ string) (net.Conn, error) {
		return lan.Dial(c.ns.Path(), n, netip.AddrPortFrom(dns, 53).String())
	}}
	return r.LookupNetIP(ctx, network, name)
}

// httpClientNet fetches from inside the client's namespace over one
// family (network "ip4" or "ip6"), resolving through dns.
func (c *client) httpClientNet(dns netip.Addr, network string) *http.Client {
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, n, addr string) (net.Conn, error) {
			host, port, err := net.SplitHostPort(addr)
			if err != nil {
				return nil, err
			}
			ips, err := c.lookupNet(ctx, dns, network, host)
			if err != nil {
				return nil, err
			}
			if len(ips) == 0 {
				return nil, fmt.Errorf("%s: no %s address", host, network)
			}
			return lan.Dial(c.ns.Path(), n, net.JoinHostPort(ips[0].String(), port))
		}}}
}

// nameservers are resolv.conf's nameserver lines.
func nameservers(t *testing.T, path string) []string {
	t.Helper()
	b, err := readFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) == 2 && f[0] == "nameserver" {
			got = append(got, f[1])
		}
	}
	return got
}
