package vmtest

import (
	"context"
	"net/netip"
	"strings"
	"testing"

	"spectrum-os.org/netcfg/vmtest/lan"
	"spectrum-os.org/netcfg/vmtest/vm"
)

// lanBridge is the LAN's bridge in spectrumd's namespace: the uplinks/net
// entry of a VM that has a NIC on the LAN.
const lanBridge = "lan0"

// The LAN's front page, by name and by address.
var (
	webByName = "http://" + lan.WebName + "/"
	webByAddr = "http://" + lan.First.Web.String() + "/"
)

// webURL is the LAN web server's URL of path at address a.
func webURL(a netip.Addr, path string) string {
	if a.Is6() {
		return "http://[" + a.String() + "]" + path
	}
	return "http://" + a.String() + path
}

// lan starts the test's LAN beside spectrumd's namespace (vmtest/lan). On
// a failure its log (dnsmasq's, the web server's) is printed.
func (e *env) lan() *lan.LAN {
	e.t.Helper()
	return e.lanMode(lan.IPv4Only, false)
}

// lanMode is lan for a LAN of the given mode, its IPv6 addresses by SLAAC
// or, stateful, by DHCPv6.
func (e *env) lanMode(mode lan.Mode, stateful bool) *lan.LAN {
	e.t.Helper()
	return e.lanConfig(lan.Config{Mode: mode, Stateful: stateful})
}

// lanConfig is lan for a LAN of c's mode, addressing and MTU (its
// namespace and bridge are the test's).
func (e *env) lanConfig(c lan.Config) *lan.LAN {
	e.t.Helper()
	c.HostNS, c.Bridge = e.ns.Name, lanBridge
	l, err := lan.Start(c)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() {
		if e.t.Failed() {
			e.t.Logf("LAN log:\n%s", l.Log())
		}
		if err := l.Close(); err != nil {
			e.t.Errorf("LAN: %v", err)
		}
	})
	return l
}

// spec writes a VM directory from a full Spec (uplinks, lynx).
func (e *env) spec(s vm.Spec) {
	e.t.Helper()
	if _, err := vm.WriteDir(e.data, s, e.a); err != nil {
		e.t.Fatal(err)
	}
	e.specs[s.Name] = s
}

// ok waits for p's report what (an event prefix such as "fetch URL ok")
// or for its failure ("fail " and what's first two words) and returns the
// event; a failure fails the test.
func ok(t testing.TB, ctx context.Context, p *vm.Proc, what string) string {
	t.Helper()
	f := strings.Fields(what)
	failure := "fail " + strings.Join(f[:min(2, len(f))], " ")
	l := p.Wait(t, ctx, what, failure)
	e, _ := vm.Event(l.Text)
	if strings.HasPrefix(e, "fail ") {
		t.Fatalf("%s: %s", p.Name, e)
	}
	return e
}

// lease waits for a DHCP lease p's client reported ("dhcp IFACE lease
// addr=... dns=...") that match accepts, and returns its address and the
// event.
func lease(t testing.TB, ctx context.Context, p *vm.Proc, what string, match func(addr netip.Prefix, dns string) bool) (netip.Prefix, string) {
	t.Helper()
	var addr netip.Prefix
	l, err := p.Serial.WaitMatch(ctx, what, func(e string) bool {
		if strings.HasPrefix(e, "fail dhcp") {
			return true
		}
		f := strings.Fields(e)
		if len(f) < 3 || f[0] != "dhcp" || f[2] != "lease" {
			return false
		}
		a, err := netip.ParsePrefix(vm.Field(e, "addr"))
		if err != nil || !match(a, vm.Field(e, "dns")) {
			return false
		}
		addr = a
		return true
	})
	if err != nil {
		t.Fatalf("%s: %v", p.Name, err)
	}
	e, _ := vm.Event(l.Text)
	if strings.HasPrefix(e, "fail") {
		t.Fatalf("%s: %s", p.Name, e)
	}
	return addr, e
}

// inPool reports whether a is in p's DHCP pool.
func inPool(a netip.Addr, p lan.Plan) bool {
	return a.Compare(p.RangeStart) >= 0 && a.Compare(p.RangeEnd) <= 0
}

// lease6 waits for an IPv6 configuration p's network manager reported
// ("dhcp6 IFACE lease addrs=... router=... dns=...") that match accepts,
// and returns its first address and the event.
func lease6(t testing.TB, ctx context.Context, p *vm.Proc, what string, match func(addrs []netip.Prefix, dns string) bool) (netip.Prefix, string) {
	t.Helper()
	var first netip.Prefix
	l, err := p.Serial.WaitMatch(ctx, what, func(e string) bool {
		if strings.HasPrefix(e, "fail dhcp") {
			return true
		}
		f := strings.Fields(e)
		if len(f) < 3 || f[0] != "dhcp6" || f[2] != "lease" {
			return false
		}
		var addrs []netip.Prefix
		for _, s := range strings.Split(vm.Field(e, "addrs"), ",") {
			a, err := netip.ParsePrefix(s)
			if err != nil {
				return false
			}
			addrs = append(addrs, a)
		}
		if len(addrs) == 0 || !match(addrs, vm.Field(e, "dns")) {
			return false
		}
		first = addrs[0]
		return true
	})
	if err != nil {
		t.Fatalf("%s: %v", p.Name, err)
	}
	e, _ := vm.Event(l.Text)
	if strings.HasPrefix(e, "fail") {
		t.Fatalf("%s: %s", p.Name, e)
	}
	return first, e
}
