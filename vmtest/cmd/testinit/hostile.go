package main

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jsimonetti/rtnetlink/v2"
	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv6"
	"golang.org/x/sys/unix"
)

// The steps of a hostile client and of the provider it attacks (issue 17):
// a provider's TCP service, a client's probes of it, a client's Router
// Advertisement, and the provider's IPv6 state for the host to check.

// listenTCP serves TCP on [::]:port (both families) for as long as the VM
// runs: each connection is reported ("accept PORT from ADDR") and gets one
// line, "spectrum-listen", before it is closed. It brings the loopback NIC
// up (as any real system has it; the test init leaves it down) and
// connects to itself on 127.0.0.1 and ::1, so that "listen PORT ok" means
// the service answers: a probe that is refused was refused on the way, not
// for want of a listener.
func listenTCP(port string) {
	if err := loopbackUp(); err != nil {
		report("fail listen %s: lo: %v", port, err)
		return
	}
	l, err := listenDual(port)
	if err != nil {
		report("fail listen %s: %v", port, err)
		return
	}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				report("fail listen %s: %v", port, err)
				return
			}
			report("accept %s from %s", port, c.RemoteAddr())
			io.WriteString(c, "spectrum-listen\n")
			c.Close()
		}
	}()
	for _, self := range []string{"127.0.0.1", "::1"} {
		c, err := net.DialTimeout("tcp", net.JoinHostPort(self, port), 5*time.Second)
		if err != nil {
			report("fail listen %s: %s: %v", port, self, err)
			return
		}
		c.Close()
	}
	report("listen %s ok", port)
}

// listenDual listens on TCP [::]:port for both families. By hand: Go
// decides once per process whether the host has IPv6, by binding to ::1,
// and the test init's first socket comes before lo is up, so Go's own
// "[::]" would listen on IPv4 only.
func listenDual(port string) (net.Listener, error) {
	p, err := strconv.Atoi(port)
	if err != nil {
		return nil, err
	}
	fd, err := unix.Socket(unix.AF_INET6, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(fd), "listen")
	defer f.Close()
	if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, 0); err != nil {
		return nil, err
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); err != nil {
		return nil, err
	}
	if err := unix.Bind(fd, &unix.SockaddrInet6{Port: p}); err != nil {
		return nil, err
	}
	if err := unix.Listen(fd, 16); err != nil {
		return nil, err
	}
	return net.FileListener(f)
}

// loopbackUp sets lo up.
func loopbackUp() error {
	c, err := rtnetlink.Dial(nil)
	if err != nil {
		return err
	}
	defer c.Close()
	return c.Link.Set(&rtnetlink.LinkMessage{Family: unix.AF_UNSPEC, Index: 1, Flags: unix.IFF_UP, Change: unix.IFF_UP})
}

// noconnect tries a TCP connection to ADDR/PORT (a link-local IPv6 ADDR
// without a zone is taken on the NIC of the default route) and expects
// none: it reports "noconnect ADDR/PORT ok err=ERRNO ms=N" (how fast it
// failed: a reset or ICMP error comes at once, a drop only at the 3 s
// timeout, err=timeout) or "fail noconnect ADDR/PORT connected local=...".
func noconnect(arg string) {
	addr, port, ok := strings.Cut(arg, "/")
	ip, err := netip.ParseAddr(addr)
	if !ok || err != nil {
		report("fail noconnect %s: want ADDR/PORT", arg)
		return
	}
	if ip.Is6() && ip.IsLinkLocalUnicast() && ip.Zone() == "" {
		dev, err := defaultRouteNIC()
		if err != nil {
			report("fail noconnect %s: %v", arg, err)
			return
		}
		ip = ip.WithZone(dev)
	}
	start := time.Now()
	c, err := net.DialTimeout("tcp", net.JoinHostPort(ip.String(), port), 3*time.Second)
	ms := time.Since(start).Milliseconds()
	if err == nil {
		report("fail noconnect %s connected local=%s ms=%d", arg, c.LocalAddr(), ms)
		c.Close()
		return
	}
	report("noconnect %s ok err=%s ms=%d", arg, errName(err), ms)
}

// errName is a dial error as one word: the errno's name (ECONNREFUSED,
// EHOSTUNREACH, ...) or "timeout".
func errName(err error) string {
	var errno syscall.Errno
	var ne net.Error
	switch {
	case errors.As(err, &errno):
		if n := unix.ErrnoName(errno); n != "" {
			return n
		}
		return "errno" + strconv.Itoa(int(errno))
	case errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	}
	return strings.ReplaceAll(err.Error(), " ", "_")
}

// defaultRouteNIC is the name of the NIC of the IPv4 default route.
func defaultRouteNIC() (string, error) {
	c, err := rtnetlink.Dial(nil)
	if err != nil {
		return "", err
	}
	defer c.Close()
	routes, err := c.Route.List()
	if err != nil {
		return "", err
	}
	for _, r := range routes {
		if r.Family == unix.AF_INET && r.DstLength == 0 && r.Table == unix.RT_TABLE_MAIN && r.Attributes.OutIface != 0 {
			l, err := c.Link.Get(r.Attributes.OutIface)
			if err != nil {
				return "", err
			}
			return l.Attributes.Name, nil
		}
	}
	return "", errors.New("no IPv4 default route")
}

// sendRA sends, on the NIC of the default route, three IPv6 Router
// Advertisements to all nodes (ff02::1), a second apart, as a hostile
// client would to its provider: router preference high, router lifetime
// 1800 s, and a Prefix Information option for prefix (a /64) with the
// on-link (L) and autonomous (A) flags, so that a host accepting it takes
// a default route via this VM and a SLAAC address in prefix. The source is
// the NIC's link-local address (once DAD is done), hop limit 255, as RFC
// 4861 requires of a valid RA. Reports "ra sent dev NIC src=ADDR
// prefix=PREFIX n=3".
func sendRA(prefix string) {
	pfx, err := netip.ParsePrefix(prefix)
	if err != nil || !pfx.Addr().Is6() || pfx.Bits() != 64 {
		report("fail ra %s: want an IPv6 /64", prefix)
		return
	}
	dev, err := defaultRouteNIC()
	if err != nil {
		report("fail ra: %v", err)
		return
	}
	ifi, err := net.InterfaceByName(dev)
	if err != nil {
		report("fail ra: %v", err)
		return
	}
	src, err := linkLocal(ifi, 30*time.Second)
	if err != nil {
		report("fail ra: %s: %v", dev, err)
		return
	}
	c, err := icmp.ListenPacket("ip6:ipv6-icmp", src.String()+"%"+dev)
	if err != nil {
		report("fail ra: %v", err)
		return
	}
	defer c.Close()
	p := c.IPv6PacketConn()
	if err := p.SetMulticastHopLimit(255); err != nil {
		report("fail ra: %v", err)
		return
	}
	if err := p.SetMulticastInterface(ifi); err != nil {
		report("fail ra: %v", err)
		return
	}
	msg := icmp.Message{Type: ipv6.ICMPTypeRouterAdvertisement, Body: &icmp.RawBody{Data: raBody(ifi.HardwareAddr, pfx)}}
	// The kernel fills in the checksum of an ICMPv6 raw socket.
	b, err := msg.Marshal(nil)
	if err != nil {
		report("fail ra: %v", err)
		return
	}
	allNodes := &net.IPAddr{IP: net.ParseIP("ff02::1"), Zone: dev}
	for i := 0; i < 3; i++ {
		if i > 0 {
			time.Sleep(time.Second)
		}
		if _, err := c.WriteTo(b, allNodes); err != nil {
			report("fail ra: %v", err)
			return
		}
	}
	report("ra sent dev %s src=%s prefix=%s n=3", dev, src, pfx)
}

// raBody is a Router Advertisement after its type, code and checksum:
// the RA's fields, a Source Link-Layer Address option and a Prefix
// Information option for pfx (RFC 4861 4.2, 4.6.1, 4.6.2; RFC 4191's
// preference).
func raBody(hw net.HardwareAddr, pfx netip.Prefix) []byte {
	b := []byte{
		64,         // cur hop limit
		0x08,       // M=0 O=0, router preference 01: high
		0x07, 0x08, // router lifetime 1800 s
		0, 0, 0, 0, // reachable time
		0, 0, 0, 0, // retrans timer
	}
	if len(hw) == 6 {
		b = append(append(b, 1, 1), hw...) // source link-layer address
	}
	b = append(b, 3, 4, byte(pfx.Bits()), 0xc0) // prefix information, L and A
	b = binary.BigEndian.AppendUint32(b, 86400) // valid lifetime
	b = binary.BigEndian.AppendUint32(b, 14400) // preferred lifetime
	b = append(b, 0, 0, 0, 0)                   // reserved
	a := pfx.Masked().Addr().As16()
	return append(b, a[:]...)
}

// linkLocal waits up to d for ifi's link-local address to finish DAD and
// returns it.
func linkLocal(ifi *net.Interface, d time.Duration) (netip.Addr, error) {
	deadline := time.Now().Add(d)
	for {
		c, err := rtnetlink.Dial(nil)
		if err != nil {
			return netip.Addr{}, err
		}
		addrs, err := c.Address.List()
		c.Close()
		if err != nil {
			return netip.Addr{}, err
		}
		for _, a := range addrs {
			ip, ok := netip.AddrFromSlice(a.Attributes.Address)
			if a.Index == uint32(ifi.Index) && a.Family == unix.AF_INET6 && ok && ip.IsLinkLocalUnicast() &&
				a.Attributes.Flags&(unix.IFA_F_TENTATIVE|unix.IFA_F_DADFAILED) == 0 {
				return ip, nil
			}
		}
		if time.Now().After(deadline) {
			return netip.Addr{}, fmt.Errorf("no link-local IPv6 address after %v", d)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// readIP6 returns the IPv6 addresses (every NIC's, loopback's aside) and
// main-table IPv6 routes (multicast aside), in the form
//
//	ip6 addr eth1 fe80::8b3:ecff:fe80:a546/64
//	ip6 route default via fe80::8b3:ecff:fe00:a546 dev eth1 pref high
//	ip6 route fe80::/64 dev eth1
func readIP6() ([]string, error) {
	c, err := rtnetlink.Dial(nil)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	links, err := c.Link.List()
	if err != nil {
		return nil, err
	}
	names := map[uint32]string{}
	for _, l := range links {
		names[l.Index] = l.Attributes.Name
	}
	var out []string
	addrs, err := c.Address.List()
	if err != nil {
		return nil, err
	}
	for _, a := range addrs {
		ip, ok := netip.AddrFromSlice(a.Attributes.Address)
		if a.Family != unix.AF_INET6 || !ok || ip.IsLoopback() {
			continue
		}
		out = append(out, fmt.Sprintf("ip6 addr %s %s/%d", names[a.Index], ip, a.PrefixLength))
	}
	routes, err := c.Route.List()
	if err != nil {
		return nil, err
	}
	for _, r := range routes {
		if r.Family != unix.AF_INET6 || r.Table != unix.RT_TABLE_MAIN || r.Type != unix.RTN_UNICAST {
			continue
		}
		dst := "default"
		if r.DstLength != 0 {
			dst = (&net.IPNet{IP: r.Attributes.Dst, Mask: net.CIDRMask(int(r.DstLength), 128)}).String()
		}
		s := "ip6 route " + dst
		if r.Attributes.Gateway != nil {
			s += " via " + r.Attributes.Gateway.String()
		}
		s += " dev " + names[r.Attributes.OutIface]
		if r.Attributes.Pref != nil && *r.Attributes.Pref == 1 {
			s += " pref high"
		}
		out = append(out, s)
	}
	slices.Sort(out)
	return out, nil
}

// ip6Watch reports the IPv6 addresses and routes (readIP6) now and again
// whenever they change, checked every half second for as long as the VM
// runs; each dump ends in "ip6 done n=N".
func ip6Watch() {
	var last []string
	for n := 0; ; time.Sleep(500 * time.Millisecond) {
		lines, err := readIP6()
		if err != nil {
			report("fail ip6watch: %v", err)
			return
		}
		if n > 0 && slices.Equal(lines, last) {
			continue
		}
		n++
		last = lines
		for _, l := range lines {
			report("%s", l)
		}
		report("ip6 done n=%d", n)
	}
}
