package mac

import (
	"errors"
	"net"
	"net/netip"
	"testing"
)

func TestClassify(t *testing.T) {
	for _, tt := range []struct {
		name    string
		mac     string
		want    NIC
		wantErr error
		addr    string
		gw      string
	}{
		{name: "documented example", mac: "0A:B3:EC:00:A5:46", want: NIC{Client, 0xa546}, addr: "100.64.165.70", gw: "169.254.165.70"},
		{name: "provider side", mac: "0a:b3:ec:80:a5:46", want: NIC{Provider, 0xa546}, addr: "100.64.165.70", gw: "169.254.165.70"},
		{name: "lowest id", mac: "0a:b3:ec:00:00:01", want: NIC{Client, 1}, addr: "100.64.0.1", gw: "169.254.0.1"},
		{name: "highest id", mac: "0a:b3:ec:80:ff:fe", want: NIC{Provider, 0xfffe}, addr: "100.64.255.254", gw: "169.254.255.254"},
		{name: "dashes", mac: "0a-b3-ec-00-01-02", want: NIC{Client, 0x0102}, addr: "100.64.1.2", gw: "169.254.1.2"},
		{name: "network address", mac: "0a:b3:ec:00:00:00", wantErr: ErrLinkID},
		{name: "broadcast address", mac: "0a:b3:ec:80:ff:ff", wantErr: ErrLinkID},
		{name: "reserved bit", mac: "0a:b3:ec:01:a5:46", wantErr: ErrReserved},
		{name: "reserved bits with provider", mac: "0a:b3:ec:ff:a5:46", wantErr: ErrReserved},
		{name: "other OUI", mac: "52:54:00:12:34:56", wantErr: ErrForeign},
		{name: "near OUI", mac: "0a:b3:ed:00:a5:46", wantErr: ErrForeign},
	} {
		t.Run(tt.name, func(t *testing.T) {
			hw, err := Parse(tt.mac)
			if err != nil {
				t.Fatalf("Parse(%q): %v", tt.mac, err)
			}
			got, err := Classify(hw)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Classify(%s) error = %v, want %v", tt.mac, err, tt.wantErr)
			}
			if err != nil {
				var re *RefusedError
				if !errors.As(err, &re) || re.MAC != hw.String() {
					t.Errorf("error %v does not name the MAC %s", err, hw)
				}
				return
			}
			if got != tt.want {
				t.Errorf("Classify(%s) = %+v, want %+v", tt.mac, got, tt.want)
			}
			if a := got.Link.ClientAddr(); a != netip.MustParseAddr(tt.addr) {
				t.Errorf("ClientAddr = %v, want %v", a, tt.addr)
			}
			if a := got.Link.Gateway(); a != netip.MustParseAddr(tt.gw) {
				t.Errorf("Gateway = %v, want %v", a, tt.gw)
			}
			if p := got.Link.ClientPrefix(); p.String() != tt.addr+"/16" {
				t.Errorf("ClientPrefix = %v", p)
			}
			if back := got.Link.MAC(got.Side); back.String() != hw.String() {
				t.Errorf("MAC(%v) = %v, want %v", got.Side, back, hw)
			}
		})
	}
}

func TestClassifyShort(t *testing.T) {
	for _, hw := range []net.HardwareAddr{nil, {0x0a, 0xb3, 0xec}, {0x0a, 0xb3, 0xec, 0, 1, 2, 3, 4}} {
		if _, err := Classify(hw); !errors.Is(err, ErrForeign) {
			t.Errorf("Classify(%v) = %v, want ErrForeign", hw, err)
		}
	}
}

func TestParseRejects(t *testing.T) {
	for _, s := range []string{"", "0a:b3:ec:00:a5", "0a:b3:ec:00:a5:4g", "0a:b3-ec:00:a5:46", "0a.b3.ec.00.a5.46", "0a:b3:ec:00:a5:46:00:00", "0ab3ec00a546"} {
		if _, err := Parse(s); !errors.Is(err, ErrSyntax) {
			t.Errorf("Parse(%q) = %v, want ErrSyntax", s, err)
		}
	}
}

func TestLinkIDString(t *testing.T) {
	for _, tt := range []struct {
		id   LinkID
		want string
	}{{0xa546, "a5:46"}, {1, "00:01"}, {0xfffe, "ff:fe"}} {
		if got := tt.id.String(); got != tt.want {
			t.Errorf("%d.String() = %q, want %q", tt.id, got, tt.want)
		}
		back, err := ParseLinkID(tt.want)
		if err != nil || back != tt.id {
			t.Errorf("ParseLinkID(%q) = %v, %v", tt.want, back, err)
		}
	}
	for _, s := range []string{"", "a5-46", "a546", "g5:46", "a5:46:"} {
		if _, err := ParseLinkID(s); err == nil {
			t.Errorf("ParseLinkID(%q) succeeded", s)
		}
	}
}

func TestSides(t *testing.T) {
	if Client.String() != "client" || Provider.String() != "provider" || Side(1).String() != "side(1)" {
		t.Errorf("Side strings: %v %v %v", Client, Provider, Side(1))
	}
	if NumLinkIDs != 65534 {
		t.Errorf("NumLinkIDs = %d", NumLinkIDs)
	}
}

// FuzzParseClassify checks that parsing never panics, that what parses
// formats back to the same octets, and that every MAC Classify accepts is
// rebuilt exactly by LinkID.MAC and derives addresses inside the link nets,
// and that no MAC CheckUplink accepts is one Classify takes for a link NIC.
func FuzzParseClassify(f *testing.F) {
	for _, s := range []string{"0A:B3:EC:00:A5:46", "0a:b3:ec:80:ff:ff", "0a-b3-ec-00-00-00", "52:54:00:12:34:56", "", "zz:zz:zz:zz:zz:zz"} {
		f.Add(s)
	}
	client := netip.MustParsePrefix("100.64.0.0/16")
	gw := netip.MustParsePrefix("169.254.0.0/16")
	f.Fuzz(func(t *testing.T, s string) {
		hw, err := Parse(s)
		if err != nil {
			if !errors.Is(err, ErrSyntax) {
				t.Fatalf("Parse(%q) error %v is not ErrSyntax", s, err)
			}
			return
		}
		again, err := Parse(hw.String())
		if err != nil || again.String() != hw.String() {
			t.Fatalf("round trip %q -> %v -> %v, %v", s, hw, again, err)
		}
		n, err := Classify(hw)
		// An uplink MAC is never one the agent would configure.
		if CheckUplink(hw) == nil && !errors.Is(err, ErrForeign) {
			t.Fatalf("CheckUplink accepts %v, which Classify takes for a link NIC (%v)", hw, err)
		}
		if err != nil {
			if !errors.Is(err, ErrForeign) && !errors.Is(err, ErrReserved) && !errors.Is(err, ErrLinkID) {
				t.Fatalf("Classify(%v) unexpected error %v", hw, err)
			}
			return
		}
		if n.Link.MAC(n.Side).String() != hw.String() {
			t.Fatalf("MAC rebuilt as %v, want %v", n.Link.MAC(n.Side), hw)
		}
		a := n.Link.ClientAddr()
		if !client.Contains(a) || a == client.Addr() || a == netip.MustParseAddr("100.64.255.255") {
			t.Fatalf("client address %v of %v is not a host address in %v", a, hw, client)
		}
		if !gw.Contains(n.Link.Gateway()) {
			t.Fatalf("gateway %v outside %v", n.Link.Gateway(), gw)
		}
	})
}

// TestIPv6: the reference example's link a5:46 in IPv6, and the
// properties the scheme relies on.
func TestIPv6(t *testing.T) {
	id := LinkID(0xa546)
	for _, tt := range []struct{ got, want string }{
		{id.LinkPrefix().String(), "fd9f:2b8:5010:a546::/64"},
		{id.ClientAddr6().String(), "fd9f:2b8:5010:a546::2"},
		{id.ProviderAddr6().String(), "fd9f:2b8:5010:a546::1"},
		{LinkID(0x0001).LinkPrefix().String(), "fd9f:2b8:5010:1::/64"},
		{LinkLocalGateway.String(), "fe80::1"},
	} {
		if tt.got != tt.want {
			t.Errorf("got %s, want %s", tt.got, tt.want)
		}
	}
	if !ULA.Addr().Is6() || ULA.Bits() != 48 || !netip.MustParsePrefix("fc00::/7").Contains(ULA.Addr()) {
		t.Errorf("ULA %v is not a /48 unique local prefix", ULA)
	}
	// Every link's /64 lies in the ULA and no two links share one; subnet
	// 0 (the virtual resolver's) and ffff are no link's.
	seen := map[netip.Prefix]bool{}
	for id := MinLinkID; ; id++ {
		p := id.LinkPrefix()
		if !ULA.Contains(p.Addr()) || seen[p] || !p.Contains(id.ClientAddr6()) || !p.Contains(id.ProviderAddr6()) {
			t.Fatalf("link %v: prefix %v is outside %v, a duplicate, or lacks its addresses", id, p, ULA)
		}
		seen[p] = true
		if id == MaxLinkID {
			break
		}
	}
	if seen[netip.PrefixFrom(ULA.Addr(), 64)] {
		t.Error("a link has subnet 0")
	}
	if !netip.PrefixFrom(ULA.Addr(), 64).Contains(Resolver6) {
		t.Errorf("the virtual resolver %v is not in subnet 0 of %v", Resolver6, ULA)
	}
}
