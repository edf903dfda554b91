package router

import (
	"net/netip"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"

	"spectrum-os.org/netcfg/internal/mac"
)

// The DNS part of the table (docs/DESIGN.md, "DNS"): the redirect of the
// clients' DNS, to either virtual resolver (A = Resolver, A6 = Resolver6),
// to the forwarder's port P, the guard of that port, and what the input
// chain's to-provider accepts of it. writeTable makes the chains; the
// rules are these:
//
//	chain prerouting {                              # nat, dstnat
//		iif . ip saddr @clients jump client-dns   # a link's own client only
//		iif . ip6 saddr @clients6 jump client-dns
//	}
//	chain client-dns {
//		ip daddr A udp dport 53 redirect to :P
//		ip daddr A tcp dport 53 redirect to :P
//		ip6 daddr A6 udp dport 53 redirect to :P
//		ip6 daddr A6 tcp dport 53 redirect to :P
//	}
//	chain dns-input { type filter hook input priority filter - 10; policy accept;
//		udp dport P ct status ! dnat drop         # P is reached only through the redirect
//		tcp dport P ct status ! dnat drop
//	}
//	chain client-dns-in {                           # to-provider jumps here
//		udp dport P ct status dnat accept
//		tcp dport P ct status dnat accept
//	}
//
// The redirect takes only the link's own client's address, in either
// family. A packet that matches a connection conntrack has already
// redirected is redirected again without the nat chain, whatever NIC it
// came in on, so the guard chain (prerouting, before conntrack) drops any
// source from a provider link but its own client's, in either family (a
// client forging another's IPv6 address and port reached the forwarder as
// the other without it: TestHostileResolver6ForgedSource): the forwarder,
// which counts each client's share by its source address, sees each link's
// own client only. The redirect sends a query to the first address of the
// NIC it came in on (IPv6: the link's ::1, global scope before link-local),
// and the forwarder answers from it, which conntrack turns back into the
// virtual resolver's. The limits table's dns-input (limits.go), right after
// this one, sees every packet to the forwarder, replies of a fixed-port
// client included (to-provider accepts those before client-dns-in), so its
// limit bounds one link's share of the forwarder's socket whatever the
// packets.
type dnsRule struct {
	chain, comment string
	exprs          []expr.Any
}

// dnsLimit is how many packets a second (and at once, after a quiet time)
// each provider link may send to the forwarder, per protocol; the rest are
// dropped before they reach its socket (the limits table's dns-input). The forwarder's own limits
// (dnsfwd.DefaultLimits: 100 queries a second, 64 in flight) are what a
// client normally meets, and answer REFUSED.
const (
	dnsLimitRate  = 200
	dnsLimitBurst = 400
)

// ipsDstNAT is conntrack's IPS_DST_NAT status bit: the connection was
// redirected (or DNATed).
const ipsDstNAT = 1 << 5

// dnsRules is the DNS part's rules for the forwarder on port and the
// table's sets of links and their client addresses (clients, IPv4;
// clients6, IPv6).
func dnsRules(port uint16, clients, clients6 *nftables.Set) []dnsRule {
	var rs []dnsRule
	add := func(chain, comment string, es ...[]expr.Any) {
		var all []expr.Any
		for _, e := range es {
			all = append(all, e...)
		}
		rs = append(rs, dnsRule{chain, comment, all})
	}
	protos := []byte{unix.IPPROTO_UDP, unix.IPPROTO_TCP}
	add(chainPre, "DNS from a client", ipv4(), linkClient(clients, 12, 4), jump(chainClientDNS))
	add(chainPre, "DNS from a client", ipv6(), linkClient(clients6, 8, 16), jump(chainClientDNS))
	for _, fam := range [][]expr.Any{
		append(ipv4(), daddr4Is(resolverAddr)...),
		append(ipv6(), daddr6Is(mac.Resolver6)...),
	} {
		for _, p := range protos {
			add(chainClientDNS, "DNS to the virtual resolver goes to this provider's forwarder",
				fam, l4Dport(p, 53),
				[]expr.Any{
					&expr.Immediate{Register: 1, Data: binaryutil.BigEndian.PutUint16(port)},
					&expr.Redir{RegisterProtoMin: 1},
				})
		}
	}
	for _, p := range protos {
		add(chainDNSGuard, "nothing reaches the forwarder but DNS redirected from a client", l4Dport(p, port), ctDNAT(expr.CmpOpEq), drop())
	}
	for _, p := range protos {
		add(chainClientDNSIn, "DNS to the virtual resolver, redirected to the forwarder", l4Dport(p, port), ctDNAT(expr.CmpOpNeq), accept())
	}
	return rs
}

// linkClient matches the packet's NIC and its source address (n bytes
// at offset off of the network header) in set, of iface_index . address;
// the family's check comes before it.
func linkClient(set *nftables.Set, off, n uint32) []expr.Any {
	return []expr.Any{iif(),
		&expr.Payload{DestRegister: 9, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: n},
		&expr.Lookup{SourceRegister: 1, SetName: set.Name, SetID: set.ID}}
}

// daddr6Is matches an IPv6 destination a (after ipv6).
func daddr6Is(a netip.Addr) []expr.Any {
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 24, Len: 16},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: a.AsSlice()},
	}
}

// ctDNAT matches the connection's DNAT bit: op CmpOpNeq, set; CmpOpEq,
// not set.
func ctDNAT(op expr.CmpOp) []expr.Any {
	return []expr.Any{
		&expr.Ct{Register: 1, Key: expr.CtKeySTATUS},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(ipsDstNAT), Xor: make([]byte, 4)},
		&expr.Cmp{Op: op, Register: 1, Data: make([]byte, 4)},
	}
}
