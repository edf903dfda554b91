package main

import (
	"fmt"
	"net"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/jsimonetti/rtnetlink/v2"
	"golang.org/x/sys/unix"
)

// readState returns every link, IPv4 address and main-table IPv4 route, read
// back through rtnetlink, in the spirit of `ip link/addr/route`:
//
//	link eth0 index=2 mac=0a:b3:ec:00:a5:46 up=true rp_filter=0
//	addr eth0 100.64.165.70/16
//	route default via 169.254.165.70 dev eth0 metric 2 onlink
//	route 100.64.165.70/32 dev eth1 scope link
func readState() ([]string, error) {
	var out []string
	report := func(format string, args ...any) { out = append(out, fmt.Sprintf(format, args...)) }
	c, err := rtnetlink.Dial(nil)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	links, err := c.Link.List()
	if err != nil {
		return nil, fmt.Errorf("list links: %w", err)
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
		return nil, fmt.Errorf("list addresses: %w", err)
	}
	for _, a := range addrs {
		if a.Family != unix.AF_INET {
			continue
		}
		report("addr %s %s/%d", names[a.Index], a.Attributes.Address, a.PrefixLength)
	}
	routes, err := c.Route.List()
	if err != nil {
		return nil, fmt.Errorf("list routes: %w", err)
	}
	for _, r := range routes {
		if r.Family != unix.AF_INET || r.Table != unix.RT_TABLE_MAIN {
			continue
		}
		report("route %s", formatRoute(r, names))
	}
	return out, nil
}

// stateReporter reports the state as a numbered dump ending in
// "state done n=N", and again whenever it changes, so the host sees what
// the agent did with NICs plugged in later.
type stateReporter struct {
	n    int
	last []string
}

func (s *stateReporter) check() {
	lines, err := readState()
	if err != nil {
		report("fail state: %v", err)
		return
	}
	if s.n > 0 && slices.Equal(lines, s.last) {
		return
	}
	s.n++
	s.last = lines
	for _, l := range lines {
		report("%s", l)
	}
	report("state done n=%d", s.n)
}

// follow checks the state every interval, forever.
func (s *stateReporter) follow(interval time.Duration) {
	for {
		time.Sleep(interval)
		s.check()
	}
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
