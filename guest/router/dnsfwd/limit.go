package dnsfwd

import (
	"net/netip"
	"sync"
	"time"
)

// Limits bound what one client, and all of them together, can make the
// forwarder do. The zero value of a field means its default (DefaultLimits).
type Limits struct {
	InFlight      int           // queries of one client being forwarded at once (UDP and TCP)
	Rate          float64       // queries of one client forwarded per second, on average ...
	Burst         int           // ... and at once after a quiet time
	TotalInFlight int           // queries of all clients being forwarded at once
	Conns         int           // TCP connections of one client open at once
	TotalConns    int           // TCP connections of all clients
	Idle          time.Duration // a TCP connection with no complete query for this long is closed
	Timeout       time.Duration // a query's time with its upstreams, shared in order; none answered: SERVFAIL
	MaxQuery      int           // bytes of a query over TCP (UDP: one datagram)
}

// DefaultLimits are sized for a client that is a desktop or a server
// resolving for itself (a page load is tens of names; a caching resolver
// in the client sends fewer), and so that the forwarder of a provider with
// a hundred clients stays within a few thousand descriptors.
var DefaultLimits = Limits{
	InFlight:      64,
	Rate:          100,
	Burst:         200,
	TotalInFlight: 1024,
	Conns:         8,
	TotalConns:    256,
	Idle:          10 * time.Second,
	Timeout:       4 * time.Second,
	MaxQuery:      4096,
}

func (l Limits) withDefaults() Limits {
	d := DefaultLimits
	set := func(v *int, def int) {
		if *v <= 0 {
			*v = def
		}
	}
	set(&l.InFlight, d.InFlight)
	set(&l.Burst, d.Burst)
	set(&l.TotalInFlight, d.TotalInFlight)
	set(&l.Conns, d.Conns)
	set(&l.TotalConns, d.TotalConns)
	set(&l.MaxQuery, d.MaxQuery)
	if l.Rate <= 0 {
		l.Rate = d.Rate
	}
	if l.Idle <= 0 {
		l.Idle = d.Idle
	}
	if l.Timeout <= 0 {
		l.Timeout = d.Timeout
	}
	return l
}

// limiter keeps each client's share.
type limiter struct {
	l     Limits
	now   func() time.Time
	mu    sync.Mutex
	c     map[netip.Addr]*share
	total int // queries in flight, all clients
	conns int // TCP connections, all clients
	swept time.Time
}

type share struct {
	inFlight, conns int
	tokens          float64
	at              time.Time // when tokens was right
}

func newLimiter(l Limits, now func() time.Time) *limiter {
	return &limiter{l: l, now: now, c: map[netip.Addr]*share{}}
}

// get is a's share, its tokens brought up to now. Called with mu held.
func (lm *limiter) get(a netip.Addr) *share {
	now := lm.now()
	s := lm.c[a]
	if s == nil {
		s = &share{tokens: float64(lm.l.Burst), at: now}
		lm.c[a] = s
	}
	s.tokens = min(float64(lm.l.Burst), s.tokens+now.Sub(s.at).Seconds()*lm.l.Rate)
	s.at = now
	if now.Sub(lm.swept) > 10*time.Second {
		// Forget clients that hold nothing and whose bucket is full
		// again: a share that comes back starts full anyway.
		lm.swept = now
		for k, o := range lm.c {
			if o != s && o.inFlight == 0 && o.conns == 0 &&
				o.tokens+now.Sub(o.at).Seconds()*lm.l.Rate >= float64(lm.l.Burst) {
				delete(lm.c, k)
			}
		}
	}
	return s
}

// query takes a query's share for a; false: over a limit, refuse it.
func (lm *limiter) query(a netip.Addr) bool {
	lm.mu.Lock()
	defer lm.mu.Unlock()
	s := lm.get(a)
	if s.inFlight >= lm.l.InFlight || s.tokens < 1 || lm.total >= lm.l.TotalInFlight {
		return false
	}
	s.inFlight++
	s.tokens--
	lm.total++
	return true
}

// done gives back what query took.
func (lm *limiter) done(a netip.Addr) {
	lm.mu.Lock()
	defer lm.mu.Unlock()
	lm.c[a].inFlight--
	lm.total--
}

// conn takes a TCP connection's share for a; false: over a limit.
func (lm *limiter) conn(a netip.Addr) bool {
	lm.mu.Lock()
	defer lm.mu.Unlock()
	s := lm.get(a)
	if s.conns >= lm.l.Conns || lm.conns >= lm.l.TotalConns {
		return false
	}
	s.conns++
	lm.conns++
	return true
}

// closed gives back what conn took.
func (lm *limiter) closed(a netip.Addr) {
	lm.mu.Lock()
	defer lm.mu.Unlock()
	lm.c[a].conns--
	lm.conns--
}
