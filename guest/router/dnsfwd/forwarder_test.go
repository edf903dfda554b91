package dnsfwd

import (
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"
)

// upstreamServer is a resolver on 127.0.0.1 (or the addresses given to
// newUpstream), UDP and TCP on one port: it answers name "hold." never,
// and every other name with 192.0.2.1 or whatever answer makes of the
// query.
type upstreamServer struct {
	port   uint16
	got    atomic.Int32 // queries received
	mu     sync.Mutex
	answer func(q []byte) [][]byte
}

// setAnswer makes f what the server answers with.
func (s *upstreamServer) setAnswer(f func(q []byte) [][]byte) {
	s.mu.Lock()
	s.answer = f
	s.mu.Unlock()
}

func (s *upstreamServer) respond(q []byte) [][]byte {
	s.mu.Lock()
	f := s.answer
	s.mu.Unlock()
	return f(q)
}

// newUpstream starts an upstreamServer on addrs (none: 127.0.0.1), all on
// one port.
func newUpstream(t testing.TB, addrs ...netip.Addr) *upstreamServer {
	t.Helper()
	if len(addrs) == 0 {
		addrs = []netip.Addr{netip.MustParseAddr("127.0.0.1")}
	}
	s := &upstreamServer{}
	s.answer = func(q []byte) [][]byte { return [][]byte{aAnswer(t, q, 0)} }
	var ucs []*net.UDPConn
	var tls []*net.TCPListener
	closeAll := func() {
		for _, c := range ucs {
			c.Close()
		}
		for _, l := range tls {
			l.Close()
		}
		ucs, tls = nil, nil
	}
	// A port free on the first address may be taken on another.
	for try := 0; ; try++ {
		port, err := 0, error(nil)
		for _, a := range addrs {
			var uc *net.UDPConn
			var tl *net.TCPListener
			if uc, err = net.ListenUDP("udp", &net.UDPAddr{IP: a.AsSlice(), Port: port}); err != nil {
				break
			}
			ucs = append(ucs, uc)
			port = uc.LocalAddr().(*net.UDPAddr).Port
			if tl, err = net.ListenTCP("tcp", &net.TCPAddr{IP: a.AsSlice(), Port: port}); err != nil {
				break
			}
			tls = append(tls, tl)
		}
		if err == nil {
			s.port = uint16(port)
			break
		}
		closeAll()
		if try == 20 {
			t.Fatal(err)
		}
	}
	t.Cleanup(closeAll)
	for _, uc := range ucs {
		go func() {
			buf := make([]byte, 65535)
			for {
				n, from, err := uc.ReadFromUDP(buf)
				if err != nil {
					return
				}
				s.got.Add(1)
				for _, out := range s.respond(append([]byte(nil), buf[:n]...)) {
					uc.WriteToUDP(out, from)
				}
			}
		}()
	}
	for _, tl := range tls {
		go func() {
			for {
				c, err := tl.Accept()
				if err != nil {
					return
				}
				go func() {
					defer c.Close()
					c.SetDeadline(time.Now().Add(10 * time.Second))
					q, err := readMsg(c, 65535)
					if err != nil {
						return
					}
					s.got.Add(1)
					for _, out := range s.respond(q) {
						c.Write(append(binary.BigEndian.AppendUint16(nil, uint16(len(out))), out...))
					}
				}()
			}
		}()
	}
	return s
}

// aAnswer answers q with an A record 192.0.2.1, its ID plus idDelta;
// none for the name "hold.".
func aAnswer(t testing.TB, q []byte, idDelta uint16) []byte {
	var p dnsmessage.Parser
	h, err := p.Start(q)
	if err != nil {
		t.Error(err)
		return nil
	}
	qq, err := p.Question()
	if err != nil {
		t.Error(err)
		return nil
	}
	if qq.Name.String() == "hold." {
		return nil
	}
	b := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: h.ID + idDelta, Response: true, RecursionAvailable: true})
	b.StartQuestions()
	b.Question(qq)
	b.StartAnswers()
	b.AResource(dnsmessage.ResourceHeader{Name: qq.Name, Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET, TTL: 60}, dnsmessage.AResource{A: [4]byte{192, 0, 2, 1}})
	out, err := b.Finish()
	if err != nil {
		t.Error(err)
	}
	return out
}

func newQuery(t testing.TB, id uint16, name string) []byte {
	t.Helper()
	b := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: id, RecursionDesired: true})
	b.StartQuestions()
	b.Question(dnsmessage.Question{Name: dnsmessage.MustNewName(name), Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET})
	q, err := b.Finish()
	if err != nil {
		t.Fatal(err)
	}
	return q
}

// forwarder starts a forwarder on 127.0.0.1 for clients 127.0.0.0/8
// asking up, with limits l.
func forwarder(t *testing.T, up *upstreamServer, l Limits, check func(netip.Addr) error, log func(string)) *Forwarder {
	t.Helper()
	f, err := Listen(Config{
		Listen:       []netip.Addr{netip.MustParseAddr("127.0.0.1")},
		Clients:      []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")},
		Check:        check,
		Log:          log,
		UpstreamPort: up.port,
		Limits:       l,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	f.SetUpstreams([]netip.Addr{netip.MustParseAddr("127.0.0.1")})
	return f
}

// result is what a client got: the answer's rcode and A record, or err.
type result struct {
	rcode dnsmessage.RCode
	a     netip.Addr
	id    uint16
	err   error
}

func parseResult(b []byte) result {
	var p dnsmessage.Parser
	h, err := p.Start(b)
	if err != nil {
		return result{err: err}
	}
	r := result{rcode: h.RCode, id: h.ID}
	p.SkipAllQuestions()
	if ah, err := p.AnswerHeader(); err == nil && ah.Type == dnsmessage.TypeA {
		a, _ := p.AResource()
		r.a = netip.AddrFrom4(a.A)
	}
	return r
}

// askUDP sends q from src (127.x.y.z) to the forwarder and waits up to
// wait for an answer.
func askUDP(t *testing.T, f *Forwarder, src string, q []byte, wait time.Duration) result {
	t.Helper()
	c, err := net.DialUDP("udp4", &net.UDPAddr{IP: net.ParseIP(src)}, &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: int(f.Port())})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(wait))
	if _, err := c.Write(q); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 65535)
	n, err := c.Read(buf)
	if err != nil {
		return result{err: err}
	}
	return parseResult(buf[:n])
}

func dialTCP(t *testing.T, f *Forwarder, src string) *net.TCPConn {
	t.Helper()
	c, err := tryTCP(t, f, src)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// tryTCP connects from src to the forwarder: a connection over a limit
// may be reset as soon as the forwarder accepts it, even before connect
// returns.
func tryTCP(t *testing.T, f *Forwarder, src string) (*net.TCPConn, error) {
	t.Helper()
	c, err := net.DialTCP("tcp4", &net.TCPAddr{IP: net.ParseIP(src)}, &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: int(f.Port())})
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	return c, nil
}

func askTCP(t *testing.T, c *net.TCPConn, q []byte) result {
	t.Helper()
	if _, err := c.Write(append(binary.BigEndian.AppendUint16(nil, uint16(len(q))), q...)); err != nil {
		return result{err: err}
	}
	b, err := readMsg(c, 65535)
	if err != nil {
		return result{err: err}
	}
	return parseResult(b)
}

var a1 = netip.MustParseAddr("192.0.2.1")

func TestForward(t *testing.T) {
	up := newUpstream(t)
	var ids sync.Map
	up.setAnswer(func(q []byte) [][]byte {
		ids.Store(binary.BigEndian.Uint16(q), true)
		return [][]byte{aAnswer(t, q, 0)}
	})
	f := forwarder(t, up, Limits{}, nil, nil)
	if r := askUDP(t, f, "127.0.0.2", newQuery(t, 777, "web.example."), 5*time.Second); r.err != nil || r.rcode != 0 || r.a != a1 || r.id != 777 {
		t.Errorf("UDP: %+v, want 192.0.2.1 with ID 777", r)
	}
	c := dialTCP(t, f, "127.0.0.2")
	for i := range 3 {
		if r := askTCP(t, c, newQuery(t, uint16(900+i), "web.example.")); r.err != nil || r.rcode != 0 || r.a != a1 || r.id != uint16(900+i) {
			t.Errorf("TCP query %d on one connection: %+v, want 192.0.2.1", i, r)
		}
	}
	// The upstream saw IDs of the forwarder's, not the client's.
	if _, ok := ids.Load(uint16(777)); ok && up.got.Load() < 8 {
		t.Log("the upstream saw the client's ID 777 (1 in 65536 by chance)")
	}
}

func TestRefuse(t *testing.T) {
	up := newUpstream(t)
	t.Run("no upstream", func(t *testing.T) {
		f := forwarder(t, up, Limits{}, nil, nil)
		f.SetUpstreams(nil)
		if r := askUDP(t, f, "127.0.0.2", newQuery(t, 1, "web.example."), 5*time.Second); r.err != nil || r.rcode != dnsmessage.RCodeRefused || r.id != 1 {
			t.Errorf("UDP: %+v, want REFUSED", r)
		}
		if r := askTCP(t, dialTCP(t, f, "127.0.0.2"), newQuery(t, 2, "web.example.")); r.err != nil || r.rcode != dnsmessage.RCodeRefused || r.id != 2 {
			t.Errorf("TCP: %+v, want REFUSED", r)
		}
	})
	t.Run("upstream forbidden by its route", func(t *testing.T) {
		before := up.got.Load()
		var mu sync.Mutex
		var logged []string
		f := forwarder(t, up, Limits{}, func(netip.Addr) error { return errors.New("routes through p1, a provider link") },
			func(s string) { mu.Lock(); logged = append(logged, s); mu.Unlock() })
		for range 3 {
			if r := askUDP(t, f, "127.0.0.2", newQuery(t, 3, "web.example."), 5*time.Second); r.rcode != dnsmessage.RCodeRefused {
				t.Errorf("%+v, want REFUSED", r)
			}
		}
		if n := up.got.Load() - before; n != 0 {
			t.Errorf("the forbidden upstream got %d queries", n)
		}
		mu.Lock()
		defer mu.Unlock()
		if want := []string{"upstream 127.0.0.1 not used: routes through p1, a provider link"}; strings.Join(logged, "\n") != want[0] {
			t.Errorf("logged %q, want %q once", logged, want)
		}
	})
	t.Run("not a query", func(t *testing.T) {
		f := forwarder(t, up, Limits{}, nil, nil)
		q := newQuery(t, 4, "web.example.")
		q[2] |= 0x80 // a response: dropped, never answered (no loops)
		if r := askUDP(t, f, "127.0.0.2", q, 300*time.Millisecond); r.err == nil {
			t.Errorf("an answer to a response: %+v", r)
		}
		q = newQuery(t, 5, "web.example.")
		q[2] |= 5 << 3 // opcode UPDATE
		if r := askUDP(t, f, "127.0.0.2", q, 5*time.Second); r.rcode != dnsmessage.RCodeNotImplemented || r.id != 5 {
			t.Errorf("UPDATE: %+v, want NOTIMP", r)
		}
		q = newQuery(t, 6, "web.example.")
		q[5] = 2 // two questions, one there
		if r := askUDP(t, f, "127.0.0.2", q, 5*time.Second); r.rcode != dnsmessage.RCodeFormatError || r.id != 6 {
			t.Errorf("QDCOUNT 2: %+v, want FORMERR", r)
		}
	})
	t.Run("not a client", func(t *testing.T) {
		f, err := Listen(Config{Listen: []netip.Addr{netip.MustParseAddr("127.0.0.1")}, Clients: []netip.Prefix{netip.MustParsePrefix("127.0.0.9/32")}, UpstreamPort: up.port})
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		f.SetUpstreams([]netip.Addr{netip.MustParseAddr("127.0.0.1")})
		if r := askUDP(t, f, "127.0.0.2", newQuery(t, 7, "web.example."), 300*time.Millisecond); r.err == nil {
			t.Errorf("an answer to a source that is no client: %+v", r)
		}
		if r := askUDP(t, f, "127.0.0.9", newQuery(t, 8, "web.example."), 5*time.Second); r.a != a1 {
			t.Errorf("the client: %+v", r)
		}
	})
}

// TestLimits: a client over its share gets REFUSED at once; another
// client still gets its answers.
func TestLimits(t *testing.T) {
	up := newUpstream(t)
	t.Run("in flight", func(t *testing.T) {
		// The held queries get SERVFAIL when the upstream has not
		// answered in 3 s; the rest happens while they are held.
		f := forwarder(t, up, Limits{InFlight: 4, Rate: 1000, Burst: 1000, Timeout: 3 * time.Second}, nil, nil)
		var wg sync.WaitGroup
		results := make(chan result, 4)
		for i := range 4 {
			wg.Go(func() { results <- askUDP(t, f, "127.0.0.2", newQuery(t, uint16(i), "hold."), 10*time.Second) })
		}
		// Until the four are in flight, a fifth may still go.
		deadline := time.Now().Add(10 * time.Second)
		for up.got.Load() < 4 && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
		if r := askUDP(t, f, "127.0.0.2", newQuery(t, 5, "web.example."), 5*time.Second); r.rcode != dnsmessage.RCodeRefused {
			t.Errorf("a fifth query in flight: %+v, want REFUSED", r)
		}
		if r := askUDP(t, f, "127.0.0.3", newQuery(t, 6, "web.example."), 5*time.Second); r.a != a1 {
			t.Errorf("another client: %+v, want an answer", r)
		}
		wg.Wait()
		close(results)
		for r := range results {
			if r.rcode != dnsmessage.RCodeServerFailure {
				t.Errorf("a query the upstream never answered: %+v, want SERVFAIL", r)
			}
		}
	})
	t.Run("rate", func(t *testing.T) {
		f := forwarder(t, up, Limits{Rate: 0.001, Burst: 3}, nil, nil)
		for i := range 3 {
			if r := askUDP(t, f, "127.0.0.2", newQuery(t, uint16(i), "web.example."), 5*time.Second); r.a != a1 {
				t.Errorf("query %d within the burst: %+v", i, r)
			}
		}
		if r := askUDP(t, f, "127.0.0.2", newQuery(t, 4, "web.example."), 5*time.Second); r.rcode != dnsmessage.RCodeRefused {
			t.Errorf("over the rate: %+v, want REFUSED", r)
		}
		if r := askUDP(t, f, "127.0.0.3", newQuery(t, 5, "web.example."), 5*time.Second); r.a != a1 {
			t.Errorf("another client: %+v", r)
		}
	})
	t.Run("TCP connections", func(t *testing.T) {
		f := forwarder(t, up, Limits{Conns: 2}, nil, nil)
		c1, c2 := dialTCP(t, f, "127.0.0.2"), dialTCP(t, f, "127.0.0.2")
		for _, c := range []*net.TCPConn{c1, c2} {
			if r := askTCP(t, c, newQuery(t, 1, "web.example.")); r.a != a1 {
				t.Errorf("within the limit: %+v", r)
			}
		}
		if c, err := tryTCP(t, f, "127.0.0.2"); err == nil {
			if r := askTCP(t, c, newQuery(t, 1, "web.example.")); r.err == nil {
				t.Errorf("a third connection answered: %+v", r)
			}
		}
		if r := askTCP(t, dialTCP(t, f, "127.0.0.3"), newQuery(t, 1, "web.example.")); r.a != a1 {
			t.Errorf("another client's connection: %+v", r)
		}
		c1.Close()
		// Its share comes back once the forwarder sees the close.
		deadline := time.Now().Add(10 * time.Second)
		for {
			var r result
			if c, err := tryTCP(t, f, "127.0.0.2"); err != nil {
				r.err = err
			} else if r = askTCP(t, c, newQuery(t, 1, "web.example.")); r.a == a1 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("no connection after one closed: %+v", r)
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
	t.Run("TCP idle and size", func(t *testing.T) {
		f := forwarder(t, up, Limits{Idle: 100 * time.Millisecond, MaxQuery: 100}, nil, nil)
		c := dialTCP(t, f, "127.0.0.2")
		c.Write([]byte{0}) // half a length, then nothing
		if _, err := c.Read(make([]byte, 1)); err == nil {
			t.Error("an idle connection was not closed")
		}
		c = dialTCP(t, f, "127.0.0.2")
		if r := askTCP(t, c, append(newQuery(t, 1, "web.example."), make([]byte, 100)...)); r.err == nil {
			t.Errorf("a query over MaxQuery answered: %+v", r)
		}
	})
}

// TestUpstreamFailover: a first upstream that refuses (nothing listens)
// or never answers costs a query its share of the timeout, and the next
// answers.
func TestUpstreamFailover(t *testing.T) {
	up := newUpstream(t)
	// 127.0.0.9: no listener, refused at once. 127.0.0.3: takes
	// queries and never answers.
	silentUDP, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 3), Port: int(up.port)})
	if err != nil {
		t.Fatal(err)
	}
	defer silentUDP.Close()
	silentTCP, err := net.ListenTCP("tcp4", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 3), Port: int(up.port)})
	if err != nil {
		t.Fatal(err)
	}
	defer silentTCP.Close() // the kernel completes handshakes; nothing is read
	f := forwarder(t, up, Limits{Timeout: 2 * time.Second}, nil, nil)
	for _, first := range []string{"127.0.0.9", "127.0.0.3"} {
		f.SetUpstreams([]netip.Addr{netip.MustParseAddr(first), netip.MustParseAddr("127.0.0.1")})
		for _, tcp := range []bool{false, true} {
			var r result
			if tcp {
				r = askTCP(t, dialTCP(t, f, "127.0.0.2"), newQuery(t, 1, "web.example."))
			} else {
				r = askUDP(t, f, "127.0.0.2", newQuery(t, 1, "web.example."), 5*time.Second)
			}
			if r.a != a1 {
				t.Errorf("first upstream %s (tcp %v): %+v, want the second's answer", first, tcp, r)
			}
		}
	}
	f.SetUpstreams([]netip.Addr{netip.MustParseAddr("127.0.0.9")})
	if r := askUDP(t, f, "127.0.0.2", newQuery(t, 2, "web.example."), 5*time.Second); r.rcode != dnsmessage.RCodeServerFailure {
		t.Errorf("the only upstream refusing: %+v, want SERVFAIL", r)
	}
}

// TestUpstreamLies: only the answer to the query asked counts.
func TestUpstreamLies(t *testing.T) {
	up := newUpstream(t)
	f := forwarder(t, up, Limits{Timeout: 300 * time.Millisecond}, nil, nil)
	other := newQuery(t, 0, "other.example.")
	up.setAnswer(func(q []byte) [][]byte {
		o := append([]byte(nil), other...)
		setID(o, binary.BigEndian.Uint16(q))
		return [][]byte{aAnswer(t, q, 1), aAnswer(t, o, 0), aAnswer(t, q, 0)}
	})
	if r := askUDP(t, f, "127.0.0.2", newQuery(t, 9, "web.example."), 5*time.Second); r.a != a1 || r.id != 9 {
		t.Errorf("after a wrong ID and a wrong question: %+v, want the right answer", r)
	}
	up.setAnswer(func(q []byte) [][]byte { return [][]byte{aAnswer(t, q, 1)} })
	if r := askUDP(t, f, "127.0.0.2", newQuery(t, 10, "web.example."), 5*time.Second); r.rcode != dnsmessage.RCodeServerFailure || r.id != 10 {
		t.Errorf("only a wrong ID: %+v, want SERVFAIL after the timeout", r)
	}
}

func TestCheckUpstream(t *testing.T) {
	clients := []netip.Prefix{netip.MustParsePrefix("100.64.0.0/16"), netip.MustParsePrefix("fd9f:2b8:5010::/48")}
	for _, tt := range []struct {
		addr string
		ok   bool
	}{
		{"192.0.2.53", true}, {"10.0.0.1", true}, {"100.127.255.53", true}, {"127.0.0.53", true},
		{"::1", true}, {"2001:db8::53", true}, {"fd00::53", true}, {"::ffff:192.0.2.53", true},
		{"100.64.0.2", false}, {"::ffff:100.64.0.2", false}, {"169.254.0.1", false}, {"224.0.0.251", false},
		{"255.255.255.255", false}, {"0.0.0.0", false}, {"0.1.2.3", false}, {"240.0.0.1", false},
		{"::", false}, {"fe80::1", false}, {"fe80::1%eth0", false}, {"ff02::fb", false},
		{"fd9f:2b8:5010:1::2", false}, {"fd9f:2b8:5010::53", false}, {"fd9f:2b8:5011::53", true}, {"ff05::1:3", false},
	} {
		err := CheckUpstream(netip.MustParseAddr(tt.addr), clients)
		if (err == nil) != tt.ok {
			t.Errorf("CheckUpstream(%s) = %v, want ok %v", tt.addr, err, tt.ok)
		}
	}
}

// TestFamilies (issue 18): the forwarder listens on both families, each
// on sockets of its own on one port, and answers a client of either
// family, over UDP and TCP, through an upstream of either: an IPv6
// client through an IPv4 upstream, and the other way round.
func TestFamilies(t *testing.T) {
	lo4, lo6 := netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("::1")
	up := newUpstream(t, lo4, lo6)
	f, err := Listen(Config{
		Listen:       []netip.Addr{lo4, lo6},
		Clients:      []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")},
		UpstreamPort: up.port,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if got := f.Addrs(); len(got) != 2 || got[0] != lo4 || got[1] != lo6 {
		t.Errorf("Addrs: %v, want both", got)
	}
	for _, u := range []netip.Addr{lo4, lo6} {
		// Only u may be asked: an answer came from it.
		f.SetUpstreams([]netip.Addr{u})
		for _, client := range []netip.Addr{lo4, lo6} {
			to := netip.AddrPortFrom(client, f.Port()).String()
			for _, proto := range []string{"udp", "tcp"} {
				c, err := net.DialTimeout(proto, to, 5*time.Second)
				if err != nil {
					t.Fatal(err)
				}
				c.SetDeadline(time.Now().Add(5 * time.Second))
				q := newQuery(t, 4711, "web.example.")
				var b []byte
				if proto == "tcp" {
					_, err = c.Write(append(binary.BigEndian.AppendUint16(nil, uint16(len(q))), q...))
					if err == nil {
						b, err = readMsg(c, 65535)
					}
				} else if _, err = c.Write(q); err == nil {
					b = make([]byte, 512)
					var n int
					n, err = c.Read(b)
					b = b[:n]
				}
				c.Close()
				if r := parseResult(b); err != nil || r.err != nil || r.rcode != 0 || r.a != a1 || r.id != 4711 {
					t.Errorf("client %v over %s, upstream %v: %+v, %v; want 192.0.2.1", client, proto, u, r, err)
				}
			}
		}
	}
}
