package guest

import (
	"encoding/json"
	"errors"
	"net/netip"
	"os"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"spectrum-os.org/netcfg/internal/nstest"
)

// TestApplyAll sends batches of changes to a real kernel, in a fresh
// namespace, with refusals first, in the middle and last, and checks that
// each change gets its own outcome (the kernel answers only refusals and
// the last request) and that what is reported made was made, read back
// with ip -j.
func TestApplyAll(t *testing.T) {
	ns := nstest.New(t)
	ns.AddTap("t1", "0a:b3:ec:00:00:01")
	var links []struct {
		Index uint32 `json:"ifindex"`
	}
	if err := json.Unmarshal(ns.IP("-j", "link", "show", "t1"), &links); err != nil || len(links) != 1 {
		t.Fatalf("ip -j link show t1: %v %v", links, err)
	}
	idx := links[0].Index
	f, err := os.Open(ns.Path())
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	c, err := netlink.Dial(unix.NETLINK_ROUTE, &netlink.Config{NetNS: int(f.Fd())})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetOption(netlink.ExtendedAcknowledge, true)

	addr4, addr6 := pfx("100.64.0.1/16"), pfx("fd9f:2b8:5010:1::2/64")
	def6 := Route{
		Table: unix.RT_TABLE_MAIN, Dst: pfx("::/0"), Gateway: netip.MustParseAddr("fe80::1"), OIF: idx, Priority: idx,
		Protocol: unix.RTPROT_STATIC, Scope: unix.RT_SCOPE_UNIVERSE, Type: unix.RTN_UNICAST,
	}
	// A gateway that is not on the link: the kernel refuses the route
	// (ENETUNREACH).
	unreachable := Route{
		Table: unix.RT_TABLE_MAIN, Dst: pfx("198.51.100.0/24"), Gateway: netip.MustParseAddr("192.0.2.1"), OIF: idx,
		Protocol: unix.RTPROT_STATIC, Scope: unix.RT_SCOPE_UNIVERSE, Type: unix.RTN_UNICAST,
	}
	act := func(k ActionKind, p netip.Prefix, r Route) Action {
		return Action{Kind: k, Index: idx, Prefix: p, Route: r}
	}
	type outcome struct {
		Changed bool
		Errno   unix.Errno // 0: no error
	}
	for _, step := range []struct {
		name string
		acts []Action
		want []outcome
	}{
		{
			name: "a refusal in the middle",
			acts: []Action{act(LinkUp, netip.Prefix{}, Route{}), act(AddAddr, addr4, Route{}),
				act(AddRoute, netip.Prefix{}, unreachable), act(AddAddr, addr6, Route{}), act(AddRoute, netip.Prefix{}, def6)},
			want: []outcome{{Changed: true}, {Changed: true}, {Errno: unix.ENETUNREACH}, {Changed: true}, {Changed: true}},
		},
		{
			name: "all there already",
			acts: []Action{act(AddAddr, addr4, Route{}), act(AddAddr, addr6, Route{}), act(AddRoute, netip.Prefix{}, def6)},
			want: []outcome{{}, {}, {}},
		},
		{
			name: "a refusal last",
			acts: []Action{act(DelAddr, addr4, Route{}), act(AddRoute, netip.Prefix{}, unreachable)},
			want: []outcome{{Changed: true}, {Errno: unix.ENETUNREACH}},
		},
		{
			name: "a refusal first, and gone already",
			acts: []Action{act(AddRoute, netip.Prefix{}, unreachable), act(DelAddr, addr4, Route{}), act(AddAddr, addr4, Route{})},
			want: []outcome{{Errno: unix.ENETUNREACH}, {}, {Changed: true}},
		},
		{
			name: "no such link",
			acts: []Action{{Kind: LinkUp, Index: 9999}, {Kind: AddAddr, Index: 9999, Prefix: addr4}},
			want: []outcome{{Errno: unix.ENODEV}, {Errno: unix.ENODEV}},
		},
	} {
		changed, errs := ApplyAll(c, step.acts)
		var got []outcome
		for i, err := range errs {
			o := outcome{Changed: changed[i]}
			var ae *ActionError
			switch {
			case err == nil:
			case !errors.As(err, &ae) || ae.Action != step.acts[i] || !errors.As(err, &o.Errno):
				t.Errorf("%s: change %d (%v): error %v is not the kernel's refusal of it", step.name, i, step.acts[i], err)
			}
			got = append(got, o)
		}
		if diff := cmp.Diff(step.want, got); diff != "" {
			t.Errorf("%s: outcomes (-want +got):\n%s", step.name, diff)
		}
	}

	// What the kernel holds: the IPv4 address (deleted, added again),
	// the IPv6 address and default route made after the refusal before
	// them, and not the refused route.
	var addrs []struct {
		AddrInfo []struct {
			Local  string `json:"local"`
			Prefix int    `json:"prefixlen"`
		} `json:"addr_info"`
	}
	if err := json.Unmarshal(ns.IP("-j", "addr", "show", "dev", "t1", "scope", "global"), &addrs); err != nil || len(addrs) != 1 {
		t.Fatalf("ip -j addr show dev t1: %v %v", addrs, err)
	}
	var gotAddrs []string
	for _, a := range addrs[0].AddrInfo {
		gotAddrs = append(gotAddrs, netip.PrefixFrom(netip.MustParseAddr(a.Local), a.Prefix).String())
	}
	slices.Sort(gotAddrs)
	if diff := cmp.Diff([]string{addr4.String(), addr6.String()}, gotAddrs); diff != "" {
		t.Errorf("addresses on t1 (-want +got):\n%s", diff)
	}
	var routes []struct {
		Dst     string `json:"dst"`
		Gateway string `json:"gateway"`
	}
	for _, family := range []string{"-4", "-6"} {
		var rs []struct {
			Dst     string `json:"dst"`
			Gateway string `json:"gateway"`
		}
		if err := json.Unmarshal(ns.IP("-j", family, "route", "show", "proto", "static"), &rs); err != nil {
			t.Fatal(err)
		}
		routes = append(routes, rs...)
	}
	want := []struct {
		Dst     string `json:"dst"`
		Gateway string `json:"gateway"`
	}{{Dst: "default", Gateway: "fe80::1"}}
	if diff := cmp.Diff(want, routes); diff != "" {
		t.Errorf("static routes (-want +got):\n%s", diff)
	}
}
