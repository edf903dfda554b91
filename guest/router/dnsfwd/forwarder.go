package dnsfwd

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"golang.org/x/net/dns/dnsmessage"
	"golang.org/x/sys/unix"
)

// Config is what a Forwarder is made with.
type Config struct {
	// Listen is the addresses to listen on, one per family served
	// (0.0.0.0 and ::): UDP and TCP on each, all on one port, which the
	// ruleset redirects clients' DNS to. Each IPv6 address has sockets
	// of its own (IPV6_V6ONLY). An IPv6 address on a kernel without
	// IPv6 (EAFNOSUPPORT) is left out, with a line in Log, as long as
	// an address of the other family remains.
	Listen []netip.Addr
	// Port is that port; zero picks a free one (see Port).
	Port uint16
	// Clients are the sources queries are taken from; anything else is
	// dropped (the ruleset lets nothing else reach the port either).
	Clients []netip.Prefix
	// Check tells whether an upstream may be sent to now (where it
	// routes); a non-nil error says why not. Its verdict stands for a
	// second. Nil: every upstream given may be.
	Check func(netip.Addr) error
	// Log gets a line for each change worth saying (an upstream not
	// usable, or usable again). Nil: nothing is said.
	Log func(string)
	// UpstreamPort is the port upstreams are asked on; zero means 53.
	UpstreamPort uint16
	Limits       Limits // zero fields: DefaultLimits'
}

// Forwarder answers clients' queries through the current upstream.
type Forwarder struct {
	cfg   Config
	lim   *limiter
	ups   upstreams
	port  uint16
	addrs []netip.Addr // listened on
	udp   []pconn
	tcp   []*net.TCPListener
	ctx   context.Context
	stop  context.CancelFunc
	wg    sync.WaitGroup
	close sync.Once
}

// Listen opens the forwarder's sockets and starts serving; SetUpstreams
// gives it somewhere to forward to (until then every query is REFUSED).
func Listen(cfg Config) (*Forwarder, error) {
	if len(cfg.Listen) == 0 {
		return nil, errors.New("dns forwarder: no address to listen on")
	}
	cfg.Limits = cfg.Limits.withDefaults()
	if cfg.UpstreamPort == 0 {
		cfg.UpstreamPort = 53
	}
	if cfg.Log == nil {
		cfg.Log = func(string) {}
	}
	if cfg.Check == nil {
		cfg.Check = func(netip.Addr) error { return nil }
	}
	f := &Forwarder{cfg: cfg, lim: newLimiter(cfg.Limits, time.Now)}
	f.ups = upstreams{check: cfg.Check, log: cfg.Log, now: time.Now}
	var err error
	// A port free for UDP may be taken for TCP (or on another family):
	// try again with another.
	for range 20 {
		if err = f.listen(cfg.Port); err == nil || cfg.Port != 0 {
			break
		}
	}
	if err != nil {
		return nil, err
	}
	f.ctx, f.stop = context.WithCancel(context.Background())
	for _, c := range f.udp {
		f.wg.Go(func() { f.serveUDP(c) })
	}
	for _, l := range f.tcp {
		f.wg.Go(func() { f.serveTCP(l) })
	}
	return f, nil
}

// listen opens every socket on port (0: the first UDP socket picks).
func (f *Forwarder) listen(port uint16) error {
	var no6 error
	for _, a := range f.cfg.Listen {
		ap := netip.AddrPortFrom(a, port)
		c, err := listenPacket(ap)
		if a.Is6() && errors.Is(err, unix.EAFNOSUPPORT) {
			no6 = unix.EAFNOSUPPORT
			continue
		}
		if err != nil {
			f.closeSockets()
			return errors.New("dns forwarder: listen on udp " + ap.String() + ": " + err.Error())
		}
		f.udp = append(f.udp, c)
		port = c.port()
		ap = netip.AddrPortFrom(a, port)
		l, err := net.ListenTCP(network("tcp", a), net.TCPAddrFromAddrPort(ap))
		if err != nil {
			f.closeSockets()
			return errors.New("dns forwarder: listen on tcp " + ap.String() + ": " + err.Error())
		}
		f.tcp = append(f.tcp, l)
		f.addrs = append(f.addrs, a)
	}
	if len(f.udp) == 0 {
		return errors.New("dns forwarder: no address it can listen on: this kernel has no IPv6")
	}
	if no6 != nil {
		f.cfg.Log("forwarder on IPv4 only: this kernel has no IPv6 (" + no6.Error() + ")")
	}
	f.port = port
	return nil
}

func (f *Forwarder) closeSockets() {
	for _, c := range f.udp {
		c.Close()
	}
	for _, l := range f.tcp {
		l.Close()
	}
	f.udp, f.tcp, f.addrs = nil, nil, nil
}

// network is "udp4" or "udp6" (proto "udp"), by a's family.
func network(proto string, a netip.Addr) string {
	if a.Is4() {
		return proto + "4"
	}
	return proto + "6"
}

// Port is the port the forwarder listens on, UDP and TCP.
func (f *Forwarder) Port() uint16 { return f.port }

// Addrs is the addresses of Config.Listen the forwarder listens on: all,
// or those of IPv4 on a kernel without IPv6.
func (f *Forwarder) Addrs() []netip.Addr { return f.addrs }

// SetUpstreams makes addrs, in order, the upstreams: each query goes to
// the first one Check allows now, then to the next allowed if that one
// fails. Addresses CheckUpstream refuses are the
// caller's to leave out. None: every query is REFUSED.
func (f *Forwarder) SetUpstreams(addrs []netip.Addr) { f.ups.set(addrs) }

// Close stops the forwarder and waits for every query it was handling.
func (f *Forwarder) Close() error {
	f.close.Do(func() {
		f.stop()
		f.closeSockets()
		f.wg.Wait()
	})
	return nil
}

// client is the client a source address is, or false when it is none.
func (f *Forwarder) client(a netip.Addr) bool {
	a = a.Unmap()
	for _, p := range f.cfg.Clients {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// answer is what the forwarder sends back for the query msg from client
// src: the upstream's answer, or an answer of its own (REFUSED over a
// limit or with no upstream; FORMERR, NOTIMP; SERVFAIL when the upstream
// failed). Nil: nothing (see parseQuery). tcp says how to ask upstream.
func (f *Forwarder) answer(msg []byte, src netip.Addr, tcp bool) []byte {
	qu, rcode, err := parseQuery(msg)
	if err != nil {
		return nil
	}
	if rcode != dnsmessage.RCodeSuccess {
		return reply(qu, rcode, rcode != dnsmessage.RCodeFormatError)
	}
	if !f.lim.query(src) {
		return reply(qu, dnsmessage.RCodeRefused, true)
	}
	defer f.lim.done(src)
	ups := f.ups.pick()
	if len(ups) == 0 {
		return reply(qu, dnsmessage.RCodeRefused, true)
	}
	// As a stub resolver does, the next upstream when one fails (no
	// answer in its share of Limits.Timeout, or refused at once): a
	// stale first nameserver costs each query a share, not all of it.
	end := time.Now().Add(f.cfg.Limits.Timeout)
	for i, up := range ups {
		share := time.Until(end) / time.Duration(len(ups)-i)
		out, err := f.exchange(up, msg, qu, tcp, share)
		if err == nil {
			return out
		}
		if f.ctx.Err() != nil {
			break
		}
	}
	return reply(qu, dnsmessage.RCodeServerFailure, true)
}

// exchange asks upstream up: msg goes with a random ID of its own, on a
// socket of its own, and the answer comes back with the client's ID.
func (f *Forwarder) exchange(up netip.Addr, msg []byte, qu query, tcp bool, timeout time.Duration) ([]byte, error) {
	q := append([]byte(nil), msg...)
	id := uint16(rand.Uint32())
	setID(q, id)
	ctx, cancel := context.WithTimeout(f.ctx, timeout)
	defer cancel()
	to := netip.AddrPortFrom(up, f.cfg.UpstreamPort).String()
	var d net.Dialer
	proto := "udp"
	if tcp {
		proto = "tcp"
	}
	c, err := d.DialContext(ctx, proto, to)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	deadline, _ := ctx.Deadline()
	c.SetDeadline(deadline)
	// Close ends a wait when the forwarder stops.
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	var out []byte
	if tcp {
		if out, err = roundTripTCP(c, q); err == nil {
			err = checkAnswer(out, id, qu.q)
		}
	} else {
		out, err = roundTripUDP(c, q, id, qu.q)
	}
	if err != nil {
		return nil, err
	}
	setID(out, qu.hdr.ID)
	return out, nil
}

// roundTripUDP sends q on the connected socket c and returns the first
// datagram that is its answer; others (late answers, forgeries that got
// the port right) are skipped until the deadline.
func roundTripUDP(c net.Conn, q []byte, id uint16, qq dnsmessage.Question) ([]byte, error) {
	if _, err := c.Write(q); err != nil {
		return nil, err
	}
	buf := make([]byte, 65535)
	for {
		n, err := c.Read(buf)
		if err != nil {
			return nil, err
		}
		if checkAnswer(buf[:n], id, qq) == nil {
			return buf[:n:n], nil
		}
	}
}

// roundTripTCP sends q with its length in front and reads one message.
func roundTripTCP(c net.Conn, q []byte) ([]byte, error) {
	if _, err := c.Write(binary.BigEndian.AppendUint16(nil, uint16(len(q)))); err != nil {
		return nil, err
	}
	if _, err := c.Write(q); err != nil {
		return nil, err
	}
	return readMsg(c, 65535)
}

// readMsg reads a length and a message of at most max bytes.
func readMsg(r io.Reader, max int) ([]byte, error) {
	var n [2]byte
	if _, err := io.ReadFull(r, n[:]); err != nil {
		return nil, err
	}
	l := int(binary.BigEndian.Uint16(n[:]))
	if l < headerLen || l > max {
		return nil, errors.New("a message of " + strconv.Itoa(l) + " bytes")
	}
	b := make([]byte, l)
	_, err := io.ReadFull(r, b)
	return b, err
}

// serveUDP reads queries on c until it is closed. Each query is handled
// on a goroutine of its own; the limiter bounds how many wait on an
// upstream, and over the bounds a query is answered here, at once.
func (f *Forwarder) serveUDP(c pconn) {
	buf := make([]byte, 65535)
	for {
		n, src, dst, ifindex, err := c.read(buf)
		if err != nil {
			if f.ctx.Err() != nil {
				return
			}
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		if !f.client(src.Addr()) || n < headerLen {
			continue
		}
		msg := append([]byte(nil), buf[:n]...)
		f.wg.Go(func() {
			if out := f.answer(msg, src.Addr().Unmap(), false); out != nil {
				c.write(out, src, dst, ifindex)
			}
		})
	}
}

// serveTCP accepts connections on l until it is closed.
func (f *Forwarder) serveTCP(l *net.TCPListener) {
	for {
		c, err := l.AcceptTCP()
		if err != nil {
			if f.ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			// EMFILE and the like: wait rather than spin.
			time.Sleep(10 * time.Millisecond)
			continue
		}
		src := c.RemoteAddr().(*net.TCPAddr).AddrPort().Addr().Unmap()
		if !f.client(src) || !f.lim.conn(src) {
			// A reset, at once: the client fails fast.
			c.SetLinger(0)
			c.Close()
			continue
		}
		f.wg.Go(func() {
			defer f.lim.closed(src)
			defer c.Close()
			stop := context.AfterFunc(f.ctx, func() { c.Close() })
			defer stop()
			f.serveConn(c, src)
		})
	}
}

// serveConn answers the queries on one TCP connection, one at a time,
// until the client closes it, sends something that is not a query of
// bounded size, or is idle for Limits.Idle.
func (f *Forwarder) serveConn(c *net.TCPConn, src netip.Addr) {
	for {
		c.SetDeadline(time.Now().Add(f.cfg.Limits.Idle))
		msg, err := readMsg(c, f.cfg.Limits.MaxQuery)
		if err != nil {
			return
		}
		out := f.answer(msg, src, true)
		if out == nil {
			return
		}
		c.SetDeadline(time.Now().Add(f.cfg.Limits.Idle))
		if _, err := c.Write(append(binary.BigEndian.AppendUint16(nil, uint16(len(out))), out...)); err != nil {
			return
		}
	}
}
