package router

import (
	"cmp"
	"errors"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"github.com/jsimonetti/rtnetlink/v2"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"spectrum-os.org/netcfg/internal/mac"
)

// The guards keep clients apart, and their traffic from being forwarded
// without the router's main table, whatever becomes of that table: from
// another program's `nft flush ruleset` (the first line of Debian's
// /etc/nftables.conf) until the router has put it back (monitor.go),
// forwarding is on and nothing else NATs or filters. Two of them, for
// both families (C the clients' range, 100.64.0.0/16 or
// fd9f:2b8:5010::/48).
//
// The guard table, GuardTableName, is owned by a netlink socket of the
// router's (NFT_TABLE_F_OWNER): nobody else can change or delete it, `nft
// flush ruleset` leaves it, and it goes when that socket closes (Stop, or
// a crash, after which the main table stays). The main table's forward
// chain sets GuardMark on every packet from or to a client address it
// forwards (seenRules), so while the main table is there the guard table
// drops nothing; while it is gone, nothing is forwarded from or to a
// client: no client's packet leaves an uplink un-NATed, nothing reaches a
// client.
//
//	table inet spectrum-router-guard {             # flags owner
//		chain forward { type filter hook forward priority filter + 10; policy accept;
//			meta mark & 0x10000000 == 0 ip saddr C drop
//			meta mark & 0x10000000 == 0 ip daddr C drop   # and with ip6 saddr, ip6 daddr
//		}
//	}
//
// The guard rules, policy routing, which no nftables change touches and a
// crash leaves (they go at Stop): no client's address is routed to
// another client's, even after a crash followed by a flush.
//
//	ip rule 10: iif lo goto 12          # the provider's own traffic: not this guard's
//	ip rule 11: from C to C prohibit
//	ip rule 12: nop
//
// The provider's own traffic is routed with iif lo: a chained provider's
// own address on its uplink is a client's (100.64.A.B), and a provider's
// own IPv6 to its client comes from its fd9f:2b8:5010:AB::1. Addresses of
// the provider itself are reached through the local table first (rule
// 0). A client forging another source is stopped by the strict rp_filter
// the agent sets on each provider NIC (IPv4) and the table's anti-spoofing.
const GuardTableName = "spectrum-router-guard"

// GuardPriority is the priority of the first guard rule. Not 1, right
// after the local table's rule: the kernel gives a rule added without a
// priority (wg-quick's "not fwmark 51820 table 51820" and then "table
// main suppress_prefixlength 0") one less than the first rule after the
// local one's, so with the guard at 1 both got 0 and, in the order added,
// wg-quick's table took the replies to clients and the provider's own LAN
// traffic into the tunnel. From 10 down, such rules keep their order.
const GuardPriority = 10

// GuardMark is the bit of the packet mark (meta mark) that the main table
// ORs into every packet from or to a client address it forwards, other
// bits kept, and the guard table demands. Bit 28: outside the bits the
// programs a provider may run test under a mask (Tailscale 0xff0000,
// Kubernetes' 0xc000, Cilium's 0xf00, mwan3's 0x3f00); wg-quick (51820),
// Mullvad and NordVPN compare the whole mark, which only their own
// packets carry, never a forwarded one. It is set in the forward hook,
// after every routing decision, so it steers no route.
const GuardMark = 0x10000000

// guardRule is one of the guard rules.
type guardRule struct {
	prio uint32
	text string // as ip rule shows it, after "N: "
	msg  rtnetlink.RuleMessage
}

// guardRules is the guard rules for the clients' range c.
func guardRules(c netip.Prefix) []guardRule {
	family, bits := uint8(unix.AF_INET), uint8(c.Bits())
	if c.Addr().Is6() {
		family = unix.AF_INET6
	}
	ip := ptr(net.IP(c.Addr().AsSlice()))
	rule := func(prio uint32, text string, action uint8, a rtnetlink.RuleAttributes, bits uint8) guardRule {
		a.Priority = ptr(prio)
		return guardRule{prio, text, rtnetlink.RuleMessage{Family: family, Action: action, SrcLength: bits, DstLength: bits, Attributes: &a}}
	}
	s, last := c.String(), uint32(GuardPriority+2)
	return []guardRule{
		rule(GuardPriority, "iif lo goto "+strconv.Itoa(int(last)), unix.FR_ACT_GOTO, rtnetlink.RuleAttributes{IIFName: ptr("lo"), Goto: ptr(last)}, 0),
		rule(GuardPriority+1, "from "+s+" to "+s+" prohibit", unix.FR_ACT_PROHIBIT, rtnetlink.RuleAttributes{Src: ip, Dst: ip}, bits),
		rule(last, "nop", unix.FR_ACT_NOP, rtnetlink.RuleAttributes{}, 0),
	}
}

// guardFamilies is each family's guard rules, with the ip command that
// shows them (for the log).
var guardFamilies = []struct {
	cmd   string
	rules []guardRule
}{
	{"ip rule", guardRules(clientRange)},
	{"ip -6 rule", guardRules(mac.ULA)},
}

func ptr[T any](v T) *T { return &v }

// guardText is a family's guard rules for the log.
func guardText(cmd string, rules []guardRule) string {
	parts := make([]string, len(rules))
	for i, g := range rules {
		parts[i] = strconv.Itoa(int(g.prio)) + ": " + g.text
	}
	return cmd + "s " + strings.Join(parts, "; ")
}

// addGuard adds the guard rules (the nop first, so that the goto always
// has its target, and the goto before the rule it skips), or finds those
// an earlier run left, then the guard table, and logs each. Any failure
// stops the start (fail closed); a kernel without IPv6 gets the IPv4
// rules only, and a line saying so.
func (r *Router) addGuard() error {
	c, err := rtnetlink.Dial(nil)
	if err != nil {
		return wrap("open rtnetlink", err)
	}
	defer c.Close()
	for _, f := range guardFamilies {
		order := append([]guardRule{f.rules[len(f.rules)-1]}, f.rules[:len(f.rules)-1]...)
		kept, none := 0, false
		for i, g := range order {
			m := g.msg
			m.Attributes = ptr(*g.msg.Attributes)
			err := c.Rule.Add(&m)
			if i == 0 && m.Family == unix.AF_INET6 && errors.Is(err, unix.EAFNOSUPPORT) {
				none = true
				break
			}
			if errors.Is(err, unix.EEXIST) {
				kept++
			} else if err != nil {
				return wrap("add "+f.cmd+" "+strconv.Itoa(int(g.prio))+": "+g.text, err)
			}
		}
		switch {
		case none:
			r.say("no IPv6 in this kernel: no " + f.cmd + "s")
		case kept == 0:
			r.say("added " + guardText(f.cmd, f.rules))
		case kept == len(f.rules):
			r.say("kept the earlier run's " + guardText(f.cmd, f.rules))
		default:
			r.say("added " + guardText(f.cmd, f.rules) + " (" + strconv.Itoa(kept) + " kept from an earlier run)")
		}
	}
	if r.guard, err = netlink.Dial(unix.NETLINK_NETFILTER, nil); err != nil {
		return wrap("add table inet "+GuardTableName+": open nftables", err)
	}
	if err := commitRaw(r.guard, guardTable()); err != nil {
		return wrap("add table inet "+GuardTableName, err)
	}
	r.say("added table inet " + GuardTableName + " (owned by the router: nothing of a client's is forwarded without table inet " + TableName + ")")
	return nil
}

// removeGuard removes the guard table and then the guard rules, in the
// order that never leaves a goto without its target.
func (r *Router) removeGuard() error {
	var errs []error
	if r.guard != nil {
		del := nftMsg(unix.NFT_MSG_DELTABLE, netlink.Acknowledge, []netlink.Attribute{{Type: unix.NFTA_TABLE_NAME, Data: []byte(GuardTableName + "\x00")}})
		if err := commitRaw(r.guard, []netlink.Message{del}); err != nil {
			errs = append(errs, wrap("remove table inet "+GuardTableName, err))
		} else {
			r.say("removed table inet " + GuardTableName)
		}
		// Closing the socket would remove it too.
		_ = r.guard.Close()
		r.guard = nil
	}
	c, err := rtnetlink.Dial(nil)
	if err != nil {
		return errors.Join(append(errs, wrap("remove the ip rules: open rtnetlink", err))...)
	}
	defer c.Close()
	for _, f := range guardFamilies {
		var ferr error
		for _, g := range f.rules {
			m := g.msg
			m.Attributes = ptr(*g.msg.Attributes)
			if err := c.Rule.Delete(&m); err != nil && !errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.EAFNOSUPPORT) {
				ferr = wrap("remove "+f.cmd+" "+strconv.Itoa(int(g.prio))+": "+g.text, err)
				errs = append(errs, ferr)
			}
		}
		if ferr == nil {
			r.say("removed " + guardText(f.cmd, f.rules))
		}
	}
	return errors.Join(errs...)
}

// seenRules is the main table's rules that mark what it forwards from or
// to a client address (the guard table passes only those), for its
// forward chain, before any rule that ends the chain:
//
//	ip saddr 100.64.0.0/16 meta mark set meta mark | 0x10000000
//	ip daddr 100.64.0.0/16 meta mark set meta mark | 0x10000000
//	ip6 saddr fd9f:2b8:5010::/48 meta mark set meta mark | 0x10000000
//	ip6 daddr fd9f:2b8:5010::/48 meta mark set meta mark | 0x10000000
func seenRules() [][]expr.Any {
	var rs [][]expr.Any
	for _, p := range []netip.Prefix{clientRange, mac.ULA} {
		for _, dst := range []bool{false, true} {
			rs = append(rs, append(inPrefix(p, dst),
				&expr.Meta{Key: expr.MetaKeyMARK, Register: 1},
				&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
					Mask: binaryutil.NativeEndian.PutUint32(^uint32(GuardMark)), Xor: binaryutil.NativeEndian.PutUint32(GuardMark)},
				&expr.Meta{Key: expr.MetaKeyMARK, Register: 1, SourceRegister: true}))
		}
	}
	return rs
}

// nftTableFOwner is NFT_TABLE_F_OWNER (Linux 5.12), which
// golang.org/x/sys/unix does not name.
const nftTableFOwner = 0x2

// seenComment is the comment of the seen rules.
const seenComment = "seen by this table: the guard table passes it"

// guardTable is the guard table's transaction (see GuardTableName), which
// google/nftables cannot make: it sends a table's flags as 0.
func guardTable() []netlink.Message {
	msgs := []netlink.Message{nftMsg(unix.NFT_MSG_NEWTABLE, netlink.Create|netlink.Excl|netlink.Acknowledge, []netlink.Attribute{
		{Type: unix.NFTA_TABLE_NAME, Data: []byte(GuardTableName + "\x00")},
		{Type: unix.NFTA_TABLE_FLAGS, Data: binaryutil.BigEndian.PutUint32(nftTableFOwner)},
	})}
	hook := marshalAttrs([]netlink.Attribute{
		{Type: unix.NFTA_HOOK_HOOKNUM, Data: binaryutil.BigEndian.PutUint32(unix.NF_INET_FORWARD)},
		{Type: unix.NFTA_HOOK_PRIORITY, Data: binaryutil.BigEndian.PutUint32(10)},
	})
	msgs = append(msgs, nftMsg(unix.NFT_MSG_NEWCHAIN, netlink.Create|netlink.Acknowledge, []netlink.Attribute{
		{Type: unix.NFTA_CHAIN_TABLE, Data: []byte(GuardTableName + "\x00")},
		{Type: unix.NFTA_CHAIN_NAME, Data: []byte("forward\x00")},
		{Type: unix.NLA_F_NESTED | unix.NFTA_CHAIN_HOOK, Data: hook},
		{Type: unix.NFTA_CHAIN_POLICY, Data: binaryutil.BigEndian.PutUint32(1)}, // NF_ACCEPT
		{Type: unix.NFTA_CHAIN_TYPE, Data: []byte("filter\x00")},
	}))
	unmarked := []expr.Any{
		&expr.Meta{Key: expr.MetaKeyMARK, Register: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: binaryutil.NativeEndian.PutUint32(GuardMark), Xor: make([]byte, 4)},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: make([]byte, 4)},
	}
	for _, p := range []netip.Prefix{clientRange, mac.ULA} {
		for _, dst := range []bool{false, true} {
			var list []netlink.Attribute
			for _, e := range slices.Concat(unmarked, inPrefix(p, dst), drop()) {
				b, err := expr.Marshal(unix.NFPROTO_INET, e)
				if err != nil {
					panic(err) // the expressions are constant
				}
				list = append(list, netlink.Attribute{Type: unix.NLA_F_NESTED | unix.NFTA_LIST_ELEM, Data: b})
			}
			exprs := marshalAttrs(list)
			msgs = append(msgs, nftMsg(unix.NFT_MSG_NEWRULE, netlink.Create|netlink.Append|netlink.Acknowledge, []netlink.Attribute{
				{Type: unix.NFTA_RULE_TABLE, Data: []byte(GuardTableName + "\x00")},
				{Type: unix.NFTA_RULE_CHAIN, Data: []byte("forward\x00")},
				{Type: unix.NLA_F_NESTED | unix.NFTA_RULE_EXPRESSIONS, Data: exprs},
				{Type: unix.NFTA_RULE_USERDATA, Data: userdata.AppendString(nil, userdata.TypeComment,
					"not seen by table inet "+TableName+", which is gone: nothing of a client's is forwarded")},
			}))
		}
	}
	return msgs
}

// nftMsg is an nf_tables request of type typ about the inet family.
func nftMsg(typ int, flags netlink.HeaderFlags, attrs []netlink.Attribute) netlink.Message {
	return netlink.Message{
		Header: netlink.Header{Type: netlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8 | typ), Flags: netlink.Request | flags},
		Data:   append([]byte{unix.NFPROTO_INET, unix.NFNETLINK_V0, 0, 0}, marshalAttrs(attrs)...),
	}
}

// marshalAttrs is attrs in netlink's wire form; they are the router's
// own, constant but for names, so an error is a bug.
func marshalAttrs(attrs []netlink.Attribute) []byte {
	b, err := netlink.MarshalAttributes(attrs)
	if err != nil {
		panic(err)
	}
	return b
}

// commitRaw sends msgs on c as one batch (one transaction) and reads an
// acknowledgement or error for each, all of them even after an error, so
// that none is left for the next batch; it returns the first error.
func commitRaw(c *netlink.Conn, msgs []netlink.Message) error {
	mark := func(typ int) []netlink.Message {
		return []netlink.Message{{Header: netlink.Header{Type: netlink.HeaderType(typ), Flags: netlink.Request},
			Data: []byte{unix.AF_UNSPEC, unix.NFNETLINK_V0, 0, unix.NFNL_SUBSYS_NFTABLES}}}
	}
	if _, err := c.SendMessages(slices.Concat(mark(unix.NFNL_MSG_BATCH_BEGIN), msgs, mark(unix.NFNL_MSG_BATCH_END))); err != nil {
		return err
	}
	var first error
	for n := 0; n < len(msgs); {
		got, err := c.Receive()
		if err != nil {
			first = cmp.Or(first, err)
			n++
			continue
		}
		n += len(got)
	}
	return first
}
