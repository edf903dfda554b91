package guest

import (
	"encoding/binary"
	"net"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// linkMessage builds an RTM_NEWLINK body the way the kernel does: ifinfomsg,
// then attributes, with rp_filter inside IFLA_AF_SPEC/AF_INET/IFLA_INET_CONF
// as an array of u32 indexed by devconf id - 1.
func linkMessage(t testing.TB, index, flags uint32, name string, hw []byte, rpFilter int) []byte {
	b := make([]byte, unix.SizeofIfInfomsg)
	binary.NativeEndian.PutUint32(b[4:8], index)
	binary.NativeEndian.PutUint32(b[8:12], flags)
	ae := netlink.NewAttributeEncoder()
	ae.String(unix.IFLA_IFNAME, name)
	if hw != nil {
		ae.Bytes(unix.IFLA_ADDRESS, hw)
	}
	ae.Uint32(unix.IFLA_MTU, 1500)
	if rpFilter >= 0 {
		ae.Nested(unix.IFLA_AF_SPEC, func(ae *netlink.AttributeEncoder) error {
			ae.Nested(unix.AF_INET6, func(ae *netlink.AttributeEncoder) error {
				ae.Bytes(unix.IFLA_INET_CONF, make([]byte, 64)) // an inet6 array: ignored
				return nil
			})
			ae.Nested(unix.AF_INET, func(ae *netlink.AttributeEncoder) error {
				conf := make([]byte, 4*32)
				binary.NativeEndian.PutUint32(conf[(ipv4DevconfRPFilter-1)*4:], uint32(rpFilter))
				binary.NativeEndian.PutUint32(conf[0:], 1) // forwarding: not rp_filter
				ae.Bytes(unix.IFLA_INET_CONF, conf)
				return nil
			})
			return nil
		})
	}
	a, err := ae.Encode()
	if err != nil {
		t.Fatal(err)
	}
	return append(b, a...)
}

// withIPv6Conf appends an IFLA_AF_SPEC with the AF_INET6 devconf array the
// kernel sends, disable_ipv6 set to disable.
func withIPv6Conf(t testing.TB, b []byte, disable uint32) []byte {
	ae := netlink.NewAttributeEncoder()
	ae.Nested(unix.IFLA_AF_SPEC, func(ae *netlink.AttributeEncoder) error {
		ae.Nested(unix.AF_INET6, func(ae *netlink.AttributeEncoder) error {
			ae.Uint32(1, 0x80000000) // IFLA_INET6_FLAGS: IF_READY
			conf := make([]byte, 4*60)
			binary.NativeEndian.PutUint32(conf[devconfDisableIPv6*4:], disable)
			binary.NativeEndian.PutUint32(conf[0:], 1) // forwarding: not disable_ipv6
			ae.Bytes(iflaInet6Conf, conf)
			return nil
		})
		return nil
	})
	a, err := ae.Encode()
	if err != nil {
		t.Fatal(err)
	}
	return append(b, a...)
}

func TestParseLink(t *testing.T) {
	hw := net.HardwareAddr{0x0a, 0xb3, 0xec, 0x80, 0xa5, 0x46}
	for _, tt := range []struct {
		name    string
		b       []byte
		want    Link
		wantErr bool
	}{
		{
			name: "provider up, strict",
			b:    linkMessage(t, 7, unix.IFF_UP|unix.IFF_BROADCAST, "eth1", hw, 1),
			want: Link{Index: 7, Name: "eth1", MAC: hw, Up: true, RPFilter: 1, IPv6: IPv6On},
		},
		{
			name: "down, loose",
			b:    linkMessage(t, 2, unix.IFF_BROADCAST, "eth0", hw, 2),
			want: Link{Index: 2, Name: "eth0", MAC: hw, RPFilter: 2, IPv6: IPv6On},
		},
		{
			name: "no IPv4 configuration reported, no address",
			b:    linkMessage(t, 9, 0, "wg0", nil, -1),
			want: Link{Index: 9, Name: "wg0", RPFilter: -1},
		},
		{
			name: "disable_ipv6",
			b:    withIPv6Conf(t, linkMessage(t, 3, 0, "eth2", hw, -1), 1),
			want: Link{Index: 3, Name: "eth2", MAC: hw, RPFilter: -1, IPv6: IPv6Disabled},
		},
		{
			name: "IPv6 conf, enabled",
			b:    withIPv6Conf(t, linkMessage(t, 3, 0, "eth2", hw, -1), 0),
			want: Link{Index: 3, Name: "eth2", MAC: hw, RPFilter: -1, IPv6: IPv6On},
		},
		{name: "short", b: make([]byte, 15), wantErr: true},
		{name: "truncated attribute", b: append(linkMessage(t, 1, 0, "x", hw, 0), 8, 0), wantErr: true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseLink(tt.b)
			if (err != nil) != tt.wantErr {
				t.Fatalf("ParseLink error = %v, want error %v", err, tt.wantErr)
			}
			if err != nil {
				return
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("ParseLink mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestRPFilterMessage(t *testing.T) {
	b, err := rpFilterMessage{index: 5, value: 1}.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	if got := binary.NativeEndian.Uint32(b[4:8]); got != 5 {
		t.Errorf("ifindex = %d, want 5", got)
	}
	// IFLA_AF_SPEC { AF_INET { IFLA_INET_CONF { IPV4_DEVCONF_RP_FILTER: u32 1 } } }
	var got []uint32
	ad, err := netlink.NewAttributeDecoder(b[unix.SizeofIfInfomsg:])
	if err != nil {
		t.Fatal(err)
	}
	for ad.Next() {
		if ad.Type() != unix.IFLA_AF_SPEC {
			t.Errorf("unexpected attribute %d", ad.Type())
			continue
		}
		ad.Nested(func(ad *netlink.AttributeDecoder) error {
			for ad.Next() {
				if ad.Type() != unix.AF_INET {
					t.Errorf("AF_SPEC holds family %d, want AF_INET", ad.Type())
				}
				ad.Nested(func(ad *netlink.AttributeDecoder) error {
					for ad.Next() {
						if ad.Type() != unix.IFLA_INET_CONF {
							t.Errorf("AF_INET holds %d, want IFLA_INET_CONF", ad.Type())
						}
						ad.Nested(func(ad *netlink.AttributeDecoder) error {
							for ad.Next() {
								if ad.Type() == ipv4DevconfRPFilter {
									got = append(got, ad.Uint32())
								}
							}
							return nil
						})
					}
					return nil
				})
			}
			return nil
		})
	}
	if err := ad.Err(); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]uint32{1}, got); diff != "" {
		t.Errorf("rp_filter values (-want +got):\n%s", diff)
	}
}

// FuzzParseLink feeds arbitrary link messages to the hand-written decoder:
// it must never panic, and what it accepts must be self-consistent.
func FuzzParseLink(f *testing.F) {
	hw := []byte{0x0a, 0xb3, 0xec, 0x00, 0xa5, 0x46}
	f.Add(linkMessage(f, 2, unix.IFF_UP, "eth0", hw, 1))
	f.Add(linkMessage(f, 3, 0, "eth1", nil, -1))
	f.Add(linkMessage(f, 4, 0, "", []byte{1, 2, 3, 4}, 0))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		l, err := ParseLink(b)
		if err != nil {
			return
		}
		if len(b) < unix.SizeofIfInfomsg {
			t.Fatalf("accepted a %d-byte message", len(b))
		}
		if l.Index != binary.NativeEndian.Uint32(b[4:8]) {
			t.Fatalf("index %d, header says %d", l.Index, binary.NativeEndian.Uint32(b[4:8]))
		}
		_, _ = l.MAC.String(), l.Name
	})
}

// netconfMessage builds an RTM_NEWNETCONF body as the kernel does.
func netconfMessage(t testing.TB, rpFilter int) []byte {
	ae := netlink.NewAttributeEncoder()
	ae.Int32(netconfaIfindex, netconfIfindexAll)
	ae.Uint32(2, 0) // NETCONFA_FORWARDING
	if rpFilter >= 0 {
		ae.Uint32(netconfaRPFilter, uint32(rpFilter))
	}
	a, err := ae.Encode()
	if err != nil {
		t.Fatal(err)
	}
	return append([]byte{unix.AF_INET, 0, 0, 0}, a...)
}

func TestParseNetconfRPFilter(t *testing.T) {
	for _, tt := range []struct {
		name    string
		b       []byte
		want    int
		wantErr bool
	}{
		{name: "loose", b: netconfMessage(t, 2), want: 2},
		{name: "off", b: netconfMessage(t, 0), want: 0},
		{name: "not reported", b: netconfMessage(t, -1), want: -1},
		{name: "short", b: []byte{2, 0}, want: -1, wantErr: true},
		{name: "truncated attribute", b: append(netconfMessage(t, 1), 8, 0, 3), want: -1, wantErr: true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseNetconfRPFilter(tt.b)
			if (err != nil) != tt.wantErr || got != tt.want {
				t.Errorf("ParseNetconfRPFilter = %d, %v; want %d, error %v", got, err, tt.want, tt.wantErr)
			}
		})
	}
}

// FuzzParseNetconf: the netconf decoder never panics and reports -1 with
// any error.
func FuzzParseNetconf(f *testing.F) {
	f.Add(netconfMessage(f, 1))
	f.Add(netconfMessage(f, -1))
	f.Add([]byte{2})
	f.Fuzz(func(t *testing.T, b []byte) {
		v, err := ParseNetconfRPFilter(b)
		if err != nil && v != -1 {
			t.Fatalf("error %v with value %d", err, v)
		}
	})
}
