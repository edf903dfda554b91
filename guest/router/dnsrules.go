package router

import (
	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// The DNS part of the table (docs/DESIGN.md, "DNS"): the redirect of the
// clients' DNS to the forwarder, the guard of the forwarder's port, and
// what the input chain's to-provider accepts of it. writeTable makes the
// chains; the rules are these:
//
//	chain prerouting {                              # nat, dstnat
//		iif . ip saddr @clients jump client-dns   # a link's own client only
//	}
//	chain client-dns {
//		ip daddr A udp dport 53 redirect to :P
//		ip daddr A tcp dport 53 redirect to :P
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
// The redirect takes only the link's own client's address; the guard
// chain (prerouting) drops any other source from a provider link before
// conntrack can redirect it on another client's tuple, so the forwarder,
// which counts each client's share by its source address, sees each link's
// own client only. The limits table's dns-input (limits.go), right after
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
// table's set of links and client addresses.
func dnsRules(port uint16, clients *nftables.Set) []dnsRule {
	var rs []dnsRule
	add := func(chain, comment string, es ...[]expr.Any) {
		var all []expr.Any
		for _, e := range es {
			all = append(all, e...)
		}
		rs = append(rs, dnsRule{chain, comment, all})
	}
	protos := []byte{unix.IPPROTO_UDP, unix.IPPROTO_TCP}
	add(chainPre, "DNS from a client", ipv4(), []expr.Any{iif(),
		&expr.Payload{DestRegister: 9, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4},
		&expr.Lookup{SourceRegister: 1, SetName: clients.Name, SetID: clients.ID}}, jump(chainClientDNS))
	for _, p := range protos {
		add(chainClientDNS, "DNS to the virtual resolver goes to this provider's forwarder",
			ipv4(), daddr4Is(resolverAddr), l4Dport(p, 53),
			[]expr.Any{
				&expr.Immediate{Register: 1, Data: binaryutil.BigEndian.PutUint16(port)},
				&expr.Redir{RegisterProtoMin: 1},
			})
	}
	for _, p := range protos {
		add(chainDNSGuard, "nothing reaches the forwarder but DNS redirected from a client", l4Dport(p, port), ctDNAT(expr.CmpOpEq), drop())
	}
	for _, p := range protos {
		add(chainClientDNSIn, "DNS to the virtual resolver, redirected to the forwarder", l4Dport(p, port), ctDNAT(expr.CmpOpNeq), accept())
	}
	return rs
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
