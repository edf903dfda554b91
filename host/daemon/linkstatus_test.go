package daemon

import (
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"

	"spectrum-os.org/netcfg/guest"
	"spectrum-os.org/netcfg/host/control"
	"spectrum-os.org/netcfg/internal/mac"
)

// TestLinkStatusAddrs: each end of a link shows the addresses of the MAC
// scheme in both families, docs/DESIGN.md's example link a5:46 written
// out by hand (not by the functions the code calls).
func TestLinkStatusAddrs(t *testing.T) {
	id := mac.LinkID(0xa546)
	for _, tc := range []struct {
		name string
		side mac.Side
		want control.LinkStatus
	}{
		{"client", mac.Client, control.LinkStatus{Peer: "netvm", Role: "client", ID: "a5:46", MAC: "0a:b3:ec:00:a5:46",
			Addrs:    []string{"100.64.165.70/16", "fd9f:2b8:5010:a546::2/64"},
			Gateways: []string{"169.254.165.70", "fe80::1"}}},
		{"provider", mac.Provider, control.LinkStatus{Peer: "netvm", Role: "provider", ID: "a5:46", MAC: "0a:b3:ec:80:a5:46",
			Addrs: []string{"169.254.165.70/32", "fd9f:2b8:5010:a546::1/64", "fe80::1/64"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := linkStatus("netvm", tc.side, id)
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
			// The IPv4 address is the one the guest's agent derives.
			w := guest.Want(mac.NIC{Side: tc.side, Link: id}, 2)
			if got.Addrs[0] != w.Addr.String() {
				t.Errorf("status shows %s, the agent configures %v", got.Addrs[0], w.Addr)
			}
			for _, a := range got.Addrs[1:] {
				if p := netip.MustParsePrefix(a); !p.Addr().Is6() || (!mac.ULA.Contains(p.Addr()) && p.Addr() != mac.LinkLocalGateway) {
					t.Errorf("%s is not the link's IPv6", a)
				}
			}
		})
	}
}
