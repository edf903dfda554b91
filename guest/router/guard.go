package router

import (
	"errors"
	"net"
	"strconv"

	"github.com/jsimonetti/rtnetlink/v2"
	"golang.org/x/sys/unix"
)

// GuardPriority is the priority of the router's policy routing rule, the
// guard: right after the kernel's rule for local addresses (0), before
// any of the provider's own (a VPN's, say).
const GuardPriority = 1

// The guard: "ip rule add priority 1 from 100.64.0.0/16 to 100.64.0.0/16
// prohibit". No packet from a client's address is routed to another
// client's address, whatever the nftables ruleset holds: while the table
// is gone (from another program's `nft flush ruleset` until the router
// has put it back), clients stay apart all the same, which the table
// alone cannot promise. Policy routing is not nftables, so a flush of the
// ruleset does not touch it. Addresses of the provider itself are
// reached through the local table first (priority 0); the provider's own
// traffic to a client never has a client's source. A client forging
// another source is stopped by the strict rp_filter the agent sets on
// each provider NIC, which does not depend on the table either. The rule
// stays after a crash, as the table does, and goes at Stop after it.
var guard = rtnetlink.RuleMessage{
	Family: unix.AF_INET, DstLength: 16, SrcLength: 16, Action: unix.FR_ACT_PROHIBIT,
	Attributes: &rtnetlink.RuleAttributes{
		Src: ptr(net.IP(clientRange.Addr().AsSlice())), Dst: ptr(net.IP(clientRange.Addr().AsSlice())),
		Priority: ptr(uint32(GuardPriority)),
	},
}

func ptr[T any](v T) *T { return &v }

// guardText is the guard as ip rule shows it, for the log.
var guardText = "ip rule " + strconv.Itoa(GuardPriority) + ": from " + clientRange.String() + " to " + clientRange.String() + " prohibit"

// addGuard adds the guard, or finds the one an earlier run left, and
// logs which.
func (r *Router) addGuard() error {
	c, err := rtnetlink.Dial(nil)
	if err != nil {
		return wrap("open rtnetlink", err)
	}
	defer c.Close()
	g := guard
	switch err := c.Rule.Add(&g); {
	case errors.Is(err, unix.EEXIST):
		r.say("kept the earlier run's " + guardText)
	case err != nil:
		return wrap("add "+guardText, err)
	default:
		r.say("added " + guardText)
	}
	return nil
}

// removeGuard removes the guard.
func (r *Router) removeGuard() error {
	c, err := rtnetlink.Dial(nil)
	if err != nil {
		return wrap("remove "+guardText+": open rtnetlink", err)
	}
	defer c.Close()
	g := guard
	if err := c.Rule.Delete(&g); err != nil && !errors.Is(err, unix.ENOENT) {
		return wrap("remove "+guardText, err)
	}
	r.say("removed " + guardText)
	return nil
}
