package router

import (
	"bytes"
	"net/netip"
	"testing"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// ctEntry builds a ctnetlink entry as the kernel dumps it: the original
// and reply tuples (addresses and ports), a status, and a zone if zone is
// not nil. It returns the entry and the key a delete request needs.
func ctEntry(t testing.TB, family byte, src, dst string, zone []byte) (entry, key []byte) {
	t.Helper()
	tuple := func(s, d string) []byte {
		ae := netlink.NewAttributeEncoder()
		ae.Nested(ctaTupleIP, func(ae *netlink.AttributeEncoder) error {
			sa, da := netip.MustParseAddr(s), netip.MustParseAddr(d)
			typ := uint16(ctaIPv4Src)
			if sa.Is6() {
				typ = ctaIPv6Src
			}
			ae.Bytes(typ, sa.AsSlice())
			ae.Bytes(typ+1, da.AsSlice())
			return nil
		})
		ae.Nested(2 /* CTA_TUPLE_PROTO */, func(ae *netlink.AttributeEncoder) error {
			ae.Uint8(1 /* CTA_PROTO_NUM */, unix.IPPROTO_UDP)
			ae.Uint16(2 /* CTA_PROTO_SRC_PORT */, 1234)
			ae.Uint16(3 /* CTA_PROTO_DST_PORT */, 53)
			return nil
		})
		b, err := ae.Encode()
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	ae := netlink.NewAttributeEncoder()
	ae.Bytes(unix.NLA_F_NESTED|ctaTupleOrig, tuple(src, dst))
	ae.Bytes(unix.NLA_F_NESTED|2 /* CTA_TUPLE_REPLY */, tuple(dst, src))
	ae.Uint32(3 /* CTA_STATUS */, 8)
	if zone != nil {
		ae.Bytes(ctaZone, zone)
	}
	attrs, err := ae.Encode()
	if err != nil {
		t.Fatal(err)
	}
	// The key is the first attribute and, with a zone, the last.
	ko := netlink.NewAttributeEncoder()
	ko.Bytes(unix.NLA_F_NESTED|ctaTupleOrig, tuple(src, dst))
	if zone != nil {
		ko.Bytes(ctaZone, zone)
	}
	key, err = ko.Encode()
	if err != nil {
		t.Fatal(err)
	}
	return append([]byte{family, 0, 0, 0}, attrs...), key
}

func TestParseConntrack(t *testing.T) {
	for _, tt := range []struct {
		name     string
		family   byte
		src, dst string
		zone     []byte
		ok       bool
	}{
		{"IPv4", unix.AF_INET, "100.64.18.52", "192.0.2.10", nil, true},
		{"IPv4 in a zone", unix.AF_INET, "100.64.18.52", "192.0.2.10", []byte{0, 7}, true},
		{"IPv6", unix.AF_INET6, "fd9f:2b8:5010:1234::2", "2001:db8::10", nil, true},
		{"IPv6 in a zone", unix.AF_INET6, "fd9f:2b8:5010:1234::2", "2001:db8::10", []byte{0, 7}, true},
		{"IPv4 addresses, IPv6 family", unix.AF_INET6, "100.64.18.52", "192.0.2.10", nil, false},
		{"IPv6 addresses, IPv4 family", unix.AF_INET, "fd9f:2b8:5010:1234::2", "2001:db8::10", nil, false},
		{"another family", unix.AF_BRIDGE, "100.64.18.52", "192.0.2.10", nil, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			entry, wantKey := ctEntry(t, tt.family, tt.src, tt.dst, tt.zone)
			key, src, dst, ok := ParseConntrack(entry)
			if ok != tt.ok {
				t.Fatalf("ok = %v, want %v", ok, tt.ok)
			}
			if !ok {
				return
			}
			if src != netip.MustParseAddr(tt.src) || dst != netip.MustParseAddr(tt.dst) {
				t.Errorf("src, dst = %v, %v, want %s, %s", src, dst, tt.src, tt.dst)
			}
			if !bytes.Equal(key, wantKey) {
				t.Errorf("key = %x, want %x", key, wantKey)
			}
		})
	}
	for _, b := range [][]byte{nil, {unix.AF_INET}, {unix.AF_INET, 0, 0, 0}, {unix.AF_INET, 0, 0, 0, 8, 0, 1, 0}, {unix.AF_INET, 0, 0, 0, 200, 0, 1, 0}} {
		if _, _, _, ok := ParseConntrack(b); ok {
			t.Errorf("ParseConntrack(%x) ok, want not", b)
		}
	}
}

func FuzzParseConntrack(f *testing.F) {
	e, _ := ctEntry(f, unix.AF_INET, "100.64.18.52", "192.0.2.10", []byte{0, 1})
	f.Add(e)
	e, _ = ctEntry(f, unix.AF_INET, "100.64.0.1", "100.127.255.53", nil)
	f.Add(e)
	e, _ = ctEntry(f, unix.AF_INET6, "fd9f:2b8:5010:1234::2", "2001:db8::10", []byte{0, 1})
	f.Add(e)
	f.Fuzz(func(t *testing.T, b []byte) {
		key, src, dst, ok := ParseConntrack(b)
		if !ok {
			return
		}
		if want4 := b[0] == unix.AF_INET; src.Is4() != want4 || dst.Is4() != want4 {
			t.Fatalf("addresses %v, %v of an entry of family %d", src, dst, b[0])
		}
		// The key is made of attributes found in the entry: it must
		// parse as attributes, the original tuple first.
		if p, whole := attr(key, ctaTupleOrig); p == nil || !bytes.HasPrefix(key, whole) {
			t.Fatalf("key %x does not start with the original tuple", key)
		}
		if len(key) > len(b) {
			t.Fatalf("key %d bytes from an entry of %d", len(key), len(b))
		}
	})
}
