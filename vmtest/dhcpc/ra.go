package dhcpc

import (
	"encoding/binary"
	"errors"
	"net/netip"
	"time"
)

// RA is what a router advertisement (RFC 4861 4.2) says that the client
// uses: the flags that ask for DHCPv6, whether the sender is a default
// router, the prefixes, the link MTU and the resolvers (RDNSS, RFC 8106).
// The kernel applies the prefixes, the default route and the MTU itself
// (accept_ra); the client reads them to log and to wait for the address.
type RA struct {
	Managed  bool          // M: addresses by DHCPv6
	Other    bool          // O: other configuration (the resolvers) by DHCPv6
	Lifetime time.Duration // as a default router; 0: not one
	Prefixes []Prefix
	MTU      uint32 // 0: none given
	DNS      []netip.Addr
}

// Prefix is one prefix information option.
type Prefix struct {
	Prefix     netip.Prefix
	OnLink     bool // L
	Autonomous bool // A: SLAAC
	Valid      time.Duration
}

// Option types of a router advertisement.
const (
	optPrefixInfo = 3
	optMTU        = 5
	optRDNSS      = 25
)

const icmpRouterAdvertisement = 134

// maxRADNS bounds the resolvers kept from one advertisement: glibc uses
// three (MAXNS) of resolv.conf in all.
const maxRADNS = 3

// ParseRA reads a router advertisement from b, the ICMPv6 message (its
// type first). Options it does not use are skipped; a malformed option
// (length 0, past the end) refuses the whole message, as RFC 4861 says.
// An RDNSS address that is not unicast is dropped, as is one whose
// lifetime is 0 (the router withdrawing it).
func ParseRA(b []byte) (RA, error) {
	if len(b) < 16 {
		return RA{}, errors.New("router advertisement shorter than 16 bytes")
	}
	if b[0] != icmpRouterAdvertisement || b[1] != 0 {
		return RA{}, errors.New("not a router advertisement")
	}
	ra := RA{Managed: b[5]&0x80 != 0, Other: b[5]&0x40 != 0,
		Lifetime: time.Duration(binary.BigEndian.Uint16(b[6:])) * time.Second}
	for opts := b[16:]; len(opts) > 0; {
		if len(opts) < 2 || opts[1] == 0 || len(opts) < int(opts[1])*8 {
			return RA{}, errors.New("router advertisement with a malformed option")
		}
		o := opts[:int(opts[1])*8]
		opts = opts[len(o):]
		switch o[0] {
		case optPrefixInfo:
			if len(o) != 32 || o[2] > 128 {
				return RA{}, errors.New("router advertisement with a malformed prefix")
			}
			p, err := netip.AddrFrom16([16]byte(o[16:32])).Prefix(int(o[2]))
			if err != nil {
				return RA{}, err
			}
			ra.Prefixes = append(ra.Prefixes, Prefix{Prefix: p, OnLink: o[3]&0x80 != 0, Autonomous: o[3]&0x40 != 0,
				Valid: time.Duration(binary.BigEndian.Uint32(o[4:])) * time.Second})
		case optMTU:
			if len(o) != 8 {
				return RA{}, errors.New("router advertisement with a malformed MTU")
			}
			ra.MTU = binary.BigEndian.Uint32(o[4:])
		case optRDNSS:
			if len(o) < 24 || (len(o)-8)%16 != 0 {
				return RA{}, errors.New("router advertisement with a malformed RDNSS")
			}
			if binary.BigEndian.Uint32(o[4:]) == 0 {
				continue
			}
			for a := o[8:]; len(a) >= 16; a = a[16:] {
				addr := netip.AddrFrom16([16]byte(a[:16]))
				if addr.IsUnspecified() || addr.IsMulticast() || addr.IsLoopback() || addr.Is4In6() || len(ra.DNS) >= maxRADNS {
					continue
				}
				ra.DNS = append(ra.DNS, addr)
			}
		}
	}
	return ra, nil
}
