package dhcpc

import (
	"net/netip"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// ra builds a router advertisement: flags, router lifetime, options.
func ra(flags byte, lifetime uint16, opts ...[]byte) []byte {
	b := []byte{134, 0, 0, 0, 64, flags, byte(lifetime >> 8), byte(lifetime), 0, 0, 0, 0, 0, 0, 0, 0}
	for _, o := range opts {
		b = append(b, o...)
	}
	return b
}

func prefixOpt(bits, flags byte, valid uint32, p string) []byte {
	a := netip.MustParseAddr(p).As16()
	o := []byte{3, 4, bits, flags, byte(valid >> 24), byte(valid >> 16), byte(valid >> 8), byte(valid), 0, 0, 0, 60, 0, 0, 0, 0}
	return append(o, a[:]...)
}

func rdnss(lifetime uint32, addrs ...string) []byte {
	o := []byte{25, byte(1 + 2*len(addrs)), 0, 0, byte(lifetime >> 24), byte(lifetime >> 16), byte(lifetime >> 8), byte(lifetime)}
	for _, s := range addrs {
		a := netip.MustParseAddr(s).As16()
		o = append(o, a[:]...)
	}
	return o
}

func TestParseRA(t *testing.T) {
	mtu := []byte{5, 1, 0, 0, 0, 0, 0x05, 0x00}
	for _, tc := range []struct {
		name    string
		b       []byte
		want    RA
		wantErr bool
	}{
		{name: "dnsmasq's stateless", b: ra(0x40, 600, prefixOpt(64, 0xc0, 120, "2001:db8:1::"), mtu, rdnss(1200, "2001:db8:1::53")),
			want: RA{Other: true, Lifetime: 600 * time.Second, MTU: 1280,
				Prefixes: []Prefix{{Prefix: netip.MustParsePrefix("2001:db8:1::/64"), OnLink: true, Autonomous: true, Valid: 120 * time.Second}},
				DNS:      []netip.Addr{netip.MustParseAddr("2001:db8:1::53")}}},
		{name: "stateful, not a default router", b: ra(0xc0, 0, prefixOpt(64, 0x80, 120, "2001:db8:1::")),
			want: RA{Managed: true, Other: true,
				Prefixes: []Prefix{{Prefix: netip.MustParsePrefix("2001:db8:1::/64"), OnLink: true, Valid: 120 * time.Second}}}},
		{name: "unknown option skipped", b: ra(0, 10, []byte{99, 1, 0, 0, 0, 0, 0, 0}), want: RA{Lifetime: 10 * time.Second}},
		{name: "RDNSS withdrawn", b: ra(0, 10, rdnss(0, "2001:db8:1::53")), want: RA{Lifetime: 10 * time.Second}},
		{name: "RDNSS of no use dropped, at most three kept",
			b:    ra(0, 10, rdnss(60, "::", "ff02::1", "::1", "::ffff:192.0.2.1", "2001:db8::1", "2001:db8::2", "fe80::1", "2001:db8::3")),
			want: RA{Lifetime: 10 * time.Second, DNS: []netip.Addr{netip.MustParseAddr("2001:db8::1"), netip.MustParseAddr("2001:db8::2"), netip.MustParseAddr("fe80::1")}}},
		{name: "short", b: ra(0, 10)[:15], wantErr: true},
		{name: "not an RA", b: append([]byte{133}, ra(0, 10)[1:]...), wantErr: true},
		{name: "option of length 0", b: ra(0, 10, []byte{3, 0, 0, 0, 0, 0, 0, 0}), wantErr: true},
		{name: "option past the end", b: ra(0, 10, []byte{25, 3, 0, 0, 0, 0, 0, 60}), wantErr: true},
		{name: "prefix of the wrong size", b: ra(0, 10, prefixOpt(64, 0xc0, 1, "2001:db8::")[:24]), wantErr: true},
		{name: "prefix length over 128", b: ra(0, 10, prefixOpt(129, 0xc0, 1, "2001:db8::")), wantErr: true},
		{name: "RDNSS without an address", b: ra(0, 10, []byte{25, 1, 0, 0, 0, 0, 0, 60}), wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseRA(tc.b)
			if (err != nil) != tc.wantErr {
				t.Fatalf("ParseRA: %+v, %v; want error %v", got, err, tc.wantErr)
			}
			if diff := cmp.Diff(tc.want, got, cmp.Comparer(func(a, b netip.Addr) bool { return a == b }),
				cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

// FuzzParseRA feeds the router advertisement parser what any neighbour on
// the uplink can send: it must never panic, and what it accepts keeps its
// bounds (prefixes of at most 128 bits, at most three resolvers, none of
// them unusable).
func FuzzParseRA(f *testing.F) {
	f.Add(ra(0x40, 600, prefixOpt(64, 0xc0, 120, "2001:db8:1::"), rdnss(1200, "2001:db8:1::53")))
	f.Add(ra(0xc0, 0, []byte{5, 1, 0, 0, 0, 0, 5, 0}))
	f.Add(ra(0, 10, []byte{25, 3, 0, 0, 0, 0, 0, 60}))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := ParseRA(b)
		if err != nil {
			return
		}
		if len(b) < 16 || b[0] != 134 {
			t.Fatalf("accepted % x", b)
		}
		if len(r.DNS) > maxRADNS {
			t.Fatalf("%d resolvers", len(r.DNS))
		}
		for _, d := range r.DNS {
			if !d.Is6() || d.IsUnspecified() || d.IsMulticast() || d.IsLoopback() || d.Is4In6() {
				t.Fatalf("resolver %v kept", d)
			}
		}
		for _, p := range r.Prefixes {
			if !p.Prefix.IsValid() || p.Prefix.Bits() > 128 {
				t.Fatalf("prefix %v", p.Prefix)
			}
		}
	})
}
