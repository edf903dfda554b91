package link

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netns"
	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv6"
	"golang.org/x/sys/unix"

	"spectrum-os.org/netcfg/internal/mac"
	"spectrum-os.org/netcfg/internal/nstest"
)

// The demonstration (issue 13), made a test: the host, in a
// namespace of its own, has an uplink eth0 with 192.0.2.1/24 (a veth to a
// LAN namespace whose 192.0.2.254 is its default gateway and which holds the
// far address 198.51.100.7), IPv4 forwarding on (as on any host running
// Docker or libvirt), rp_filter off, and a UDP service on 0.0.0.0; the LAN
// runs one too. Frames go into a link's client tap as its QEMU would write
// them. With the links in the host's namespace (today's layout before this
// change) the host answers and receives; with the links in a namespace of
// their own (OpenHost), nothing reaches the host or beyond.

const udpPort = 7777

// standIn is the host and its LAN.
type standIn struct {
	host, lan       *nstest.NS
	hostUDP, lanUDP net.PacketConn
}

func newStandIn(t *testing.T) *standIn {
	t.Helper()
	s := &standIn{host: nstest.New(t), lan: nstest.New(t)}
	s.host.IP("link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", s.lan.Name)
	s.host.IP("addr", "add", "192.0.2.1/24", "dev", "eth0")
	s.host.IP("link", "set", "eth0", "up")
	s.host.IP("route", "add", "default", "via", "192.0.2.254")
	s.lan.IP("addr", "add", "192.0.2.254/24", "dev", "eth0")
	s.lan.IP("addr", "add", "198.51.100.7/32", "dev", "lo")
	s.lan.IP("link", "set", "eth0", "up")
	s.lan.IP("route", "add", "100.64.0.0/16", "via", "192.0.2.1") // a reply could come back
	for _, kv := range []string{"net.ipv4.ip_forward=1", "net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.default.rp_filter=0", "net.ipv4.conf.eth0.rp_filter=0"} {
		if out, err := s.host.Command(t.Context(), "sysctl", "-w", kv).CombinedOutput(); err != nil {
			t.Fatalf("sysctl -w %s: %v: %s", kv, err, out)
		}
	}
	s.hostUDP = listenUDPIn(t, s.host)
	s.lanUDP = listenUDPIn(t, s.lan)
	return s
}

// listenUDPIn opens a UDP socket on 0.0.0.0:udpPort in ns. A socket keeps
// the namespace it was made in; only the thread that makes it enters ns.
func listenUDPIn(t *testing.T, ns *nstest.NS) net.PacketConn {
	t.Helper()
	type result struct {
		c   net.PacketConn
		err error
	}
	r := make(chan result, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends with the goroutine
		h, err := netns.GetFromPath(ns.Path())
		if err == nil {
			err = netns.Set(h)
			h.Close()
		}
		if err != nil {
			r <- result{err: err}
			return
		}
		c, err := net.ListenPacket("udp4", "0.0.0.0:7777")
		r <- result{c, err}
	}()
	res := <-r
	if res.err != nil {
		t.Fatalf("UDP service in %s: %v", ns.Name, res.err)
	}
	t.Cleanup(func() { res.c.Close() })
	return res.c
}

// got reads what arrives at c within wait, and tells whether payload came.
func got(c net.PacketConn, payload string, wait time.Duration) bool {
	buf := make([]byte, 2048)
	deadline := time.Now().Add(wait)
	for {
		c.SetReadDeadline(deadline)
		n, _, err := c.ReadFrom(buf)
		if err != nil {
			return false
		}
		if bytes.Contains(buf[:n], []byte(payload)) {
			return true
		}
	}
}

// Frames as a guest writes them.

func ethFrame(dst, src net.HardwareAddr, typ uint16, payload []byte) []byte {
	f := append(append(append([]byte{}, dst...), src...), byte(typ>>8), byte(typ))
	f = append(f, payload...)
	for len(f) < 60 {
		f = append(f, 0)
	}
	return f
}

func arpRequest(src net.HardwareAddr, from, target netip.Addr) []byte {
	b := []byte{0, 1, 8, 0, 6, 4, 0, 1} // Ethernet, IPv4, request
	b = append(b, src...)
	b = append(b, from.AsSlice()...)
	b = append(b, 0, 0, 0, 0, 0, 0)
	return append(b, target.AsSlice()...)
}

func udp4(from, to netip.Addr, sport uint16, payload string) []byte {
	udp := binary.BigEndian.AppendUint16(nil, sport)
	udp = binary.BigEndian.AppendUint16(udp, udpPort)
	udp = binary.BigEndian.AppendUint16(udp, uint16(8+len(payload)))
	udp = append(udp, 0, 0) // no checksum: allowed in IPv4
	udp = append(udp, payload...)
	h := []byte{0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, unix.IPPROTO_UDP, 0, 0}
	binary.BigEndian.PutUint16(h[2:], uint16(20+len(udp)))
	h = append(h, from.AsSlice()...)
	h = append(h, to.AsSlice()...)
	var sum uint32
	for i := 0; i < 20; i += 2 {
		sum += uint32(binary.BigEndian.Uint16(h[i:]))
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	binary.BigEndian.PutUint16(h[10:], ^uint16(sum))
	return append(h, udp...)
}

// ipv6ICMP is an ICMPv6 message from a link-local source, hop limit 255.
func ipv6ICMP(t *testing.T, from, to netip.Addr, m *icmp.Message) []byte {
	t.Helper()
	body, err := m.Marshal(icmp.IPv6PseudoHeader(from.AsSlice(), to.AsSlice()))
	if err != nil {
		t.Fatal(err)
	}
	h := []byte{0x60, 0, 0, 0, 0, 0, unix.IPPROTO_ICMPV6, 255}
	binary.BigEndian.PutUint16(h[4:], uint16(len(body)))
	h = append(h, from.AsSlice()...)
	h = append(h, to.AsSlice()...)
	return append(h, body...)
}

// routerAdvertisement offers prefix 2001:db8:1::/64 for address
// autoconfiguration, from a router whose MAC is src.
func routerAdvertisement(src net.HardwareAddr) *icmp.Message {
	b := []byte{64, 0, 0x07, 0x08, 0, 0, 0, 0, 0, 0, 0, 0} // hop limit, flags, lifetime 1800 s, timers
	b = append(b, 3, 4, 64, 0xc0)                          // prefix information: on-link, autonomous
	b = binary.BigEndian.AppendUint32(b, 86400)            // valid
	b = binary.BigEndian.AppendUint32(b, 14400)            // preferred
	b = append(b, 0, 0, 0, 0)
	b = append(b, netip.MustParseAddr("2001:db8:1::").AsSlice()...)
	b = append(b, 1, 1) // source link-layer address
	b = append(b, src...)
	return &icmp.Message{Type: ipv6.ICMPTypeRouterAdvertisement, Body: &icmp.RawBody{Data: b}}
}

func writeFrame(t *testing.T, tap *os.File, f []byte) {
	t.Helper()
	if _, err := tap.Write(append(make([]byte, vnetHdrLen), f...)); err != nil {
		t.Fatalf("write to tap: %v", err)
	}
}

// reply reads what comes out of tap within wait and tells whether a frame
// match accepts came.
func reply(t *testing.T, tap *os.File, wait time.Duration, match func(f []byte) bool) bool {
	t.Helper()
	deadline := time.Now().Add(wait)
	buf := make([]byte, 65536)
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return false
		}
		pfd := []unix.PollFd{{Fd: int32(tap.Fd()), Events: unix.POLLIN}}
		n, err := unix.Poll(pfd, int(left.Milliseconds())+1)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			t.Fatalf("poll tap: %v", err)
		}
		if n == 0 {
			return false
		}
		n, err = unix.Read(int(tap.Fd()), buf)
		if err != nil {
			t.Fatalf("read tap: %v", err)
		}
		if f := buf[:n]; len(f) > vnetHdrLen+14 && match(f[vnetHdrLen:]) {
			return true
		}
	}
}

// leaks sends the demonstration's frames into the client tap of link id
// (its bridge's MAC is brMAC; addrs lists the global IPv6 addresses in the
// links' namespace) and returns what reached the host or beyond.
func leaks(t *testing.T, s *standIn, client *os.File, id mac.LinkID, brMAC net.HardwareAddr, addrs func() []string) []string {
	t.Helper()
	me, myIP := id.MAC(mac.Client), id.ClientAddr()
	bcast := net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
	hostIP, far := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("198.51.100.7")
	var out []string

	writeFrame(t, client, ethFrame(bcast, me, unix.ETH_P_ARP, arpRequest(me, myIP, hostIP)))
	if reply(t, client, 500*time.Millisecond, func(f []byte) bool {
		return binary.BigEndian.Uint16(f[12:]) == unix.ETH_P_ARP && f[21] == 2
	}) {
		out = append(out, "the host answered ARP for 192.0.2.1")
	}
	writeFrame(t, client, ethFrame(brMAC, me, unix.ETH_P_IP, udp4(myIP, hostIP, 5000, "to-host-address")))
	if got(s.hostUDP, "to-host-address", 300*time.Millisecond) {
		out = append(out, "a datagram to 192.0.2.1 reached the host's service")
	}
	writeFrame(t, client, ethFrame(bcast, me, unix.ETH_P_IP, udp4(netip.IPv4Unspecified(), netip.MustParseAddr("255.255.255.255"), 68, "broadcast")))
	if got(s.hostUDP, "broadcast", 300*time.Millisecond) {
		out = append(out, "a broadcast from 0.0.0.0 reached the host's service")
	}
	writeFrame(t, client, ethFrame(brMAC, me, unix.ETH_P_IP, udp4(myIP, far, 5000, "to-far-address")))
	if got(s.lanUDP, "to-far-address", 300*time.Millisecond) {
		out = append(out, "a datagram to 198.51.100.7 was forwarded by the host")
	}
	ll := netip.MustParseAddr("fe80::8:aff:feb3:ec00")
	writeFrame(t, client, ethFrame(net.HardwareAddr{0x33, 0x33, 0, 0, 0, 1}, me, unix.ETH_P_IPV6,
		ipv6ICMP(t, ll, netip.MustParseAddr("ff02::1"), routerAdvertisement(me))))
	writeFrame(t, client, ethFrame(net.HardwareAddr{0x33, 0x33, 0, 0, 0, 1}, me, unix.ETH_P_IPV6,
		ipv6ICMP(t, ll, netip.MustParseAddr("ff02::1"), &icmp.Message{Type: ipv6.ICMPTypeEchoRequest, Body: &icmp.Echo{ID: 1, Seq: 1, Data: []byte("ping6")}})))
	if reply(t, client, 500*time.Millisecond, func(f []byte) bool {
		return binary.BigEndian.Uint16(f[12:]) == unix.ETH_P_IPV6 && bytes.Contains(f, []byte("ping6")) && !bytes.Equal(f[6:12], me)
	}) {
		out = append(out, "the host answered an IPv6 ping to ff02::1")
	}
	if a := addrs(); len(a) != 0 {
		out = append(out, "a router advertisement gave the host "+strings.Join(a, ", "))
	}
	return out
}

// globalIPv6 lists the global IPv6 addresses of the namespace of n.
func globalIPv6(t *testing.T, n *Net) func() []string {
	return func() []string {
		var out []string
		err := n.inNS(func() error {
			ifs, err := net.Interfaces()
			if err != nil {
				return err
			}
			for _, i := range ifs {
				as, _ := i.Addrs()
				for _, a := range as {
					if p, err := netip.ParsePrefix(a.String()); err == nil && p.Addr().Is6() && p.Addr().IsGlobalUnicast() {
						out = append(out, i.Name+" "+p.String())
					}
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
}

func bridgeMAC(t *testing.T, n *Net, id mac.LinkID) net.HardwareAddr {
	t.Helper()
	l, err := n.h.LinkByName(Name(id, Bridge))
	if err != nil {
		t.Fatal(err)
	}
	return l.Attrs().HardwareAddr
}

// TestHostTakesNoPart: with the links in the host's own namespace, the
// host answers, receives and forwards what a guest sends (the test sees
// the leaks it is meant to see); in a namespace of their own it does not.
func TestHostTakesNoPart(t *testing.T) {
	const id = mac.LinkID(0xa546)
	t.Run("links in the host's namespace (before)", func(t *testing.T) {
		s := newStandIn(t)
		h, err := netns.GetFromPath(s.host.Path())
		if err != nil {
			t.Fatal(err)
		}
		defer h.Close()
		n, err := Open(h, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer n.Close()
		client := wire(t, n, id)
		got := leaks(t, s, client, id, bridgeMAC(t, n, id), globalIPv6(t, n))
		// The bridge's own settings keep IPv6 out (it is below IPv6's
		// MTU) and forwarding (off on it), here too; what is left is
		// what the host's own addresses and sockets answer.
		want := []string{
			"the host answered ARP for 192.0.2.1",
			"a datagram to 192.0.2.1 reached the host's service",
			"a broadcast from 0.0.0.0 reached the host's service",
		}
		if strings.Join(got, "\n") != strings.Join(want, "\n") {
			t.Errorf("leaks with the links in the host's namespace:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
	})
	t.Run("links in a namespace of their own", func(t *testing.T) {
		s := newStandIn(t)
		h, err := netns.GetFromPath(s.host.Path())
		if err != nil {
			t.Fatal(err)
		}
		defer h.Close()
		host, err := OpenHost(h, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer host.Close()
		client := wire(t, host.Net, id)
		if got := leaks(t, s, client, id, bridgeMAC(t, host.Net, id), globalIPv6(t, host.Net)); len(got) != 0 {
			t.Errorf("a guest reached the host:\n%s", strings.Join(got, "\n"))
		}
		// And the links' namespace holds nothing but the link.
		var names []string
		host.Net.inNS(func() error {
			ifs, _ := net.Interfaces()
			for _, i := range ifs {
				names = append(names, i.Name)
			}
			return nil
		})
		if strings.Join(names, " ") != "lo spbr-a546 spc-a546 spp-a546" {
			t.Errorf("links' namespace holds %v", names)
		}
		// The one kind of route there: the kernel's multicast route of
		// each tap, made with its IPv6 (which /proc/sys alone could
		// disable). It serves what sockets in the namespace send to a
		// multicast group, and there are none.
		want := []string{"-6 multicast ff00::/8 dev spc-a546 table local", "-6 multicast ff00::/8 dev spp-a546 table local"}
		if got := routesIn(t, host.Net); strings.Join(got, "\n") != strings.Join(want, "\n") {
			t.Errorf("routes in the links' namespace:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
	})
}

// wire creates link id in n and opens both taps (the provider's too, so
// its port forwards); it returns the client's.
func wire(t *testing.T, n *Net, id mac.LinkID) *os.File {
	t.Helper()
	if err := n.Create(id); err != nil {
		t.Fatal(err)
	}
	var taps []*os.File
	for _, side := range []mac.Side{mac.Client, mac.Provider} {
		f, err := n.OpenTap(id, side)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		taps = append(taps, f)
	}
	// The ports forward once they have carrier: wait for a frame through.
	deadline := time.Now().Add(5 * time.Second)
	for !received(t, taps[1], "warm-up", 100*time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the link does not forward")
		}
		sendFrame(t, taps[0], id.MAC(mac.Client), "warm-up")
	}
	return taps[0]
}

// routesIn lists every route of every table in n's namespace, IPv4 and
// IPv6, as ip sees it from inside.
func routesIn(t *testing.T, n *Net) []string {
	t.Helper()
	var out []string
	for _, fam := range []string{"-4", "-6"} {
		var b []byte
		err := n.inNS(func() (err error) {
			b, err = runIP(fam, "-j", "route", "show", "table", "all")
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		var rs []map[string]any
		if err := json.Unmarshal(b, &rs); err != nil {
			t.Fatalf("%s: %v", b, err)
		}
		for _, r := range rs {
			typ, _ := r["type"].(string)
			table, _ := r["table"].(string)
			out = append(out, strings.Join(strings.Fields(fmt.Sprint(fam, " ", typ, " ", r["dst"], " dev ", r["dev"], " table ", table)), " "))
		}
	}
	return out
}

// runIP runs ip in the namespace of the calling thread (inNS): nsenter
// enters the thread's namespace, which /proc/thread-self names.
func runIP(args ...string) ([]byte, error) {
	cmd := exec.Command("nsenter", append([]string{"--net=/proc/thread-self/ns/net", "--", "ip"}, args...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, stderr.Bytes())
	}
	return out, nil
}
