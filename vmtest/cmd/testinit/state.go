package main

import (
	"fmt"
	"net"
	"os"
	"strings"

	"github.com/jsimonetti/rtnetlink/v2"
	"golang.org/x/sys/unix"
)

// dumpState reports every link, IPv4 address and main-table IPv4 route, read
// back through rtnetlink, in the spirit of `ip link/addr/route`:
//
//	link eth0 index=2 mac=0a:b3:ec:00:a5:46 up=true rp_filter=0
//	addr eth0 100.64.165.70/16
//	route default via 169.254.165.70 dev eth0 metric 2 onlink
//	route 100.64.165.70/32 dev eth1 scope link
func dumpState() error {
	c, err := rtnetlink.Dial(nil)
	if err != nil {
		return err
	}
	defer c.Close()
	links, err := c.Link.List()
	if err != nil {
		return fmt.Errorf("list links: %w", err)
	}
	names := map[uint32]string{}
	for _, l := range links {
		names[l.Index] = l.Attributes.Name
		rp, _ := os.ReadFile("/proc/sys/net/ipv4/conf/" + l.Attributes.Name + "/rp_filter")
		report("link %s index=%d mac=%s up=%t rp_filter=%s", l.Attributes.Name, l.Index,
			l.Attributes.Address, l.Flags&unix.IFF_UP != 0, strings.TrimSpace(string(rp)))
	}
	addrs, err := c.Address.List()
	if err != nil {
		return fmt.Errorf("list addresses: %w", err)
	}
	for _, a := range addrs {
		if a.Family != unix.AF_INET {
			continue
		}
		report("addr %s %s/%d", names[a.Index], a.Attributes.Address, a.PrefixLength)
	}
	routes, err := c.Route.List()
	if err != nil {
		return fmt.Errorf("list routes: %w", err)
	}
	for _, r := range routes {
		if r.Family != unix.AF_INET || r.Table != unix.RT_TABLE_MAIN {
			continue
		}
		report("route %s", formatRoute(r, names))
	}
	report("state done")
	return nil
}

func formatRoute(r rtnetlink.RouteMessage, names map[uint32]string) string {
	dst := "default"
	if r.DstLength != 0 || r.Attributes.Dst != nil {
		dst = (&net.IPNet{IP: r.Attributes.Dst, Mask: net.CIDRMask(int(r.DstLength), 32)}).String()
	}
	s := dst
	if r.Attributes.Gateway != nil {
		s += " via " + r.Attributes.Gateway.String()
	}
	s += " dev " + names[r.Attributes.OutIface]
	if r.Attributes.Priority != 0 {
		s += fmt.Sprintf(" metric %d", r.Attributes.Priority)
	}
	if r.Scope == unix.RT_SCOPE_LINK {
		s += " scope link"
	}
	if r.Flags&unix.RTNH_F_ONLINK != 0 {
		s += " onlink"
	}
	return s
}
