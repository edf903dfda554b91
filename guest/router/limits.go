package router

import (
	"cmp"
	"slices"
	"strconv"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"golang.org/x/sys/unix"
)

// LimitsTableName is the router's second table, of the inet family: the
// per-link limits (docs/DESIGN.md, "No client starves another"). Their
// state, each link's count of conntrack entries and its rates, lives in the
// elements of its dynamic sets, so this table is written whole only when
// the router starts, when it is put back after another program removed or
// changed it, and when nf_conntrack_max changed the limits; a NIC that
// comes, changes or goes changes only its own elements, in the
// transaction that rewrites the main table (TableName). A client powering
// its VM off (a NIC change) so gives no other client a fresh count.
const LimitsTableName = "spectrum-router-limits"

// The limits table's sets.
const (
	setLimitLinks = "links"      // iface_index: the provider NICs, as in the main table
	setLinkRate   = "link-rate"  // iface_index, dynamic: each provider NIC's new connections a second
	setLinkConns  = "link-conns" // iface_index, dynamic: each provider NIC's conntrack entries
	setLinkDNS    = "link-dns"   // iface_index . inet_proto, dynamic: each provider NIC's packets to the DNS forwarder
)

// The limits table's chains, each base chain right after the main table's
// of the same hook, so a packet the main table drops is never counted.
const (
	chainLimitGuard = "guard"     // filter, prerouting, after the main table's guard
	chainLimitLink  = "from-link" // guard, from a provider link
	chainLimitDNS   = "dns-input" // filter, input, after the main table's dns-input
)

// Limits are the per-link limits on new connections: see
// docs/DESIGN.md ("No client starves another") for the numbers and why.
type Limits struct {
	// Entries is how many conntrack entries the connections from one
	// provider link may hold at once (ct count); the next new one is
	// dropped.
	Entries uint32
	// Rate and Burst bound the new connections from one provider link
	// a second (limit rate, in packets that start a connection).
	Rate, Burst uint32
}

// The limits' fixed parts.
const (
	limitRate       = 1000  // new connections a second, per link
	limitBurst      = 2000  // ... and at once
	limitEntriesMin = 256   // conntrack entries per link, at least ...
	limitEntriesMax = 16384 // ... and at most: a quarter of one destination's NAT ports
)

// LimitsFor is the per-link limits on a provider whose conntrack table
// holds ctMax entries (nf_conntrack_max): each link a quarter of the table,
// between limitEntriesMin and limitEntriesMax.
func LimitsFor(ctMax uint32) Limits {
	return Limits{Entries: min(max(ctMax/4, limitEntriesMin), limitEntriesMax), Rate: limitRate, Burst: limitBurst}
}

// describe is the limits for the console.
func (l Limits) describe() string {
	itoa := func(n uint32) string { return strconv.FormatUint(uint64(n), 10) }
	return "per-link limits (table inet " + LimitsTableName + "): " + itoa(l.Entries) + " conntrack entries, " +
		itoa(l.Rate) + " new connections a second (burst " + itoa(l.Burst) + "), " +
		itoa(dnsLimitRate) + " DNS packets a second (burst " + itoa(dnsLimitBurst) + ") per protocol"
}

func limitsTable() *nftables.Table {
	return &nftables.Table{Name: LimitsTableName, Family: nftables.TableFamilyINet}
}

// limitSet is the limits table's set name, for element changes and
// lookups (dynamic: made by the packets, each element with its own state).
func limitSet(t *nftables.Table, name string) *nftables.Set {
	s := &nftables.Set{Table: t, Name: name, KeyType: nftables.TypeIFIndex, KeyByteOrder: binaryutil.NativeEndian}
	if name != setLimitLinks {
		s.Dynamic, s.Size = true, 65536
	}
	if name == setLinkDNS {
		s.KeyType = nftables.MustConcatSetType(nftables.TypeIFIndex, nftables.TypeInetProto)
		s.Concatenation, s.KeyByteOrder = true, nil
	}
	return s
}

// writeLimitsTable queues the whole limits table on c, replacing any table
// of the same name (and so every link's count), for one Flush. In nft
// syntax (L each provider NIC; N, RATE and BURST the Limits; P the DNS
// forwarder's port):
//
//	table inet spectrum-router-limits {
//		set links      { type iface_index; elements = { L, ... } }
//		set link-rate  { type iface_index; size 65536; flags dynamic; }
//		set link-conns { type iface_index; size 65536; flags dynamic; }
//		set link-dns   { type iface_index . inet_proto; size 65536; flags dynamic; }
//		chain guard { type filter hook prerouting priority -149; policy accept;
//			iif @links jump from-link
//		}
//		chain from-link {
//			ct state new add @link-rate { iif limit rate over RATE/second burst BURST packets } drop
//			ct state new add @link-conns { iif ct count over N } drop
//		}
//		chain dns-input { type filter hook input priority filter - 9; policy accept;
//			iif @links udp dport P add @link-dns { iif . meta l4proto limit rate over 200/second burst 400 packets } drop
//			iif @links tcp dport P add @link-dns { iif . meta l4proto limit rate over 200/second burst 400 packets } drop
//		}
//	}
func writeLimitsTable(c *nftables.Conn, links []Link, dnsPort uint16, l Limits) error {
	t := limitsTable()
	c.AddTable(t)
	c.DelTable(t)
	c.AddTable(t)
	links = slices.SortedFunc(slices.Values(links), func(a, b Link) int { return cmp.Compare(a.Index, b.Index) })
	var elems []nftables.SetElement
	for _, l := range links {
		elems = append(elems, nftables.SetElement{Key: binaryutil.NativeEndian.PutUint32(l.Index)})
	}
	sets := map[string]*nftables.Set{}
	for _, name := range []string{setLimitLinks, setLinkRate, setLinkConns, setLinkDNS} {
		s := limitSet(t, name)
		var es []nftables.SetElement
		if name == setLimitLinks {
			es = elems
		}
		if err := c.AddSet(s, es); err != nil {
			return err
		}
		sets[name] = s
	}
	policy := nftables.ChainPolicyAccept
	chains := map[string]*nftables.Chain{
		chainLimitGuard: c.AddChain(&nftables.Chain{Name: chainLimitGuard, Table: t, Type: nftables.ChainTypeFilter,
			Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityRef(-149), Policy: &policy}),
		chainLimitLink: c.AddChain(&nftables.Chain{Name: chainLimitLink, Table: t}),
		chainLimitDNS: c.AddChain(&nftables.Chain{Name: chainLimitDNS, Table: t, Type: nftables.ChainTypeFilter,
			Hooknum: nftables.ChainHookInput, Priority: nftables.ChainPriorityRef(*nftables.ChainPriorityFilter - 9), Policy: &policy}),
	}
	rule := func(chain, comment string, es ...[]expr.Any) {
		c.AddRule(&nftables.Rule{Table: t, Chain: chains[chain], Exprs: slices.Concat(es...), UserData: userdata.AppendString(nil, userdata.TypeComment, comment)})
	}
	inLinks := []expr.Any{iif(), &expr.Lookup{SourceRegister: 1, SetName: setLimitLinks, SetID: sets[setLimitLinks].ID}}
	add := func(set string, key []expr.Any, e expr.Any) []expr.Any {
		return append(key, &expr.Dynset{SrcRegKey: 1, SetName: set, SetID: sets[set].ID, Operation: unix.NFT_DYNSET_OP_ADD, Exprs: []expr.Any{e}})
	}
	rule(chainLimitGuard, "from a provider link", inLinks, jump(chainLimitLink))
	rule(chainLimitLink, "new connections a second, per link", ctState(expr.CtStateBitNEW), add(setLinkRate, []expr.Any{iif()},
		&expr.Limit{Type: expr.LimitTypePkts, Rate: uint64(l.Rate), Over: true, Unit: expr.LimitTimeSecond, Burst: l.Burst}), drop())
	rule(chainLimitLink, "conntrack entries, per link", ctState(expr.CtStateBitNEW), add(setLinkConns, []expr.Any{iif()},
		&expr.Connlimit{Count: l.Entries, Flags: expr.NFT_CONNLIMIT_F_INV}), drop())
	for _, p := range []byte{unix.IPPROTO_UDP, unix.IPPROTO_TCP} {
		rule(chainLimitDNS, "a client's share of the forwarder", inLinks, l4Dport(p, dnsPort),
			add(setLinkDNS, []expr.Any{iif(), &expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 9}},
				&expr.Limit{Type: expr.LimitTypePkts, Rate: dnsLimitRate, Over: true, Unit: expr.LimitTimeSecond, Burst: dnsLimitBurst}), drop())
	}
	return nil
}

// queueLinkLimits queues, for one Flush, the limits table's change for
// the provider NIC at index: it is in the table's links (in) or not, and
// its state in the dynamic sets starts again either way (the NIC is new,
// has a new client, or is gone: its entries were flushed). Each element is
// added before it is deleted, in the same transaction, so that deleting
// one no packet made yet is not an error.
func queueLinkLimits(c *nftables.Conn, index uint32, in bool) error {
	t := limitsTable()
	ix := binaryutil.NativeEndian.PutUint32(index)
	key := func(b ...byte) []nftables.SetElement {
		return []nftables.SetElement{{Key: append(slices.Clone(ix), b...)}}
	}
	for _, ch := range []struct {
		set  string
		keys []nftables.SetElement
		keep bool
	}{
		{setLimitLinks, key(), in},
		{setLinkRate, key(), false},
		{setLinkConns, key(), false},
		{setLinkDNS, key(unix.IPPROTO_UDP, 0, 0, 0), false},
		{setLinkDNS, key(unix.IPPROTO_TCP, 0, 0, 0), false},
	} {
		s := limitSet(t, ch.set)
		if err := c.SetAddElements(s, ch.keys); err != nil {
			return err
		}
		if !ch.keep {
			if err := c.SetDeleteElements(s, ch.keys); err != nil {
				return err
			}
		}
	}
	return nil
}

// deleteLimitsTable queues the removal of the limits table, there or not
// (adding it first makes the delete valid).
func deleteLimitsTable(c *nftables.Conn) {
	c.AddTable(limitsTable())
	c.DelTable(limitsTable())
}
