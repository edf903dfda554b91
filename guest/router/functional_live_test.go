package router_test

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"

	"spectrum-os.org/netcfg/guest/router"
	"spectrum-os.org/netcfg/internal/nstest"
)

// The simulated LAN, on RFC 5737 addresses, with no route to the clients'
// 100.64.0.0/16: a reply can reach a client only through the provider's
// NAT.
const (
	lanGateway = "203.0.113.1"  // the LAN side of the provider's uplink
	uplinkAddr = "203.0.113.2"  // the provider's uplink
	webAddr    = "203.0.113.10" // a server that says who it sees
	dns1Addr   = "203.0.113.53" // a resolver, answering 192.0.2.1
	dns2Addr   = "203.0.113.54" // another, answering 192.0.2.2

	// IPv6, on the documentation prefix: no route to the clients'
	// fd9f:2b8:5010::/48 either.
	lanGateway6 = "2001:db8:1::1"
	uplinkAddr6 = "2001:db8:1::2"
	webAddr6    = "2001:db8:1::10"
	dns6Addr    = "2001:db8:1::53" // a resolver, answering 192.0.2.6 (aaaa of it for AAAA)
)

// lan is the LAN namespace and its servers.
type lan struct {
	ns *nstest.NS
	mu sync.Mutex
	// udp is every datagram the web server got, as "payload from addr".
	udp []string
}

// newLAN makes the LAN namespace with the servers, joined to the
// provider's namespace prov by a veth whose provider end up0 has a plain
// (non-0A:B3:EC) MAC: a hardware connection the agent leaves alone, set
// up here as the provider's DHCP client would.
func newLAN(t *testing.T, prov *nstest.NS) *lan {
	l := &lan{ns: nstest.New(t)}
	l.ns.IP("link", "add", "lan0", "type", "veth", "peer", "name", "up0", "netns", prov.Name, "address", "52:54:00:00:00:02")
	for _, a := range []string{lanGateway, webAddr, dns1Addr, dns2Addr} {
		l.ns.IP("addr", "add", a+"/24", "dev", "lan0")
	}
	for _, a := range []string{lanGateway6, webAddr6, dns6Addr} {
		l.ns.IP("addr", "add", a+"/64", "dev", "lan0", "nodad")
	}
	l.ns.IP("link", "set", "lan0", "up")
	prov.IP("addr", "add", uplinkAddr+"/24", "dev", "up0")
	prov.IP("addr", "add", uplinkAddr6+"/64", "dev", "up0", "nodad")
	prov.IP("link", "set", "up0", "up")
	prov.IP("route", "add", "default", "via", lanGateway)
	prov.IP("-6", "route", "add", "default", "via", lanGateway6)

	for _, web := range []string{webAddr, webAddr6} {
		l.serveWeb(t, web)
	}
	inNS(t, l.ns, func() {
		for i, a := range []string{dns1Addr, dns2Addr} {
			serveDNS(t, a, [4]byte{192, 0, 2, byte(i + 1)})
		}
		serveDNS(t, dns6Addr, [4]byte{192, 0, 2, 6})
	})
	return l
}

// serveWeb runs the LAN's web server on addr, port 7, TCP and UDP.
func (l *lan) serveWeb(t *testing.T, addr string) {
	var tl net.Listener
	var ul *net.UDPConn
	inNS(t, l.ns, func() {
		var err error
		if tl, err = net.Listen("tcp", net.JoinHostPort(addr, "7")); err != nil {
			t.Fatal(err)
		}
		if ul, err = net.ListenUDP("udp", &net.UDPAddr{IP: net.ParseIP(addr), Port: 7}); err != nil {
			t.Fatal(err)
		}
	})
	t.Cleanup(func() { tl.Close(); ul.Close() })
	// TCP: the server writes the address it sees the client at.
	go func() {
		for {
			c, err := tl.Accept()
			if err != nil {
				return
			}
			io.WriteString(c, c.RemoteAddr().String()+"\n")
			c.Close()
		}
	}()
	// UDP: it records what came, and answers with the address it saw.
	go func() {
		buf := make([]byte, 512)
		for {
			n, from, err := ul.ReadFromUDP(buf)
			if err != nil {
				return
			}
			l.mu.Lock()
			l.udp = append(l.udp, string(buf[:n])+" from "+from.IP.String())
			l.mu.Unlock()
			ul.WriteToUDP([]byte(from.String()), from)
		}
	}()
}

func (l *lan) datagrams() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.udp...)
}

// serveDNS answers every A query to addr:53, over UDP and TCP, with a,
// and every AAAA query with aaaa(a).
// It must be called in the namespace the server belongs to.
func serveDNS(t *testing.T, addr string, a [4]byte) {
	answer := func(q []byte) []byte { return answerA(q, a) }
	uc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.ParseIP(addr), Port: 53})
	if err != nil {
		t.Fatal(err)
	}
	tl, err := net.Listen("tcp", net.JoinHostPort(addr, "53"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { uc.Close(); tl.Close() })
	go func() {
		buf := make([]byte, 512)
		for {
			n, from, err := uc.ReadFromUDP(buf)
			if err != nil {
				return
			}
			uc.WriteToUDP(answer(buf[:n]), from)
		}
	}()
	go func() {
		for {
			c, err := tl.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(10 * time.Second))
				var n [2]byte
				if _, err := io.ReadFull(c, n[:]); err != nil {
					return
				}
				q := make([]byte, binary.BigEndian.Uint16(n[:]))
				if _, err := io.ReadFull(c, q); err != nil {
					return
				}
				out := answer(q)
				c.Write(append(binary.BigEndian.AppendUint16(nil, uint16(len(out))), out...))
			}()
		}
	}()
}

// veth joins namespaces a and b with a veth, aName/aMAC in a and
// bName/bMAC in b.
func veth(t *testing.T, a *nstest.NS, aName, aMAC string, b *nstest.NS, bName, bMAC string) {
	t.Helper()
	a.IP("link", "add", aName, "address", aMAC, "type", "veth", "peer", "name", bName, "netns", b.Name, "address", bMAC)
}

// client makes a client namespace joined to the provider namespace prov
// by link id id (one octet here): the provider end pName gets
// 0A:B3:EC:80:00:id and is configured by the provider's agent, the client
// end eth0 0A:B3:EC:00:00:id, configured by the agent run once in the
// client, as its init hook would.
func client(t *testing.T, prov *nstest.NS, provAgent *agent, pName string, id byte) *nstest.NS {
	t.Helper()
	c := nstest.New(t)
	hex := func(side string) string {
		return "0a:b3:ec:" + side + ":00:" + string("0123456789abcdef"[id>>4]) + string("0123456789abcdef"[id&15])
	}
	veth(t, prov, pName, hex("80"), c, "eth0", hex("00"))
	gw := "169.254.0." + itoa(int(id))
	provAgent.waitLine(pName + " " + hex("80") + ": provider " + gw + "/32 for client 100.64.0." + itoa(int(id)) + ": configured")
	console := filepath.Join(t.TempDir(), "console")
	if err := os.WriteFile(console, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := c.Command(context.Background(), netcfgBin, "-console", console).CombinedOutput(); err != nil {
		log, _ := os.ReadFile(console)
		t.Fatalf("client agent: %v\n%s%s", err, out, log)
	}
	return c
}

// dialTCP connects from ns to addr:port and returns what the server
// writes first (one line), or the error.
func dialTCP(t *testing.T, ns *nstest.NS, addr string, port int) (string, error) {
	t.Helper()
	var c net.Conn
	var err error
	inNS(t, ns, func() {
		c, err = net.DialTimeout("tcp", net.JoinHostPort(addr, itoa(port)), 3*time.Second)
	})
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	b, err := io.ReadAll(c)
	return strings.TrimSpace(string(b)), err
}

// udpExchange sends payload from ns (from src:sport; src "" and sport 0
// pick) to addr:port and returns the answer, or the error (a timeout when
// nothing came).
func udpExchange(t *testing.T, ns *nstest.NS, src string, sport int, addr string, port int, payload []byte) ([]byte, error) {
	t.Helper()
	var c *net.UDPConn
	var err error
	inNS(t, ns, func() {
		var laddr *net.UDPAddr
		if src != "" || sport != 0 {
			laddr = &net.UDPAddr{IP: net.ParseIP(src), Port: sport}
		}
		d := net.Dialer{LocalAddr: laddr, Control: reuseAddr}
		var nc net.Conn
		nc, err = d.Dial("udp", net.JoinHostPort(addr, itoa(port)))
		if err == nil {
			c = nc.(*net.UDPConn)
		}
	})
	if err != nil {
		return nil, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Write(payload); err != nil {
		return nil, err
	}
	buf := make([]byte, 1500)
	n, err := c.Read(buf)
	return buf[:n], err
}

// reuseAddr lets a test send from the same UDP port again at once.
func reuseAddr(_, _ string, rc syscall.RawConn) error {
	var err error
	rc.Control(func(fd uintptr) { err = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_REUSEADDR, 1) })
	return err
}

// query asks the virtual resolver, IPv4's, for web.example's A record
// over UDP (from port sport; 0 picks) or TCP, and returns the answer.
func query(t *testing.T, ns *nstest.NS, tcp bool, sport int) (netip.Addr, error) {
	t.Helper()
	return queryAt(t, ns, router.Resolver, dnsmessage.TypeA, tcp, sport)
}

// queryAt asks the resolver at addr for web.example's record of type
// qtype (A or AAAA) over UDP (from port sport; 0 picks) or TCP, and
// returns the address the answer gives.
func queryAt(t *testing.T, ns *nstest.NS, addr string, qtype dnsmessage.Type, tcp bool, sport int) (netip.Addr, error) {
	t.Helper()
	b := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: 4242, RecursionDesired: true})
	b.StartQuestions()
	b.Question(dnsmessage.Question{Name: dnsmessage.MustNewName("web.example."), Type: qtype, Class: dnsmessage.ClassINET})
	q, err := b.Finish()
	if err != nil {
		t.Fatal(err)
	}
	var resp []byte
	if tcp {
		var c net.Conn
		inNS(t, ns, func() { c, err = net.DialTimeout("tcp", net.JoinHostPort(addr, "53"), 3*time.Second) })
		if err != nil {
			return netip.Addr{}, err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Write(append(binary.BigEndian.AppendUint16(nil, uint16(len(q))), q...)); err != nil {
			return netip.Addr{}, err
		}
		var n [2]byte
		if _, err := io.ReadFull(c, n[:]); err != nil {
			return netip.Addr{}, err
		}
		resp = make([]byte, binary.BigEndian.Uint16(n[:]))
		if _, err := io.ReadFull(c, resp); err != nil {
			return netip.Addr{}, err
		}
	} else if resp, err = udpExchange(t, ns, "", sport, addr, 53, q); err != nil {
		return netip.Addr{}, err
	}
	return answerAddr(resp, qtype)
}

// answerAddr is the address of the first answer in resp, a record of
// type qtype, or an error (rcodeError for an answer that says no).
func answerAddr(resp []byte, qtype dnsmessage.Type) (netip.Addr, error) {
	var p dnsmessage.Parser
	rh, err := p.Start(resp)
	if err != nil {
		return netip.Addr{}, err
	}
	if rh.RCode != dnsmessage.RCodeSuccess {
		return netip.Addr{}, rcodeError(rh.RCode)
	}
	p.SkipAllQuestions()
	h, err := p.AnswerHeader()
	if err != nil {
		return netip.Addr{}, err
	}
	if h.Type != qtype {
		return netip.Addr{}, errors.New("answer of type " + h.Type.String())
	}
	if qtype == dnsmessage.TypeAAAA {
		a, err := p.AAAAResource()
		return netip.AddrFrom16(a.AAAA), err
	}
	a, err := p.AResource()
	return netip.AddrFrom4(a.A), err
}

// rcodeError is an answer that says no (REFUSED, SERVFAIL, ...).
type rcodeError dnsmessage.RCode

func (e rcodeError) Error() string { return "answer " + dnsmessage.RCode(e).String() }

// TestFunctional puts real traffic through the router: two clients and a
// chained provider with its own client behind one provider, a LAN beyond
// its uplink.
func TestFunctional(t *testing.T) {
	prov := nstest.New(t)
	l := newLAN(t, prov)
	pa := startAgent(t, prov, "nameserver "+dns1Addr+"\n")
	c1 := client(t, prov, pa, "p1", 1)
	c2 := client(t, prov, pa, "p2", 2)

	t.Run("NAT", func(t *testing.T) {
		got, err := dialTCP(t, c1, webAddr, 7)
		if err != nil {
			t.Fatalf("client 1 -> %s:7: %v", webAddr, err)
		}
		if host, _, _ := net.SplitHostPort(got); host != uplinkAddr {
			t.Errorf("the server saw the client at %s, want the provider's uplink %s", got, uplinkAddr)
		}
		if r, err := udpExchange(t, c2, "", 0, webAddr, 7, []byte("hello from 2")); err != nil || !strings.HasPrefix(string(r), uplinkAddr+":") {
			t.Errorf("client 2 -> %s:7 over UDP: %q, %v; want an answer to %s", webAddr, r, err, uplinkAddr)
		}
		// The LAN has no route back to the clients: only the NAT
		// brought the replies.
		if out, err := l.ns.TryIP("route", "get", "100.64.0.1"); err == nil {
			t.Errorf("the LAN has a route to the clients: %s", out)
		}
	})

	t.Run("isolation", func(t *testing.T) {
		// Client 1 listens; client 2 tries it through its gateway,
		// with an explicit route (100.64.0.0/16 is on-link for it).
		var ul *net.UDPConn
		var tl net.Listener
		inNS(t, c1, func() {
			var err error
			if ul, err = net.ListenUDP("udp", &net.UDPAddr{Port: 9999}); err != nil {
				t.Fatal(err)
			}
			if tl, err = net.Listen("tcp", ":9999"); err != nil {
				t.Fatal(err)
			}
		})
		defer ul.Close()
		defer tl.Close()
		c2.IP("route", "add", "100.64.0.1/32", "via", "169.254.0.2", "dev", "eth0", "onlink")
		if _, err := udpExchange(t, c2, "", 0, "100.64.0.1", 9999, []byte("from client 2")); err == nil {
			t.Error("client 2 got an answer from client 1")
		}
		if _, err := dialTCP(t, c2, "100.64.0.1", 9999); err == nil {
			t.Error("client 2 connected to client 1")
		}
		ul.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		if n, from, err := ul.ReadFromUDP(make([]byte, 100)); err == nil {
			t.Errorf("client 1 got %d bytes from %v", n, from)
		}
	})

	t.Run("forged source", func(t *testing.T) {
		// Strict rp_filter off on the provider link, so that only the
		// router's anti-spoofing stands between the forger and the LAN.
		sysctl(t, prov, "net.ipv4.conf.p1.rp_filter=0")
		defer sysctl(t, prov, "net.ipv4.conf.p1.rp_filter=1")
		c1.IP("addr", "add", "100.64.0.77/32", "dev", "eth0")
		c1.IP("addr", "add", "100.64.0.2/32", "dev", "eth0") // client 2's
		for _, src := range []string{"100.64.0.77", "100.64.0.2", "203.0.113.99"} {
			if _, err := udpExchange(t, c1, src, 0, webAddr, 7, []byte("forged "+src)); err == nil {
				t.Errorf("an answer to a datagram from %s", src)
			}
		}
		if r, err := udpExchange(t, c1, "100.64.0.1", 0, webAddr, 7, []byte("genuine")); err != nil {
			t.Errorf("the genuine datagram got no answer: %q, %v", r, err)
		}
		for _, d := range l.datagrams() {
			if strings.HasPrefix(d, "forged") {
				t.Errorf("the LAN got %q", d)
			}
		}
	})

	t.Run("outside cannot reach a client", func(t *testing.T) {
		l.ns.IP("route", "add", "100.64.0.0/16", "via", uplinkAddr)
		defer l.ns.IP("route", "del", "100.64.0.0/16", "via", uplinkAddr)
		var ul *net.UDPConn
		var tl net.Listener
		inNS(t, c1, func() {
			var err error
			if ul, err = net.ListenUDP("udp", &net.UDPAddr{Port: 9998}); err != nil {
				t.Fatal(err)
			}
			if tl, err = net.Listen("tcp", ":9998"); err != nil {
				t.Fatal(err)
			}
		})
		defer ul.Close()
		defer tl.Close()
		if _, err := dialTCP(t, l.ns, "100.64.0.1", 9998); err == nil {
			t.Error("the LAN connected to client 1")
		}
		udpExchange(t, l.ns, "", 0, "100.64.0.1", 9998, []byte("from outside"))
		ul.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		if n, from, err := ul.ReadFromUDP(make([]byte, 100)); err == nil {
			t.Errorf("client 1 got %d bytes from %v", n, from)
		}
	})

	t.Run("DNS", func(t *testing.T) {
		for _, tcp := range []bool{false, true} {
			if a, err := query(t, c1, tcp, 0); err != nil || a != netip.MustParseAddr("192.0.2.1") {
				t.Errorf("query (tcp %v): %v, %v; want 192.0.2.1 from %s", tcp, a, err, dns1Addr)
			}
		}
		// The same source port before and after the provider's lease
		// changes: the forwarder asks the new resolver.
		if a, err := query(t, c1, false, 5353); err != nil || a != netip.MustParseAddr("192.0.2.1") {
			t.Errorf("query: %v, %v; want 192.0.2.1", a, err)
		}
		n := pa.setResolv("nameserver " + dns2Addr + "\n")
		pa.waitLineAfter(n, dnsTo+"goes to "+dns2Addr+" (first nameserver of /etc/resolv.conf)")
		for _, tcp := range []bool{false, true} {
			if a, err := query(t, c1, tcp, 5353); err != nil || a != netip.MustParseAddr("192.0.2.2") {
				t.Errorf("query after the change (tcp %v): %v, %v; want 192.0.2.2 from %s", tcp, a, err, dns2Addr)
			}
		}
		// No resolver: REFUSED at once, not a timeout.
		n = pa.setResolv("")
		pa.waitLineAfter(n, dnsTo+"is refused: /etc/resolv.conf names no nameserver")
		for _, tcp := range []bool{false, true} {
			if _, err := query(t, c1, tcp, 0); err != rcodeError(dnsmessage.RCodeRefused) {
				t.Errorf("query without a resolver (tcp %v): %v, want REFUSED", tcp, err)
			}
		}
		n = pa.setResolv("nameserver " + dns1Addr + "\n")
		pa.waitLineAfter(n, dnsTo+"goes to "+dns1Addr+" (first nameserver of /etc/resolv.conf)")
	})

	t.Run("chained provider", func(t *testing.T) {
		// vpn is a client of prov and the provider of app; its own
		// resolver is the virtual one, as in any client image.
		vpn := nstest.New(t)
		veth(t, prov, "p3", "0a:b3:ec:80:00:03", vpn, "up0", "0a:b3:ec:00:00:03")
		pa.waitLine("p3 0a:b3:ec:80:00:03: provider 169.254.0.3/32 for client 100.64.0.3: configured")
		va := startAgent(t, vpn, "nameserver "+router.Resolver+"\n")
		va.waitLine(dnsTo + "goes to 100.127.255.53 (first nameserver of /etc/resolv.conf: this provider's own provider, while it routes through a client NIC)")
		app := client(t, vpn, va, "d1", 4)

		got, err := dialTCP(t, app, webAddr, 7)
		if err != nil {
			t.Fatalf("app -> %s:7: %v", webAddr, err)
		}
		if host, _, _ := net.SplitHostPort(got); host != uplinkAddr {
			t.Errorf("the server saw the app at %s, want %s", got, uplinkAddr)
		}
		// IPv6 too: NAT66 twice (the client addresses wait for their
		// duplicate address detection).
		waitDAD(t, vpn)
		waitDAD(t, app)
		if got, err := dialTCP(t, app, webAddr6, 7); err != nil {
			t.Errorf("app -> [%s]:7: %v", webAddr6, err)
		} else if host, _, _ := net.SplitHostPort(got); host != uplinkAddr6 {
			t.Errorf("the server saw the app at %s, want %s", got, uplinkAddr6)
		}
		for _, tcp := range []bool{false, true} {
			if a, err := query(t, app, tcp, 0); err != nil || a != netip.MustParseAddr("192.0.2.1") {
				t.Errorf("app's query (tcp %v): %v, %v; want 192.0.2.1", tcp, a, err)
			}
		}
		// The VPN's own resolver the IPv6 virtual one: its forwarder
		// asks prov's over IPv6, the app asking either.
		waitDAD(t, vpn)
		waitDAD(t, app)
		n := va.setResolv("nameserver " + router.Resolver6 + "\n")
		va.waitLineAfter(n, dnsTo+"goes to "+router.Resolver6+" (first nameserver of /etc/resolv.conf: this provider's own provider, while it routes through a client NIC)")
		for _, res := range []string{router.Resolver, router.Resolver6} {
			for _, tcp := range []bool{false, true} {
				if a, err := queryAt(t, app, res, dnsmessage.TypeAAAA, tcp, 0); err != nil || a != aaaa([4]byte{192, 0, 2, 1}) {
					t.Errorf("app's AAAA query to %s through the VPN's IPv6 upstream (tcp %v): %v, %v", res, tcp, a, err)
				}
			}
		}
		// Through the chain, another of prov's clients is still out
		// of reach.
		app.IP("route", "add", "100.64.0.1/32", "via", "169.254.0.4", "dev", "eth0", "onlink")
		if _, err := dialTCP(t, app, "100.64.0.1", 9999); err == nil {
			t.Error("the app behind the VPN connected to client 1")
		}
		s6 := listenServices(t, c1, 9997)
		if _, err := dialTCP(t, app, c6(1), 9997); err == nil {
			t.Error("the app behind the VPN connected to client 1 over IPv6")
		}
		if got := s6.seen(); len(got) > 0 {
			t.Errorf("client 1 got %q from the app behind the VPN", got)
		}
		if code := va.stop(); code != 0 {
			t.Errorf("vpn agent: exit status %d", code)
		}
	})

	if code := pa.stop(); code != 0 {
		t.Errorf("provider agent: exit status %d", code)
	}
}
