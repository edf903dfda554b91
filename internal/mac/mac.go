// Package mac is the one place that knows how spectrum encodes a network link
// in a MAC address:
//
//	0A:B3:EC : R0 : A : B
//	 OUI       |    \___/
//	           |      `-- link id: the client's address is 100.64.A.B
//	           |          (and fd9f:2b8:5010:AB::2 in IPv6)
//	           `-- 0x00 = client side of the link, 0x80 = provider side
//
// It parses and builds such addresses and derives the IPv4 and IPv6
// addresses both ends of a link use. It does no I/O and must stay free of heavy imports: it
// is linked into the guest agent, whose binary has a size budget.
package mac

import (
	"errors"
	"net"
	"net/netip"
	"strconv"
)

// OUI is the organisationally unique identifier carried by every inter-guest
// NIC. Its first octet has the locally-administered bit set and the multicast
// bit clear.
var OUI = [3]byte{0x0a, 0xb3, 0xec}

// Side tells which end of a link a NIC is.
type Side uint8

const (
	// Client is the NIC of the VM that receives networking (fourth octet 0x00).
	Client Side = 0x00
	// Provider is the NIC of the VM that provides networking (fourth octet 0x80).
	Provider Side = 0x80
)

func (s Side) String() string {
	switch s {
	case Client:
		return "client"
	case Provider:
		return "provider"
	}
	return "side(" + strconv.Itoa(int(s)) + ")"
}

// LinkID identifies one (client, provider) link on a host: the last two
// octets A:B of both ends' MACs. 0x0000 and 0xFFFF are never assigned: they
// would give the client the network or broadcast address of 100.64.0.0/16.
type LinkID uint16

// MinLinkID and MaxLinkID bound the ids that can be assigned.
const (
	MinLinkID LinkID = 0x0001
	MaxLinkID LinkID = 0xfffe
	// NumLinkIDs is how many distinct link ids exist.
	NumLinkIDs = int(MaxLinkID-MinLinkID) + 1
)

// Errors returned by Classify and Parse. They are wrapped in a *RefusedError
// that names the MAC; compare with errors.Is.
var (
	// ErrForeign means the MAC does not carry the OUI: it is not an
	// inter-guest NIC and must be left alone (not an error for the guest).
	ErrForeign = errors.New("not a 0a:b3:ec inter-guest MAC")
	// ErrReserved means the low seven bits of the fourth octet are not zero.
	ErrReserved = errors.New("reserved bits of the fourth octet are set")
	// ErrLinkID means the link id is 00:00 or ff:ff.
	ErrLinkID = errors.New("link id 00:00 and ff:ff are never assigned")
	// ErrSyntax means a string is not a 6-octet MAC.
	ErrSyntax = errors.New("not a 6-octet MAC address")
)

// RefusedError says why a MAC was refused. It unwraps to one of the Err
// values above.
type RefusedError struct {
	MAC string // as given, formatted lower-case when it parsed
	Err error
}

func (e *RefusedError) Error() string { return e.MAC + ": " + e.Err.Error() }

// Unwrap returns the reason.
func (e *RefusedError) Unwrap() error { return e.Err }

// NIC is what a MAC says about an inter-guest NIC.
type NIC struct {
	Side Side
	Link LinkID
}

// Valid reports why id cannot be assigned, or nil.
func (id LinkID) Valid() error {
	if id < MinLinkID || id > MaxLinkID {
		return ErrLinkID
	}
	return nil
}

// String formats the id as the two octets it occupies in a MAC, "a5:46".
func (id LinkID) String() string {
	const hex = "0123456789abcdef"
	b := [5]byte{hex[id>>12], hex[id>>8&0xf], ':', hex[id>>4&0xf], hex[id&0xf]}
	return string(b[:])
}

// ParseLinkID parses the form String produces ("a5:46", any case).
func ParseLinkID(s string) (LinkID, error) {
	if len(s) != 5 || s[2] != ':' {
		return 0, errors.New("link id " + strconv.Quote(s) + ": want two hex octets like a5:46")
	}
	a, ok1 := hexOctet(s[0], s[1])
	b, ok2 := hexOctet(s[3], s[4])
	if !ok1 || !ok2 {
		return 0, errors.New("link id " + strconv.Quote(s) + ": want two hex octets like a5:46")
	}
	return LinkID(uint16(a)<<8 | uint16(b)), nil
}

// ClientAddr is the client's address on the link, 100.64.A.B.
func (id LinkID) ClientAddr() netip.Addr {
	return netip.AddrFrom4([4]byte{100, 64, byte(id >> 8), byte(id)})
}

// ClientPrefix is the client's address with the /16 it is configured with.
func (id LinkID) ClientPrefix() netip.Prefix {
	return netip.PrefixFrom(id.ClientAddr(), 16)
}

// Gateway is the provider's address on the link, 169.254.A.B: the client's
// default gateway. It is derived per link (not one fixed address) so that a
// VM that is both client and provider never holds its own gateway as a local
// address.
func (id LinkID) Gateway() netip.Addr {
	return netip.AddrFrom4([4]byte{169, 254, byte(id >> 8), byte(id)})
}

// ULA is the IPv6 prefix of every link on every host: a unique local
// address prefix (RFC 4193, its 40-bit global ID drawn at random once for
// the project). Each link is the /64 whose subnet ID is the link id
// (LinkPrefix); subnet 0, which no link has, holds the virtual resolver.
// It is one fixed prefix, not a host's own, so that a client image works
// behind any provider on any host, as 100.64.0.0/16 does in IPv4.
var ULA = netip.MustParsePrefix("fd9f:2b8:5010::/48")

// Resolver6 is the IPv6 virtual DNS resolver, fd9f:2b8:5010::53, beside
// IPv4's 100.127.255.53: in ULA's subnet 0, which no link has, so no
// client has it on-link and each sends it through its default route to
// its provider, whose router answers it (guest/router.Resolver6).
var Resolver6 = netip.MustParseAddr("fd9f:2b8:5010::53")

// LinkLocalGateway is the provider's address on every link, fe80::1, the
// client's IPv6 default gateway. A link-local address is scoped to its
// link, so one address serves every link: a VM that is a client and a
// provider at once holds it on its provider NICs and still routes via it
// on its client NIC (the kernel looks for a link-local gateway among the
// addresses of the route's own NIC only).
var LinkLocalGateway = netip.MustParseAddr("fe80::1")

// LinkPrefix is the link's IPv6 /64: ULA with the link id as its subnet
// ID, fd9f:2b8:5010:AB::/64.
func (id LinkID) LinkPrefix() netip.Prefix {
	b := ULA.Addr().As16()
	b[6], b[7] = byte(id>>8), byte(id)
	return netip.PrefixFrom(netip.AddrFrom16(b), 64)
}

// ClientAddr6 is the client's IPv6 address on the link, ::2 of the link's
// /64.
func (id LinkID) ClientAddr6() netip.Addr { return id.linkAddr(2) }

// ProviderAddr6 is the provider's routable IPv6 address on the link, ::1
// of the link's /64 (its source for ICMPv6 errors to the client); the
// client routes via LinkLocalGateway.
func (id LinkID) ProviderAddr6() netip.Addr { return id.linkAddr(1) }

func (id LinkID) linkAddr(host byte) netip.Addr {
	b := id.LinkPrefix().Addr().As16()
	b[15] = host
	return netip.AddrFrom16(b)
}

// MAC builds the MAC of the given side of link id.
func (id LinkID) MAC(side Side) net.HardwareAddr {
	return net.HardwareAddr{OUI[0], OUI[1], OUI[2], byte(side), byte(id >> 8), byte(id)}
}

// Classify tells whether hw is an inter-guest NIC and which one. It returns
// an error wrapping ErrForeign for a MAC without the OUI (including one that
// is not 6 octets long), and ErrReserved or ErrLinkID for a MAC that carries
// the OUI but must not be configured.
func Classify(hw net.HardwareAddr) (NIC, error) {
	if len(hw) != 6 || hw[0] != OUI[0] || hw[1] != OUI[1] || hw[2] != OUI[2] {
		return NIC{}, &RefusedError{MAC: hw.String(), Err: ErrForeign}
	}
	if hw[3]&0x7f != 0 {
		return NIC{}, &RefusedError{MAC: hw.String(), Err: ErrReserved}
	}
	n := NIC{Side: Side(hw[3] & 0x80), Link: LinkID(uint16(hw[4])<<8 | uint16(hw[5]))}
	if err := n.Link.Valid(); err != nil {
		return NIC{}, &RefusedError{MAC: hw.String(), Err: err}
	}
	return n, nil
}

// Parse reads a MAC written as six hex octets separated by ':' or '-'
// ("0A:B3:EC:00:A5:46", any case). Unlike net.ParseMAC it accepts only
// 6-octet addresses.
func Parse(s string) (net.HardwareAddr, error) {
	if len(s) != 17 {
		return nil, &RefusedError{MAC: s, Err: ErrSyntax}
	}
	sep := s[2]
	if sep != ':' && sep != '-' {
		return nil, &RefusedError{MAC: s, Err: ErrSyntax}
	}
	hw := make(net.HardwareAddr, 6)
	for i := range hw {
		o := i * 3
		if i < 5 && s[o+2] != sep {
			return nil, &RefusedError{MAC: s, Err: ErrSyntax}
		}
		b, ok := hexOctet(s[o], s[o+1])
		if !ok {
			return nil, &RefusedError{MAC: s, Err: ErrSyntax}
		}
		hw[i] = b
	}
	return hw, nil
}

func hexOctet(hi, lo byte) (byte, bool) {
	h, ok1 := hexDigit(hi)
	l, ok2 := hexDigit(lo)
	return h<<4 | l, ok1 && ok2
}

func hexDigit(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}
