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

// The table's sets and chains.
const (
	setLinks   = "links"   // iface_index: every provider NIC
	setClients = "clients" // iface_index . ipv4_addr: each provider NIC with its link's client address
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
	links      []Link // in any order: a set has none
	dns        DNS
	forwardWas byte // '0' or '1'
}

// The table's two sets. Their IDs name them to the rules of the same
// transaction; fixed IDs (they are per transaction) keep every expression
// below a constant.
var (
	links = &nftables.Set{
		Name: setLinks, ID: 1, KeyType: nftables.TypeIFIndex,
		// An ifindex is in host byte order; saying so lets nft print names.
		KeyByteOrder: binaryutil.NativeEndian,
	}
	clients = &nftables.Set{
		Name: setClients, ID: 2, Concatenation: true,
		KeyType: nftables.MustConcatSetType(nftables.TypeIFIndex, nftables.TypeIPAddr),
	}
)

// The expressions rules are made of, by index; a rule names them in a
// string (see rules). Expressions are only ever marshalled, so rules share
// them. The DNAT's address is the one expression made per table.
var ops = [...]expr.Any{
	&expr.Meta{Key: expr.MetaKeyIIF, Register: 1},                                           // 0
	&expr.Lookup{SourceRegister: 1, SetName: setLinks, SetID: 1},                            // 1: @links
	&expr.Meta{Key: expr.MetaKeyOIF, Register: 1},                                           // 2
	&expr.Lookup{SourceRegister: 1, SetName: setLinks, SetID: 1, Invert: true},              // 3: != @links
	&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},                                       // 4
	&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.NFPROTO_IPV4}},               // 5: ipv4
	&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: []byte{unix.NFPROTO_IPV4}},              // 6: != ipv4
	&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4}, // 7: ip daddr
	&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: resolverAddr.AsSlice()},                  // 8: Resolver
	// iif . ip saddr: 4 bytes each, in the 32-bit registers 8 (the
	// 128-bit register 1, where op 0 loads) and 9.
	&expr.Payload{DestRegister: 9, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4},                       // 9: ip saddr -> reg 9
	&expr.Lookup{SourceRegister: 1, SetName: setClients, SetID: 2, Invert: true},                                  // 10: != @clients
	&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4},                       // 11: ip saddr
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
	&expr.Masq{}, // 26
}

// opDNAT is the op that the provider's resolver, in register 1, goes
// before.
const opDNAT = 22

// The parts rules are made of, as strings of op indexes.
const (
	fromLink        = "\x00\x01"
	toLink          = "\x02\x01"
	notToLink       = "\x02\x03"
	isIPv4          = "\x04\x05" // in an inet table, before reading an IPv4 header field
	notIPv4         = "\x04\x06"
	toResolver      = "\x07\x08"
	notClient       = "\x00\x09\x0a"
	fromClientRange = "\x0b\x0c\x0d"
	udpTo53         = "\x0e\x0f\x11\x12"
	tcpTo53         = "\x0e\x10\x11\x12"
	replies         = "\x13\x14\x15"
	dnat            = "\x16"
	drop            = "\x17"
	accept          = "\x18"
	reject          = "\x19"
	masquerade      = "\x1a"
)

// exprs is the expressions for a string of op indexes; dns is the
// provider's resolver, loaded before the DNAT.
func exprs(ix string, dns netip.Addr) []expr.Any {
	es := make([]expr.Any, 0, len(ix)+1)
	for i := 0; i < len(ix); i++ {
		if ix[i] == opDNAT {
			es = append(es, &expr.Immediate{Register: 1, Data: dns.AsSlice()})
		}
		es = append(es, ops[ix[i]])
	}
	return es
}

// writeTable queues the whole table for spec on c, replacing any table of
// the same name, for one Flush: one transaction, so packets see the old
// ruleset or the new one, never a mix, and the same spec always gives the
// same ruleset (a restart that finds its own table converges).
//
// The ruleset, in nft syntax (A = Resolver, R = DNS.Addr):
//
//	table inet spectrum-router {
//		set links { type iface_index; elements = { <provider NICs> } }
//		set clients { type iface_index . ipv4_addr; elements = { <NIC . 100.64.A.B> } }
//		chain prerouting { type nat hook prerouting priority dstnat; policy accept;
//			iif @links ip daddr A udp dport 53 dnat ip to R   # DNSNAT only
//			iif @links ip daddr A tcp dport 53 dnat ip to R   # DNSNAT only
//		}
//		chain forward { type filter hook forward priority filter; policy accept;
//			iif @links meta nfproto != ipv4 drop        # IPv6 from clients
//			iif @links iif . ip saddr != @clients drop  # a source that is not the link's client
//			iif @links oif @links drop                  # client to client
//			iif @links ip daddr A reject                # not DNS, or no resolver (not DNSForward)
//			iif @links accept
//			oif @links ct state established,related accept
//			oif @links drop                             # nothing else reaches a client
//		}
//		chain postrouting { type nat hook postrouting priority srcnat; policy accept;
//			oif != @links ip saddr 100.64.0.0/16 masquerade
//		}
//		chain ip_forward-was-0 { }   # see forwardWasChain
//	}
//
// Both base chains accept by default: traffic that touches no provider
// link (between two uplinks, say) is the provider's own firewall's
// business, as in Qubes' sys-net. Each rule carries a comment saying why.
// Sets and rules name the NICs by ifindex, not by name, so a NIC renamed
// after it appeared (udev's predictable names) stays covered.
func writeTable(c *nftables.Conn, s spec) error {
	t := &nftables.Table{Name: TableName, Family: nftables.TableFamilyINet}
	// Adding first makes the delete valid when there is no table yet.
	c.AddTable(t)
	c.DelTable(t)
	c.AddTable(t)

	ls, cs := *links, *clients
	ls.Table, cs.Table = t, t
	le := make([]nftables.SetElement, len(s.links))
	ce := make([]nftables.SetElement, len(s.links))
	for i, l := range s.links {
		le[i].Key = binaryutil.NativeEndian.PutUint32(l.Index)
		a := l.Client.As4()
		ce[i].Key = append(binaryutil.NativeEndian.PutUint32(l.Index), a[:]...)
	}
	if err := c.AddSet(&ls, le); err != nil {
		return err
	}
	if err := c.AddSet(&cs, ce); err != nil {
		return err
	}

	policy := nftables.ChainPolicyAccept
	var chains [len(baseChains)]*nftables.Chain
	for i, bc := range baseChains {
		chains[i] = c.AddChain(&nftables.Chain{
			Name: bc.name, Table: t, Type: bc.typ, Hooknum: bc.hook, Priority: bc.prio, Policy: &policy,
		})
	}
	c.AddChain(&nftables.Chain{Name: forwardWasChain(s.forwardWas), Table: t})
	for _, rs := range rules {
		if rs.when == ifDNSNAT && s.dns.Mode != DNSNAT || rs.when == unlessDNSForward && s.dns.Mode == DNSForward {
			continue
		}
		c.AddRule(&nftables.Rule{
			Table: t, Chain: chains[rs.chain], Exprs: exprs(rs.ops, s.dns.Addr),
			UserData: userdata.AppendString(nil, userdata.TypeComment, rs.comment),
		})
	}
	return nil
}

// The base chains, by the indexes rules name them with.
const (
	chainPre = iota
	chainFwd
	chainPost
)

var baseChains = [...]struct {
	name string
	typ  nftables.ChainType
	hook *nftables.ChainHook
	prio *nftables.ChainPriority
}{
	chainPre:  {"prerouting", nftables.ChainTypeNAT, nftables.ChainHookPrerouting, nftables.ChainPriorityNATDest},
	chainFwd:  {"forward", nftables.ChainTypeFilter, nftables.ChainHookForward, nftables.ChainPriorityFilter},
	chainPost: {"postrouting", nftables.ChainTypeNAT, nftables.ChainHookPostrouting, nftables.ChainPriorityNATSource},
}

// When a rule is in the table.
const (
	always = iota
	ifDNSNAT
	unlessDNSForward
)

// rules is the table's rules in order, as data (writeTable's comment has
// them in nft syntax).
var rules = [...]struct {
	chain, when uint8
	comment     string
	ops         string
}{
	{chainPre, ifDNSNAT, "DNS to the virtual resolver goes to this provider's own", fromLink + isIPv4 + toResolver + udpTo53 + dnat},
	{chainPre, ifDNSNAT, "DNS to the virtual resolver goes to this provider's own", fromLink + isIPv4 + toResolver + tcpTo53 + dnat},
	{chainFwd, always, "IPv6 from clients is never forwarded", fromLink + notIPv4 + drop},
	{chainFwd, always, "from a provider link only its client's address", fromLink + isIPv4 + notClient + drop},
	{chainFwd, always, "no client reaches another", fromLink + toLink + drop},
	{chainFwd, unlessDNSForward, "only DNS to the virtual resolver, and only while there is a resolver", fromLink + isIPv4 + toResolver + reject},
	{chainFwd, always, "clients reach everything else", fromLink + accept},
	{chainFwd, always, "replies reach clients", toLink + replies + accept},
	{chainFwd, always, "nothing else reaches a client", toLink + drop},
	{chainPost, always, "clients leave with this provider's address", notToLink + isIPv4 + fromClientRange + masquerade},
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
