package router

import (
	"errors"
	"net/netip"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"golang.org/x/sys/unix"
)

// TableName is the router's nftables table, of the inet family (IPv4 and
// IPv6, so that IPv6 from clients can be dropped in the same place). The
// router owns it whole: it replaces it at every change and deletes it when
// it stops. Nothing else of the provider's ruleset is touched.
const TableName = "spectrum-router"

// The table's regular chains, which the base chains jump to.
const (
	chainFromClient = "from-client" // forward, from a provider link, its client's own address
	chainToClient   = "to-client"   // forward, to a provider link
	chainClientDNS  = "client-dns"  // prerouting, from a provider link (DNSNAT only)
)

var (
	clientRange  = netip.MustParsePrefix("100.64.0.0/16")
	resolverAddr = netip.MustParseAddr(Resolver)
)

// DNSMode is what the router does with DNS that clients send to Resolver.
type DNSMode uint8

// The DNS modes.
const (
	// DNSRefused: no resolver clients can be sent to (resolv.conf
	// missing, empty, or naming a loopback resolver). Everything sent
	// to Resolver is rejected, so clients fail fast instead of waiting.
	DNSRefused DNSMode = iota
	// DNSNAT: UDP and TCP port 53 to Resolver are DNATed to DNS.Addr,
	// the provider's own resolver, then masqueraded like any client
	// traffic; anything else to Resolver is rejected.
	DNSNAT
	// DNSForward: the provider's own resolver is Resolver itself (it is a
	// client too: a chained provider); client traffic to Resolver is
	// forwarded and masqueraded as is, to this provider's provider.
	DNSForward
)

// DNS is the router's DNS decision: what DNS to Resolver becomes, and why.
type DNS struct {
	Mode DNSMode
	Addr netip.Addr // DNSNAT: the resolver; zero otherwise
	// Why is the reason in words, for the log: where Addr comes from,
	// or why DNS is refused.
	Why string
}

// Link is one provider NIC the router routes for.
type Link struct {
	Index  uint32     // the NIC's ifindex: rules match it, not its name, so a rename changes nothing
	Client netip.Addr // the link's client address, 100.64.A.B: the only source accepted from it
	// unsaid marks a link the first table had, whose NIC's log has not
	// said so yet.
	unsaid bool
}

// spec is everything the table is a function of.
type spec struct {
	links      []Link // in any order: writeTable writes them by ifindex
	dns        DNS
	forwardWas byte // '0' or '1'
}

// The expressions rules are made of, by index; a rule names them in a
// string (see rules). Expressions are only ever marshalled, so rules share
// them. What a rule needs per link (the NIC's ifindex, its client's
// address) and the DNAT's address are the expressions made per table
// (exprs).
var ops = [...]expr.Any{
	&expr.Meta{Key: expr.MetaKeyIIF, Register: 1}, // 0
	nil, // 1: == this link's ifindex (exprs)
	&expr.Meta{Key: expr.MetaKeyOIF, Register: 1},                                           // 2
	&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4}, // 3: ip saddr
	&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},                                       // 4
	&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.NFPROTO_IPV4}},               // 5: ipv4
	nil, // 6: == this link's client address (exprs)
	&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4},                       // 7: ip daddr
	&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: resolverAddr.AsSlice()},                                        // 8: Resolver
	&expr.Verdict{Kind: expr.VerdictJump, Chain: chainFromClient},                                                 // 9
	&expr.Verdict{Kind: expr.VerdictJump, Chain: chainToClient},                                                   // 10
	&expr.Verdict{Kind: expr.VerdictJump, Chain: chainClientDNS},                                                  // 11
	&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: []byte{255, 255, 0, 0}, Xor: make([]byte, 4)}, // 12: /16
	&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: clientRange.Addr().AsSlice()},                                  // 13: 100.64.0.0
	&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},                                                             // 14
	&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_UDP}},                                      // 15
	&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_TCP}},                                      // 16
	// UDP and TCP both keep the destination port at offset 2.
	&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2}, // 17: dport
	&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{0, 53}},                            // 18: 53
	&expr.Ct{Register: 1, Key: expr.CtKeySTATE},                                              // 19
	&expr.Bitwise{ // 20: & established|related, in host byte order
		SourceRegister: 1, DestRegister: 1, Len: 4,
		Mask: binaryutil.NativeEndian.PutUint32(expr.CtStateBitESTABLISHED | expr.CtStateBitRELATED),
		Xor:  make([]byte, 4),
	},
	&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: make([]byte, 4)},                            // 21: != 0
	&expr.NAT{Type: expr.NATTypeDestNAT, Family: unix.NFPROTO_IPV4, RegAddrMin: 1},              // 22: dnat ip to register 1
	&expr.Verdict{Kind: expr.VerdictDrop},                                                       // 23
	&expr.Verdict{Kind: expr.VerdictAccept},                                                     // 24
	&expr.Reject{Type: unix.NFT_REJECT_ICMPX_UNREACH, Code: unix.NFT_REJECT_ICMPX_PORT_UNREACH}, // 25
	&expr.Masq{},                            // 26
	&expr.Verdict{Kind: expr.VerdictReturn}, // 27
}

// The ops exprs makes for each table, and what they stand for.
const (
	opIfindex = 1  // == the rule's link's ifindex
	opClient  = 6  // == the rule's link's client address
	opDNAT    = 22 // the provider's resolver, into register 1, before it
)

// The parts rules are made of, as strings of op indexes.
const (
	fromLink        = "\x00\x01" // iif is the rule's link
	toLink          = "\x02\x01" // oif is the rule's link
	isIPv4          = "\x04\x05" // in an inet table, before reading an IPv4 header field
	fromItsClient   = "\x03\x06"
	toResolver      = "\x07\x08"
	fromClientRange = "\x03\x0c\x0d"
	udpTo53         = "\x0e\x0f\x11\x12"
	tcpTo53         = "\x0e\x10\x11\x12"
	replies         = "\x13\x14\x15"
	jumpFromClient  = "\x09"
	jumpToClient    = "\x0a"
	jumpClientDNS   = "\x0b"
	dnat            = "\x16"
	drop            = "\x17"
	accept          = "\x18"
	reject          = "\x19"
	masquerade      = "\x1a"
	ret             = "\x1b"
)

// exprs is the expressions for a string of op indexes: l is the rule's
// link (for opIfindex and opClient), dns the provider's resolver, loaded
// before the DNAT.
func exprs(ix string, l Link, dns netip.Addr) []expr.Any {
	es := make([]expr.Any, 0, len(ix)+1)
	for i := 0; i < len(ix); i++ {
		switch ix[i] {
		case opIfindex:
			es = append(es, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(l.Index)})
			continue
		case opClient:
			es = append(es, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: l.Client.AsSlice()})
			continue
		case opDNAT:
			es = append(es, &expr.Immediate{Register: 1, Data: dns.AsSlice()})
		}
		es = append(es, ops[ix[i]])
	}
	return es
}

// writeTable queues the whole table for spec on c, replacing any table of
// the same name, for one Flush: one transaction, so packets see the old
// ruleset or the new, never a mix, and the same spec always gives the
// same ruleset (a restart that finds its own table converges).
//
// The ruleset, in nft syntax (A = Resolver, R = DNS.Addr; "each link" is
// one rule per provider NIC L with its client C = 100.64.A.B):
//
//	table inet spectrum-router {
//		chain prerouting { type nat hook prerouting priority dstnat; policy accept;
//			iif L jump client-dns                         # each link; DNSNAT only
//		}
//		chain client-dns {
//			ip daddr A udp dport 53 dnat ip to R
//			ip daddr A tcp dport 53 dnat ip to R
//		}
//		chain forward { type filter hook forward priority filter; policy accept;
//			iif L ip saddr C jump from-client             # each link: its client's own address ...
//			iif L drop                                    # ... and nothing else (another source, IPv6)
//			oif L jump to-client                          # each link
//		}
//		chain from-client {
//			oif L drop                                    # each link: no client reaches another
//			ip daddr A reject                             # not DNS, or no resolver (not DNSForward)
//			accept
//		}
//		chain to-client {
//			ct state established,related accept
//			drop                                          # nothing else reaches a client
//		}
//		chain postrouting { type nat hook postrouting priority srcnat; policy accept;
//			oif L return                                  # each link
//			ip saddr 100.64.0.0/16 masquerade
//		}
//		chain ip_forward-was-0 { }   # see forwardWasChain
//	}
//
// Per-link rules rather than sets: a provider has a handful of links, and
// nftables' set code in google/nftables (AddSet and its element encoding)
// would cost about 20 KB of the agent's size budget, which it cannot spare.
//
// Both base chains accept by default: traffic that touches no provider
// link (between two uplinks, say) is the provider's own firewall's
// business, as in Qubes' sys-net. Each rule carries a comment saying why.
// Rules name the NICs by ifindex, not by name, so a NIC renamed after it
// appeared (udev's predictable names) stays covered.
func writeTable(c *nftables.Conn, s spec) error {
	t := &nftables.Table{Name: TableName, Family: nftables.TableFamilyINet}
	// Adding first makes the delete valid when there is no table yet.
	c.AddTable(t)
	c.DelTable(t)
	c.AddTable(t)

	policy := nftables.ChainPolicyAccept
	var chains [len(allChains)]*nftables.Chain
	for i, ch := range allChains {
		chain := &nftables.Chain{Name: ch.name, Table: t}
		if ch.hook != nil {
			chain.Type, chain.Hooknum, chain.Priority, chain.Policy = ch.typ, ch.hook, ch.prio, &policy
		}
		chains[i] = c.AddChain(chain)
	}
	c.AddChain(&nftables.Chain{Name: forwardWasChain(s.forwardWas), Table: t})
	links := byIndex(s.links)
	for _, rs := range rules {
		if rs.when == ifDNSNAT && s.dns.Mode != DNSNAT || rs.when == unlessDNSForward && s.dns.Mode == DNSForward {
			continue
		}
		n := 1
		if rs.each {
			n = len(links)
		}
		for i := range n {
			var l Link
			if rs.each {
				l = links[i]
			}
			c.AddRule(&nftables.Rule{
				Table: t, Chain: chains[rs.chain], Exprs: exprs(rs.ops, l, s.dns.Addr),
				UserData: userdata.AppendString(nil, userdata.TypeComment, rs.comment),
			})
		}
	}
	return nil
}

// byIndex returns a copy of links in ifindex order. An insertion sort: a
// provider has a handful of links, and slices.SortFunc's generic code
// would cost about 20 KB of the agent's size budget.
func byIndex(links []Link) []Link {
	out := make([]Link, len(links))
	copy(out, links)
	for i := 1; i < len(out); i++ {
		for j := i; j > 0 && out[j].Index < out[j-1].Index; j-- {
			out[j], out[j-1] = out[j-1], out[j]
		}
	}
	return out
}

// The table's chains, by the indexes rules name them with: the base
// chains, then the regular ones they jump to.
const (
	chainPre = iota
	chainDNS
	chainFwd
	chainFrom
	chainTo
	chainPost
)

var allChains = [...]struct {
	name string
	typ  nftables.ChainType
	hook *nftables.ChainHook // nil: a regular chain
	prio *nftables.ChainPriority
}{
	chainPre:  {"prerouting", nftables.ChainTypeNAT, nftables.ChainHookPrerouting, nftables.ChainPriorityNATDest},
	chainDNS:  {name: chainClientDNS},
	chainFwd:  {"forward", nftables.ChainTypeFilter, nftables.ChainHookForward, nftables.ChainPriorityFilter},
	chainFrom: {name: chainFromClient},
	chainTo:   {name: chainToClient},
	chainPost: {"postrouting", nftables.ChainTypeNAT, nftables.ChainHookPostrouting, nftables.ChainPriorityNATSource},
}

// When a rule is in the table.
const (
	always = iota
	ifDNSNAT
	unlessDNSForward
)

// rules is the table's rules in order, as data (writeTable's comment has
// them in nft syntax). A rule marked each is written once per provider
// link, in the links' order, for that link's NIC and client.
var rules = [...]struct {
	chain, when uint8
	each        bool
	comment     string
	ops         string
}{
	{chainPre, ifDNSNAT, true, "DNS from a client", fromLink + jumpClientDNS},
	{chainDNS, ifDNSNAT, false, "DNS to the virtual resolver goes to this provider's own", isIPv4 + toResolver + udpTo53 + dnat},
	{chainDNS, ifDNSNAT, false, "DNS to the virtual resolver goes to this provider's own", isIPv4 + toResolver + tcpTo53 + dnat},
	{chainFwd, always, true, "from a provider link only its client's address", fromLink + isIPv4 + fromItsClient + jumpFromClient},
	{chainFwd, always, true, "nothing else from a provider link: no other source, no IPv6", fromLink + drop},
	{chainFwd, always, true, "to a client", toLink + jumpToClient},
	{chainFrom, always, true, "no client reaches another", toLink + drop},
	{chainFrom, unlessDNSForward, false, "only DNS to the virtual resolver, and only while there is a resolver", isIPv4 + toResolver + reject},
	{chainFrom, always, false, "clients reach everything else", accept},
	{chainTo, always, false, "replies reach clients", replies + accept},
	{chainTo, always, false, "nothing else reaches a client", drop},
	{chainPost, always, true, "traffic to a client keeps its source", toLink + ret},
	{chainPost, always, false, "clients leave with this provider's address", isIPv4 + fromClientRange + masquerade},
}

// deleteTable queues the removal of the router's table.
func deleteTable(c *nftables.Conn) {
	c.DelTable(&nftables.Table{Name: TableName, Family: nftables.TableFamilyINet})
}

// forwardWasChain is the name of the table's one regular chain, empty and
// never jumped to, whose name records net.ipv4.ip_forward as it was
// before the router turned it on ("ip_forward-was-0"): kept in the kernel
// with the table, so that an agent restarted after a crash (kill -9)
// restores the value from before the first run, not the one its
// predecessor left. A name and not a comment, because it can be probed
// without reading the ruleset back (which would link the library's
// parsers, about 8 KB).
func forwardWasChain(v byte) string { return "ip_forward-was-" + string(v) }

// readForwardWas finds the record an earlier run's table holds; found is
// false when there is no such table (or it has no record).
func readForwardWas(c *nftables.Conn) (v byte, found bool, err error) {
	t := &nftables.Table{Name: TableName, Family: nftables.TableFamilyINet}
	for _, v := range []byte{'0', '1'} {
		// Flushing an empty chain changes nothing; it fails with
		// ENOENT when there is no such chain or table.
		c.FlushChain(&nftables.Chain{Name: forwardWasChain(v), Table: t})
		err := c.Flush()
		if err == nil {
			return v, true, nil
		}
		if !errors.Is(err, unix.ENOENT) {
			return 0, false, err
		}
	}
	return 0, false, nil
}

// describe is a spec's DNS decision in words, for the log.
func (d DNS) describe() string {
	switch d.Mode {
	case DNSNAT:
		return "DNS to " + Resolver + " goes to " + d.Addr.String() + " (" + d.Why + ")"
	case DNSForward:
		return "DNS to " + Resolver + " is forwarded as is (" + d.Why + ")"
	}
	return "DNS to " + Resolver + " is refused: " + d.Why
}
