package router

import (
	"cmp"
	"errors"
	"net/netip"
	"slices"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"golang.org/x/sys/unix"

	"spectrum-os.org/netcfg/internal/mac"
)

// TableName is the router's nftables table, of the inet family (IPv4 and
// IPv6, so that both families' rules are in the same place). The
// router owns it whole: it replaces it at every change and deletes it when
// it stops. Nothing else of the provider's ruleset is touched.
const TableName = "spectrum-router"

// The table's sets, kept in step with the provider NICs.
const (
	setLinks        = "links"         // iface_index: the provider NICs
	setClients      = "clients"       // iface_index . ipv4_addr: each provider NIC and its client's address
	setGateways     = "gateways"      // iface_index . ipv4_addr: each provider NIC and its own address there (its client's gateway)
	setClientAddrs  = "client-addrs"  // ipv4_addr: the clients' addresses
	setLinkMarks    = "link-marks"    // iface_index . mark: each provider NIC and its ifindex, the ct mark of its connections
	setClients6     = "clients6"      // iface_index . ipv6_addr: each provider NIC and its client's IPv6 address
	setGateways6    = "gateways6"     // iface_index . ipv6_addr: each provider NIC and its own IPv6 addresses there (fe80::1 and its link's ::1)
	setClientAddrs6 = "client-addrs6" // ipv6_addr: the clients' IPv6 addresses
)

// The table's chains. The base chains jump to the regular ones for what
// comes from or goes to a provider link; what touches no provider link
// only passes through the first rules of forward (link-local) and
// postrouting.
const (
	chainPre         = "prerouting"    // nat, dstnat: DNS
	chainClientDNS   = "client-dns"    // DNS from a client (nat): the DNS part's
	chainDNSGuard    = "dns-input"     // filter, input, before input: the DNS part's
	chainGuard       = "guard"         // filter, prerouting, after conntrack: invalid, spoofed (the limits table's next)
	chainFromLink    = "from-link"     // guard, from a provider link
	chainOutput      = "output"        // filter, output: the provider's own connections to its clients
	chainInput       = "input"         // filter, input
	chainToProvider  = "to-provider"   // input, from a provider link
	chainClientDNSIn = "client-dns-in" // to-provider: DNS to the provider itself (the DNS part's)
	chainForward     = "forward"       // filter, forward
	chainFromClient  = "from-client"   // forward, from a provider link
	chainToClient    = "to-client"     // forward, to a provider link
	chainPost        = "postrouting"   // nat, srcnat
	chainLeak        = "leak"          // filter, postrouting after srcnat: no client address leaves un-NATed
)

var (
	clientRange  = netip.MustParsePrefix("100.64.0.0/16")
	resolverAddr = netip.MustParseAddr(Resolver)
	linkLocal6   = netip.MustParsePrefix("fe80::/10")
	linkScope6   = netip.MustParsePrefix("ff02::/16") // link-scope multicast: NDP's, MLD's
)

// Link is one provider NIC the router routes for.
type Link struct {
	Index  uint32     // the NIC's ifindex: rules match it, not its name, so a rename changes nothing
	Client netip.Addr // the link's client address, 100.64.A.B: the only source accepted from it
	// unsaid marks a link the first table had, whose NIC's log has not
	// said so yet.
	unsaid bool
}

// gateway is the provider's own address on the link, 169.254.A.B for
// client 100.64.A.B (mac.LinkID.Gateway).
func (l Link) gateway() netip.Addr {
	a := l.Client.As4()
	return netip.AddrFrom4([4]byte{169, 254, a[2], a[3]})
}

// linkID is the link's id, A:B of its client 100.64.A.B.
func (l Link) linkID() mac.LinkID {
	a := l.Client.As4()
	return mac.LinkID(uint16(a[2])<<8 | uint16(a[3]))
}

// client6 is the link's client's IPv6 address, fd9f:2b8:5010:AB::2
// (mac.LinkID.ClientAddr6).
func (l Link) client6() netip.Addr { return l.linkID().ClientAddr6() }

// spec is everything the table is a function of.
type spec struct {
	links       []Link // in any order: writeTable writes them by ifindex
	dnsPort     uint16 // the DNS forwarder's, UDP and TCP (dnsrules.go)
	forwardWas  byte   // '0' or '1'
	forward6Was byte   // '0' or '1'; 0 for a kernel without IPv6
}

// writeTable queues the whole table for spec on c, replacing any table of
// the same name, for one Flush: one transaction, so packets see the old
// ruleset or the new, never a mix, and the same spec always gives the
// same ruleset (a restart that finds its own table converges).
//
// The ruleset, in nft syntax (A = Resolver, A6 = Resolver6, P = the DNS
// forwarder's port;
// L each provider NIC, C its client 100.64.A.B, G its own address
// 169.254.A.B, C6 and G6 the client's and its own fd9f:2b8:5010:AB::2 and
// ::1; the per-link limits are the limits table's, limits.go):
//
//	table inet spectrum-router {
//		set links        { type iface_index; elements = { L, ... } }
//		set clients      { type iface_index . ipv4_addr; elements = { L . C, ... } }
//		set gateways     { type iface_index . ipv4_addr; elements = { L . G, ... } }
//		set client-addrs { type ipv4_addr; elements = { C, ... } }
//		set link-marks   { type iface_index . mark; elements = { L . L, ... } }
//		set clients6     { type iface_index . ipv6_addr; elements = { L . C6, ... } }
//		set gateways6    { type iface_index . ipv6_addr; elements = { L . fe80::1, L . G6, ... } }
//		set client-addrs6 { type ipv6_addr; elements = { C6, ... } }
//		chain prerouting { type nat hook prerouting priority dstnat; policy accept;
//			iif . ip saddr @clients jump client-dns       # a link's own client's DNS
//			iif . ip6 saddr @clients6 jump client-dns
//		}
//		chain client-dns {                                # the DNS part's (dnsrules.go)
//			ip daddr A udp dport 53 redirect to :P
//			ip daddr A tcp dport 53 redirect to :P
//			ip6 daddr A6 udp dport 53 redirect to :P
//			ip6 daddr A6 tcp dport 53 redirect to :P
//		}
//		chain guard { type filter hook prerouting priority -150; policy accept;
//			iif @links jump from-link
//		}
//		chain from-link {
//			ct state invalid drop
//			iif . ip saddr != @clients drop                # only its client's address, to the provider too
//			ip6 saddr != fe80::/10 ip6 saddr != :: meta iif . ip6 saddr != @clients6 drop
//			ip6 saddr fe80::/10 ip6 daddr != fe80::/10 ip6 daddr != ff02::/16 drop   # link-local and ::
//			ip6 saddr :: ip6 daddr != ff02::/16 drop       # only for what stays on the link
//			ct state new ct mark set meta iif              # its connections carry its ifindex ...
//			ct state related meta iif . ct mark != @link-marks drop   # ... and only errors about them pass
//		}
//		chain dns-input { ... }                          # the DNS part's (dnsrules.go)
//		chain output { type filter hook output priority filter; policy accept;
//			oif @links ct state new ct mark set meta oif   # the provider's own connections to a client
//		}
//		chain input { type filter hook input priority filter; policy accept;
//			iif @links jump to-provider
//		}
//		chain to-provider {
//			icmp type redirect drop
//			icmpv6 type { nd-router-solicit, nd-router-advert, nd-redirect } drop
//			udp dport { 67, 68, 546, 547 } drop            # DHCP, BOOTP, DHCPv6
//			ct state established,related accept            # the provider's own connections
//			icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert } accept
//			jump client-dns-in                             # the DNS part's
//			iif . ip daddr @gateways icmp type echo-request accept
//			iif . ip6 daddr @gateways6 icmpv6 type echo-request accept
//			ip protocol tcp reject with tcp reset
//			ip6 saddr != fe80::/10 meta l4proto tcp reject with tcp reset
//			reject with icmpx port-unreachable
//		}
//		chain client-dns-in {                             # the DNS part's (dnsrules.go)
//			udp dport P ct status dnat accept
//			tcp dport P ct status dnat accept
//		}
//		chain forward { type filter hook forward priority filter; policy accept;
//			ip saddr 100.64.0.0/16 meta mark set meta mark | 0x10000000   # seen: the guard table's (guard.go),
//			ip daddr 100.64.0.0/16 meta mark set meta mark | 0x10000000   # and with ip6 saddr, daddr fd9f:2b8:5010::/48
//			ip daddr 169.254.0.0/16 drop                   # link-local: never forwarded
//			ip saddr 169.254.0.0/16 drop
//			ip6 daddr fe80::/10 drop
//			ip6 saddr fe80::/10 drop
//			iif @links jump from-client
//			oif @links jump to-client
//		}
//		chain from-client {
//			oif @links drop                                # no client reaches another
//			ip daddr A reject                              # not DNS (redirected before it gets here)
//			ip6 daddr fd9f:2b8:5010::/48 reject            # the links' prefix ends here
//			tcp flags syn tcp option maxseg size set rt mtu   # MSS clamped to the route out
//			accept
//		}
//		chain to-client {
//			ct state established,related accept
//			drop                                           # nothing else reaches a client
//		}
//		chain postrouting { type nat hook postrouting priority srcnat; policy accept;
//			oif @links return
//			ip saddr 100.64.0.0/16 masquerade
//			ip6 saddr fd9f:2b8:5010::/48 masquerade        # NAT66
//		}
//		chain leak { type filter hook postrouting priority 110; policy accept;
//			oif != @links ip saddr @client-addrs drop
//			oif != @links ip6 saddr @client-addrs6 drop
//			oif != @links ip6 saddr & ffff:ffff:ffff::ffff:ffff:ffff:ffff == fd9f:2b8:5010::1 drop   # any link's ::1
//		}
//		chain ip_forward-was-0 { }   # see forwardWasChain
//		chain ipv6_forwarding-was-0 { }   # forward6WasChain; none without IPv6
//	}
//
// Each rule carries a comment saying why. Rules name the NICs by ifindex,
// not by name, so a NIC renamed after it appeared (udev's predictable
// names) stays covered.
func writeTable(c *nftables.Conn, s spec) error {
	t := &nftables.Table{Name: TableName, Family: nftables.TableFamilyINet}
	// Adding first makes the delete valid when there is no table yet.
	c.AddTable(t)
	c.DelTable(t)
	c.AddTable(t)
	links := slices.SortedFunc(slices.Values(s.links), func(a, b Link) int { return cmp.Compare(a.Index, b.Index) })

	sets := map[string]*nftables.Set{}
	var elems [8][]nftables.SetElement
	for _, l := range links {
		ix := binaryutil.NativeEndian.PutUint32(l.Index)
		c4, g4 := l.Client.As4(), l.gateway().As4()
		c6, g6, ll := l.client6().As16(), l.linkID().ProviderAddr6().As16(), mac.LinkLocalGateway.As16()
		elems[0] = append(elems[0], nftables.SetElement{Key: ix})
		elems[1] = append(elems[1], nftables.SetElement{Key: append(slices.Clone(ix), c4[:]...)})
		elems[2] = append(elems[2], nftables.SetElement{Key: append(slices.Clone(ix), g4[:]...)})
		elems[3] = append(elems[3], nftables.SetElement{Key: c4[:]})
		elems[4] = append(elems[4], nftables.SetElement{Key: append(slices.Clone(ix), ix...)})
		elems[5] = append(elems[5], nftables.SetElement{Key: append(slices.Clone(ix), c6[:]...)})
		elems[6] = append(elems[6], nftables.SetElement{Key: append(slices.Clone(ix), ll[:]...)},
			nftables.SetElement{Key: append(slices.Clone(ix), g6[:]...)})
		elems[7] = append(elems[7], nftables.SetElement{Key: c6[:]})
	}
	for i, st := range []struct {
		name string
		typ  nftables.SetDatatype
	}{
		{setLinks, nftables.TypeIFIndex},
		{setClients, nftables.MustConcatSetType(nftables.TypeIFIndex, nftables.TypeIPAddr)},
		{setGateways, nftables.MustConcatSetType(nftables.TypeIFIndex, nftables.TypeIPAddr)},
		{setClientAddrs, nftables.TypeIPAddr},
		{setLinkMarks, nftables.MustConcatSetType(nftables.TypeIFIndex, nftables.TypeMark)},
		{setClients6, nftables.MustConcatSetType(nftables.TypeIFIndex, nftables.TypeIP6Addr)},
		{setGateways6, nftables.MustConcatSetType(nftables.TypeIFIndex, nftables.TypeIP6Addr)},
		{setClientAddrs6, nftables.TypeIP6Addr},
	} {
		set := &nftables.Set{Table: t, Name: st.name, KeyType: st.typ, Concatenation: len(nftables.ConcatSetTypeElements(st.typ)) > 1}
		if st.typ == nftables.TypeIFIndex {
			// For nft, which shows an ifindex in host order.
			set.KeyByteOrder = binaryutil.NativeEndian
		}
		if err := c.AddSet(set, elems[i]); err != nil {
			return err
		}
		sets[st.name] = set
	}
	// anon is a constant anonymous set of keys of typ, for one rule.
	anon := func(typ nftables.SetDatatype, keys ...[]byte) (*nftables.Set, error) {
		set := &nftables.Set{Table: t, Anonymous: true, Constant: true, KeyType: typ}
		es := make([]nftables.SetElement, len(keys))
		for i, k := range keys {
			es[i] = nftables.SetElement{Key: k}
		}
		return set, c.AddSet(set, es)
	}
	lookup := func(set *nftables.Set, reg uint32, invert bool) expr.Any {
		return &expr.Lookup{SourceRegister: reg, SetName: set.Name, SetID: set.ID, Invert: invert}
	}
	inSet := func(name string) expr.Any { return lookup(sets[name], 1, false) }

	policy := nftables.ChainPolicyAccept
	chains := map[string]*nftables.Chain{}
	base := func(name string, typ nftables.ChainType, hook *nftables.ChainHook, prio *nftables.ChainPriority) {
		chains[name] = c.AddChain(&nftables.Chain{Name: name, Table: t, Type: typ, Hooknum: hook, Priority: prio, Policy: &policy})
	}
	regular := func(name string) { chains[name] = c.AddChain(&nftables.Chain{Name: name, Table: t}) }
	base(chainPre, nftables.ChainTypeNAT, nftables.ChainHookPrerouting, nftables.ChainPriorityNATDest)
	regular(chainClientDNS)
	base(chainDNSGuard, nftables.ChainTypeFilter, nftables.ChainHookInput, nftables.ChainPriorityRef(*nftables.ChainPriorityFilter-10))
	base(chainGuard, nftables.ChainTypeFilter, nftables.ChainHookPrerouting, nftables.ChainPriorityRef(-150))
	regular(chainFromLink)
	base(chainOutput, nftables.ChainTypeFilter, nftables.ChainHookOutput, nftables.ChainPriorityFilter)
	base(chainInput, nftables.ChainTypeFilter, nftables.ChainHookInput, nftables.ChainPriorityFilter)
	regular(chainToProvider)
	regular(chainClientDNSIn)
	base(chainForward, nftables.ChainTypeFilter, nftables.ChainHookForward, nftables.ChainPriorityFilter)
	regular(chainFromClient)
	regular(chainToClient)
	base(chainPost, nftables.ChainTypeNAT, nftables.ChainHookPostrouting, nftables.ChainPriorityNATSource)
	base(chainLeak, nftables.ChainTypeFilter, nftables.ChainHookPostrouting, nftables.ChainPriorityRef(110))
	regular(forwardWasChain(s.forwardWas))
	if s.forward6Was != 0 {
		regular(forward6WasChain(s.forward6Was))
	}

	rule := func(chain, comment string, es ...[]expr.Any) {
		c.AddRule(&nftables.Rule{
			Table: t, Chain: chains[chain], Exprs: slices.Concat(es...),
			UserData: userdata.AppendString(nil, userdata.TypeComment, comment),
		})
	}
	x := func(es ...expr.Any) []expr.Any { return es }

	// DNS: the DNS part's (dnsrules.go).
	for _, r := range dnsRules(s.dnsPort, sets[setClients], sets[setClients6]) {
		rule(r.chain, r.comment, r.exprs)
	}

	rule(chainGuard, "from a provider link", x(iif(), inSet(setLinks)), jump(chainFromLink))
	rule(chainFromLink, "invalid packets go nowhere (nor un-NATed to the uplink)", ctState(expr.CtStateBitINVALID), drop())
	rule(chainFromLink, "from a provider link only its client's address", ipv4(),
		x(iif(), &expr.Payload{DestRegister: 9, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4}, lookup(sets[setClients], 1, true)), drop())
	// IPv6: the client's address, or a link-local or the unspecified
	// one (NDP, DAD, MLD, echo to fe80::1) for what stays on the link.
	rule(chainFromLink, "from a provider link only its client's address", notInPrefix(linkLocal6, false), saddr6IsNot(netip.IPv6Unspecified()),
		x(iif(), &expr.Payload{DestRegister: 9, Base: expr.PayloadBaseNetworkHeader, Offset: 8, Len: 16}, lookup(sets[setClients6], 1, true)), drop())
	rule(chainFromLink, "a link-local source only to its link", inPrefix(linkLocal6, false),
		notInPrefix(linkLocal6, true)[2:], notInPrefix(linkScope6, true)[2:], drop())
	rule(chainFromLink, "the unspecified source only to its link's multicast (DAD, MLD)",
		inPrefix(netip.PrefixFrom(netip.IPv6Unspecified(), 128), false), notInPrefix(linkScope6, true)[2:], drop())
	// ICMP errors that conntrack relates to a connection are taken as
	// that connection's (forwarded NATed as its, or delivered to the
	// provider's socket): from a provider link, only about its own
	// client's connections, which carry the link's ifindex as their
	// mark (set here for connections from the link, in output for the
	// provider's own to it).
	rule(chainFromLink, "a connection from a provider link carries its ifindex", ctState(expr.CtStateBitNEW),
		x(iif(), &expr.Ct{Key: expr.CtKeyMARK, Register: 1, SourceRegister: true}))
	rule(chainFromLink, "ICMP errors only about its own client's connections", ctState(expr.CtStateBitRELATED),
		x(iif(), &expr.Ct{Key: expr.CtKeyMARK, Register: 9}, lookup(sets[setLinkMarks], 1, true)), drop())
	rule(chainOutput, "the provider's own connection to a client carries the link's ifindex", x(oif(), inSet(setLinks)),
		ctState(expr.CtStateBitNEW), x(oif(), &expr.Ct{Key: expr.CtKeyMARK, Register: 1, SourceRegister: true}))
	rule(chainInput, "from a provider link", x(iif(), inSet(setLinks)), jump(chainToProvider))
	rule(chainToProvider, "no client redirects the provider's routes", icmpType(unix.IPPROTO_ICMP, 5), drop())
	ra, err := anon(nftables.TypeICMP6Type, []byte{133}, []byte{134}, []byte{137})
	if err != nil {
		return err
	}
	rule(chainToProvider, "no client is the provider's IPv6 router", l4proto(unix.IPPROTO_ICMPV6),
		x(&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 0, Len: 1}, lookup(ra, 1, false)), drop())
	dhcp, err := anon(nftables.TypeInetService, []byte{0, 67}, []byte{0, 68}, []byte{2, 34}, []byte{2, 35})
	if err != nil {
		return err
	}
	rule(chainToProvider, "no client is the provider's DHCP server", l4proto(unix.IPPROTO_UDP),
		x(&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2}, lookup(dhcp, 1, false)), drop())
	rule(chainToProvider, "replies to the provider's own connections", ctState(expr.CtStateBitESTABLISHED|expr.CtStateBitRELATED), accept())
	nd, err := anon(nftables.TypeICMP6Type, []byte{135}, []byte{136})
	if err != nil {
		return err
	}
	rule(chainToProvider, "neighbour discovery", l4proto(unix.IPPROTO_ICMPV6),
		x(&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 0, Len: 1}, lookup(nd, 1, false)), accept())
	rule(chainToProvider, "DNS to the provider", jump(chainClientDNSIn))
	rule(chainToProvider, "echo to the link's own gateway", ipv4(),
		x(iif(), &expr.Payload{DestRegister: 9, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4}, inSet(setGateways)),
		icmpType(unix.IPPROTO_ICMP, 8), accept())
	rule(chainToProvider, "echo to the link's own gateway", ipv6(),
		x(iif(), &expr.Payload{DestRegister: 9, Base: expr.PayloadBaseNetworkHeader, Offset: 24, Len: 16}, inSet(setGateways6)),
		icmpType(unix.IPPROTO_ICMPV6, 128), accept())
	// TCP gets a reset, but not to a link-local address: the kernel
	// routes such a reset by the provider's first fe80::/64 route,
	// whichever NIC that is, while an ICMPv6 error leaves by the NIC the
	// packet came in on (and TCP takes it as a refusal too; ICMPv6
	// errors are rate-limited, resets are not).
	rule(chainToProvider, "nothing else of the provider: refused at once", ipv4(),
		x(&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 9, Len: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_TCP}},
			&expr.Reject{Type: unix.NFT_REJECT_TCP_RST}))
	rule(chainToProvider, "nothing else of the provider: refused at once", notInPrefix(linkLocal6, false), l4proto(unix.IPPROTO_TCP),
		x(&expr.Reject{Type: unix.NFT_REJECT_TCP_RST}))
	rule(chainToProvider, "nothing else of the provider: refused at once", reject())

	for _, ll := range []netip.Prefix{netip.MustParsePrefix("169.254.0.0/16"), linkLocal6} {
		for _, dst := range []bool{true, false} {
			rule(chainForward, "link-local addresses are never forwarded (RFC 3927, RFC 4291)", inPrefix(ll, dst), drop())
		}
	}
	for _, r := range seenRules() { // the guard table's (guard.go)
		rule(chainForward, seenComment, r)
	}
	rule(chainForward, "from a provider link", x(iif(), inSet(setLinks)), jump(chainFromClient))
	rule(chainForward, "to a provider link", x(oif(), inSet(setLinks)), jump(chainToClient))
	rule(chainFromClient, "no client reaches another", x(oif(), inSet(setLinks)), drop())
	rule(chainFromClient, "only DNS to the virtual resolver, which never gets here", ipv4(), daddr4Is(resolverAddr), reject())
	// The virtual resolver's subnet 0 and every link's /64 are this
	// host's: beyond this provider's own links (another provider's
	// link, its gateway's ::1) they are nobody's to reach.
	rule(chainFromClient, "the links' prefix ends here (the IPv6 virtual resolver: DNS never gets here)", inPrefix(mac.ULA, true), reject())
	// A client's SYN says the MSS of its own link's MTU; the route out
	// may carry less (a PPPoE or tunnel uplink), and a path that drops
	// ICMP errors would stall. The kernel only ever lowers the option.
	rule(chainFromClient, "a SYN's MSS no more than the route out carries", l4proto(unix.IPPROTO_TCP),
		x(&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 13, Len: 1},
			&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 1, Mask: []byte{0x02}, Xor: []byte{0}},
			&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: []byte{0}},
			&expr.Rt{Register: 1, Key: expr.RtTCPMSS}, // in host order
			&expr.Byteorder{SourceRegister: 1, DestRegister: 1, Op: expr.ByteorderHton, Len: 2, Size: 2},
			&expr.Exthdr{SourceRegister: 1, Type: 2, Offset: 2, Len: 2, Op: expr.ExthdrOpTcpopt}))
	rule(chainFromClient, "clients reach everything else", accept())
	rule(chainToClient, "replies reach clients", ctState(expr.CtStateBitESTABLISHED|expr.CtStateBitRELATED), accept())
	rule(chainToClient, "nothing else reaches a client", drop())

	rule(chainPost, "traffic to a client keeps its source", x(oif(), inSet(setLinks)), ret())
	rule(chainPost, "clients leave with this provider's address", inPrefix(clientRange, false), x(&expr.Masq{}))
	rule(chainPost, "clients leave with this provider's address", inPrefix(mac.ULA, false), x(&expr.Masq{}))
	rule(chainLeak, "no client's address leaves un-NATed", x(oif(), lookup(sets[setLinks], 1, true)), ipv4(),
		x(&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4}, inSet(setClientAddrs)), drop())
	rule(chainLeak, "no client's address leaves un-NATed", x(oif(), lookup(sets[setLinks], 1, true)), ipv6(),
		x(&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 8, Len: 16}, inSet(setClientAddrs6)), drop())
	// Masquerade takes the host's best source for the destination, of any
	// NIC: while the uplink has no IPv6 address of its own yet (SLAAC's
	// duplicate address detection, after the advertisement's routes) it
	// picks a link's fd9f:2b8:5010:AB::1, which must not leave either.
	rule(chainLeak, "no link's own address leaves (masquerade's pick while the uplink has none)", x(oif(), lookup(sets[setLinks], 1, true)), ipv6(),
		x(&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 8, Len: 16},
			&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 16, Mask: linkHostMask, Xor: make([]byte, 16)},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: mac.LinkID(0).ProviderAddr6().AsSlice()}), drop())
	return nil
}

// linkHostMask keeps an address's /48 and interface id, not its subnet: an
// address of fd9f:2b8:5010::/48 masked with it is that of link 0.
var linkHostMask = []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}

// The expressions rules are made of.

func iif() expr.Any { return &expr.Meta{Key: expr.MetaKeyIIF, Register: 1} }
func oif() expr.Any { return &expr.Meta{Key: expr.MetaKeyOIF, Register: 1} }

// ipv4 comes before reading an IPv4 header field, in an inet table.
func ipv4() []expr.Any {
	return []expr.Any{&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1}, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.NFPROTO_IPV4}}}
}

// ipv6 comes before reading an IPv6 header field.
func ipv6() []expr.Any {
	return []expr.Any{&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1}, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.NFPROTO_IPV6}}}
}

// saddr6IsNot matches an IPv6 source other than a (after ipv6 or an IPv6
// inPrefix).
func saddr6IsNot(a netip.Addr) []expr.Any {
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 8, Len: 16},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: a.AsSlice()},
	}
}

// notInPrefix is inPrefix's negation: the address is of p's family and
// not in p. Its first two expressions are the family's check, which a
// rule that has made it already leaves out ([2:]).
func notInPrefix(p netip.Prefix, dst bool) []expr.Any {
	e := inPrefix(p, dst)
	e[len(e)-1].(*expr.Cmp).Op = expr.CmpOpNeq
	return e
}

func daddr4Is(a netip.Addr) []expr.Any {
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: a.AsSlice()},
	}
}

// inPrefix matches the destination (dst) or source address in p, of
// p's family.
func inPrefix(p netip.Prefix, dst bool) []expr.Any {
	var fam byte = unix.NFPROTO_IPV4
	off, n := uint32(12), uint32(4)
	if p.Addr().Is6() {
		fam, off, n = unix.NFPROTO_IPV6, 8, 16
	}
	if dst {
		off += n
	}
	mask := make([]byte, n)
	for i := range p.Bits() {
		mask[i/8] |= 0x80 >> (i % 8)
	}
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{fam}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: n},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: n, Mask: mask, Xor: make([]byte, n)},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: p.Masked().Addr().AsSlice()},
	}
}

func l4proto(p byte) []expr.Any {
	return []expr.Any{&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1}, &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{p}}}
}

// l4Dport matches protocol proto (UDP or TCP: both keep the destination
// port at offset 2) to port.
func l4Dport(proto byte, port uint16) []expr.Any {
	return append(l4proto(proto),
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{byte(port >> 8), byte(port)}})
}

// icmpType matches ICMP (proto IPPROTO_ICMP) or ICMPv6 of type typ.
func icmpType(proto, typ byte) []expr.Any {
	return append(l4proto(proto),
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 0, Len: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{typ}})
}

// ctState matches a connection in any of the states bits.
func ctState(bits uint32) []expr.Any {
	return []expr.Any{
		&expr.Ct{Register: 1, Key: expr.CtKeySTATE},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: binaryutil.NativeEndian.PutUint32(bits), Xor: make([]byte, 4)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: make([]byte, 4)},
	}
}

func jump(chain string) []expr.Any {
	return []expr.Any{&expr.Verdict{Kind: expr.VerdictJump, Chain: chain}}
}
func drop() []expr.Any   { return []expr.Any{&expr.Verdict{Kind: expr.VerdictDrop}} }
func accept() []expr.Any { return []expr.Any{&expr.Verdict{Kind: expr.VerdictAccept}} }
func ret() []expr.Any    { return []expr.Any{&expr.Verdict{Kind: expr.VerdictReturn}} }
func reject() []expr.Any {
	return []expr.Any{&expr.Reject{Type: unix.NFT_REJECT_ICMPX_UNREACH, Code: unix.NFT_REJECT_ICMPX_PORT_UNREACH}}
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

// forward6WasChain is forwardWasChain for IPv6's switch,
// net.ipv6.conf.all.forwarding ("ipv6_forwarding-was-0"); a kernel
// without IPv6 has none.
func forward6WasChain(v byte) string { return "ipv6_forwarding-was-" + string(v) }

// readForwardWas finds the records an earlier run's table holds: v for
// IPv4, v6 for IPv6 (0 when there is none: a table of a kernel without
// IPv6, or of a router that did not route IPv6); found is false when
// there is no such table (or it has no record).
func readForwardWas(c *nftables.Conn) (v, v6 byte, found bool, err error) {
	t := &nftables.Table{Name: TableName, Family: nftables.TableFamilyINet}
	probe := func(name func(byte) string) (byte, error) {
		for _, v := range []byte{'0', '1'} {
			// Flushing an empty chain changes nothing; it fails with
			// ENOENT when there is no such chain or table.
			c.FlushChain(&nftables.Chain{Name: name(v), Table: t})
			err := c.Flush()
			if err == nil {
				return v, nil
			}
			if !errors.Is(err, unix.ENOENT) {
				return 0, err
			}
		}
		return 0, nil
	}
	if v, err = probe(forwardWasChain); err != nil || v == 0 {
		return 0, 0, false, err
	}
	v6, err = probe(forward6WasChain)
	return v, v6, err == nil, err
}
