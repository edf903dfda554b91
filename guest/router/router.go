package router

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"slices"
	"strconv"

	"github.com/google/nftables"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"spectrum-os.org/netcfg/guest"
	"spectrum-os.org/netcfg/guest/router/dnsfwd"
	"spectrum-os.org/netcfg/internal/mac"
)

// Router is the provider's router. One goroutine owns its state and makes
// every change, in the order requests arrive: the agent's (a provider NIC
// came, changed or went) and the resolver watcher's (resolv.conf changed).
type Router struct {
	reqs    chan func()
	done    chan struct{} // closed when the owner has stopped
	stopped bool          // set by stop, on the owner

	// Owned by the owner goroutine.
	nft        *nftables.Conn
	ports      []uint32 // the netlink port of every nftables socket the router has written through
	ct         *conntrack
	watch      *resolvWatch
	routes     *routeCheck
	fwd        *dnsfwd.Forwarder
	fwdLog     chan string // the forwarder's lines, for the owner to log
	tables     *tableWatch
	held       bool       // forwarding (both families) is 0 until the table is back (restore)
	heldWhy    string     // why the table could not be put back, as last logged
	log        *guest.Log // lines about no one NIC
	links      []Link     // in no order: writeTable writes them by ifindex
	limits     Limits     // the limits table's, as last written whole
	pending    tables     // the tables other programs changed since the router last wrote them (restore)
	dns        DNS
	resolvers  string // the virtual resolvers the forwarder answers, for the log
	forwardWas byte   // what Stop sets net.ipv4.ip_forward back to
	// forward6Was is what Stop sets net.ipv6.conf.all.forwarding back
	// to; 0 for a kernel without IPv6, where the router routes IPv4
	// only.
	forward6Was byte

	// guard is the netlink socket that owns the guard table (guard.go):
	// the table lives as long as it is open.
	guard *netlink.Conn
}

var _ guest.Router = (*Router)(nil)

// Start is the agent's guest.StartRouter: it installs the router's table
// for the provider NICs among links (replacing one an earlier run left),
// turns IPv4 forwarding on, decides DNS from the provider's resolv.conf
// and follows it. The table goes in before forwarding is turned on, so no
// packet is ever forwarded without the rules.
//
// The conntrack entries of the clients of those first NICs are left
// alone: at boot there are none, and when the agent restarts, flushing
// them would cut every client's connections for nothing. A link that
// came or went while no agent ran has its entries flushed when it comes
// next.
func Start(_ context.Context, w io.Writer, links []guest.Link) (guest.Router, error) {
	r := &Router{reqs: make(chan func()), done: make(chan struct{}), log: guest.NewLog(w), fwdLog: make(chan string, 16)}
	for _, l := range links {
		if nic, err := mac.Classify(l.MAC); err == nil && nic.Side == mac.Provider {
			r.links = append(r.links, Link{Index: l.Index, Client: nic.Link.ClientAddr(), unsaid: true})
		}
	}
	if err := r.open(); err != nil {
		r.closeConns()
		return nil, err
	}
	go r.own()
	go r.watchResolv()
	go r.watchTable()
	go r.logForwarder()
	return r, nil
}

// open does start's work: see Start.
func (r *Router) open() error {
	var err error
	if err = r.dialNFT(); err != nil {
		return wrap("open nftables", err)
	}
	// Following the table's notifications before writing it, so that a
	// change made in between is not missed.
	if r.tables, err = dialTableWatch(); err != nil {
		return wrap("follow nftables' notifications", err)
	}
	if r.ct, err = dialConntrack(); err != nil {
		return wrap("open ctnetlink", err)
	}
	if r.watch, err = newResolvWatch(); err != nil {
		return wrap("inotify", err)
	}
	if r.routes, err = newRouteCheck(); err != nil {
		return wrap("open rtnetlink", err)
	}
	// The forwarder before the table: the table redirects to its port.
	// A kernel without IPv6: IPv4 only, and a line (the forwarder's).
	r.fwd, err = dnsfwd.Listen(dnsfwd.Config{
		Listen:  []netip.Addr{netip.IPv4Unspecified(), netip.IPv6Unspecified()},
		Clients: clientPrefixes,
		Check:   r.routes.check,
		Log: func(s string) {
			select {
			case r.fwdLog <- s:
			default: // a line lost rather than a query held
			}
		},
	})
	if err != nil {
		return err
	}
	r.resolvers = Resolver
	if slices.ContainsFunc(r.fwd.Addrs(), netip.Addr.Is6) {
		r.resolvers += " and " + Resolver6
	}
	prev, prev6, found, err := readForwardWas(r.nft)
	if err != nil {
		return wrap("read table inet "+TableName, err)
	}
	cur, err := readForward(IPForward)
	if err != nil {
		return err
	}
	var cur6 byte
	if hasIPv6() {
		if cur6, err = readForward(IPv6Forward); err != nil {
			return err
		}
	}
	verb := "added"
	r.forwardWas, r.forward6Was = cur, cur6
	if found {
		// An earlier run's table: forwarding is as that run left it,
		// and the table says how it was before.
		r.forwardWas, verb = prev, "replaced the earlier run's"
		if prev6 != 0 && cur6 != 0 {
			r.forward6Was = prev6
		}
	}
	// The guard before the table and before forwarding: clients stay
	// apart whatever becomes of the table (guard.go).
	if err := r.addGuard(); err != nil {
		return err
	}
	var ferr error
	r.dns, ferr = r.decideDNS()
	r.fwd.SetUpstreams(r.dns.Upstreams)
	if err := r.write(true); err != nil {
		return wrap("add table inet "+TableName, err)
	}
	if cur != '1' {
		if err := writeForward(IPForward, '1'); err != nil {
			deleteTable(r.nft)
			deleteLimitsTable(r.nft)
			_ = r.nft.Flush()
			return wrap("turn IPv4 forwarding on", err)
		}
	}
	r.say(verb + " table inet " + TableName + " (" + strconv.Itoa(len(r.links)) + " provider NICs)")
	r.say(r.limits.describe())
	r.sayForward(IPForward, cur)
	if cur6 == 0 {
		r.say("no IPv6 in this kernel (no " + IPv6Forward + "): routing IPv4 only")
	} else {
		// The uplinks keep their default routes from router
		// advertisements: accept_ra 2 before forwarding goes on.
		r.keepRA()
		if cur6 != '1' {
			if err := writeForward(IPv6Forward, '1'); err != nil {
				// Fail closed, as for IPv4.
				_ = writeForward(IPForward, cur)
				deleteTable(r.nft)
				deleteLimitsTable(r.nft)
				_ = r.nft.Flush()
				return wrap("turn IPv6 forwarding on", err)
			}
		}
		r.sayForward(IPv6Forward, cur6)
	}
	if ferr != nil {
		r.say("error: " + ferr.Error())
	}
	r.say("DNS forwarder on port " + strconv.Itoa(int(r.fwd.Port())) + ", UDP and TCP")
	for _, m := range r.dns.describe(r.resolvers) {
		r.say(m)
	}
	return nil
}

// sayForward logs that the forwarding switch at path is on, and what it
// was.
func (r *Router) sayForward(path string, was byte) {
	if was != '1' {
		r.say("set " + forwardName(path) + " 1, was " + string(was))
	} else {
		r.say(forwardName(path) + " already 1")
	}
}

// keepRA sets accept_ra 2 where it is 1 (see keepRA), and logs it.
func (r *Router) keepRA() {
	changed, errs := keepRA(func(index uint32) bool {
		for _, l := range r.links {
			if l.Index == index {
				return true
			}
		}
		return false
	})
	if m := keepRALine(changed); m != "" {
		r.say(m)
	}
	for _, err := range errs {
		r.say("error: " + err.Error())
	}
}

// wrap is err with what was being done in front.
func wrap(what string, err error) error { return fmt.Errorf("%s: %w", what, err) }

// say logs one line of the router's own (about no one NIC).
//
//go:noinline
func (r *Router) say(msg string) {
	r.log.Line(guest.RouterPrefix, msg)
	r.log.Flush()
}

// decideDNS watches resolv.conf (and what it links to) and then decides
// DNS from it: watching first, so that a change in between is not missed.
// The watch is the watcher goroutine's (and start's, before it runs).
func (r *Router) decideDNS() (DNS, error) {
	err := r.watch.follow(ResolvConf)
	if err != nil {
		err = wrap("follow "+ResolvConf, err)
	}
	return decideDNS(ResolvConf), err
}

// watchResolv runs until the watch is closed: after each change to the
// resolver file it decides DNS again and hands the decision to the owner.
func (r *Router) watchResolv() {
	for r.watch.wait() == nil {
		d, err := r.decideDNS()
		r.call(func() {
			if err != nil {
				r.say("error: " + err.Error())
			}
			r.setDNS(d)
		})
	}
}

// logForwarder logs the forwarder's lines on the owner, until Stop.
func (r *Router) logForwarder() {
	for {
		select {
		case s := <-r.fwdLog:
			r.call(func() { r.say("DNS " + s) })
		case <-r.done:
			return
		}
	}
}

func (r *Router) own() {
	for f := range r.reqs {
		f()
		if r.stopped {
			close(r.done)
			return
		}
	}
}

// call runs f on the owner and waits for it; after Stop it does nothing.
func (r *Router) call(f func()) {
	ran := make(chan struct{})
	select {
	case r.reqs <- func() { f(); close(ran) }:
	case <-r.done:
		return
	}
	select {
	case <-ran:
	case <-r.done:
	}
}

// write replaces the main table with the one for the current state and
// brings the limits table in step, in one transaction: the limits table
// is written whole when limits is set (start, restore) or
// nf_conntrack_max changed the limits, which starts every link's count
// again; otherwise only the elements of the provider NICs at the indexes
// in changed go in or out (limits.go), and every other link keeps its
// state.
func (r *Router) write(limits bool, changed ...uint32) error {
	if r.nft == nil {
		// The last reconnection failed: try again.
		if err := r.dialNFT(); err != nil {
			return wrap("open nftables", err)
		}
	}
	// The limits follow nf_conntrack_max, which the provider may
	// change. Its file is there once nf_conntrack is loaded, which a
	// kernel with modules does for the table's first write: the tables
	// are written again then.
	ctMax, err := readConntrackMax()
	again := errors.Is(err, unix.ENOENT)
	if err != nil && !again {
		return err
	}
	for {
		l := LimitsFor(ctMax)
		whole := limits || l != r.limits
		err := writeTable(r.nft, spec{links: r.links, dnsPort: r.fwd.Port(), forwardWas: r.forwardWas, forward6Was: r.forward6Was})
		if err == nil && whole {
			err = writeLimitsTable(r.nft, r.links, r.fwd.Port(), l)
		}
		for _, ix := range changed {
			if err == nil && !whole {
				err = queueLinkLimits(r.nft, ix, slices.ContainsFunc(r.links, func(l Link) bool { return l.Index == ix }))
			}
		}
		if err != nil {
			// What it queued must not go with the next write.
			_ = r.nft.CloseLasting()
			r.nft = nil
			return err
		}
		if err := r.commit(); err != nil {
			return err
		}
		r.pending &^= tableMain
		if whole {
			r.pending &^= tableLimits
			if !limits {
				r.say("nf_conntrack_max is " + strconv.FormatUint(uint64(ctMax), 10) + " now: wrote table inet " + LimitsTableName + " again, every link's counts start again")
				r.say(l.describe())
			}
			r.limits = l
		}
		if !again {
			return nil
		}
		again = false
		if ctMax, err = readConntrackMax(); err != nil {
			return err
		}
	}
}

// ConntrackMax is the size of the conntrack table, whose quarter a
// link's connections may fill (LimitsFor).
const ConntrackMax = "/proc/sys/net/netfilter/nf_conntrack_max"

func readConntrackMax() (uint32, error) {
	s, err := readFileString(ConntrackMax)
	if err != nil {
		return 0, wrap("read "+ConntrackMax, err)
	}
	n, err := strconv.ParseUint(s, 10, 32)
	if err != nil {
		return 0, errors.New(ConntrackMax + ": unexpected value " + quote(s))
	}
	return uint32(n), nil
}

// commit sends what is queued on the router's nftables connection, in
// one transaction. google/nftables' Conn does not recover from every
// failed Flush (an error it keeps, acknowledgements left unread on the
// socket that the next Flush would take for its own): after a failure,
// the next write has a new connection.
func (r *Router) commit() error {
	err := r.nft.Flush()
	if err != nil {
		_ = r.nft.CloseLasting()
		r.nft = nil
		if derr := r.dialNFT(); derr != nil {
			err = errors.Join(err, wrap("open nftables again", derr))
		}
	}
	return err
}

// dialNFT opens the router's nftables connection and records its netlink
// port, by which tableWatch's notifications of the router's own changes
// are told from everyone else's.
func (r *Router) dialNFT() error {
	var port uint32
	c, err := nftables.New(nftables.AsLasting(), nftables.WithSockOptions(func(c *netlink.Conn) error {
		port = c.PID()
		return nil
	}))
	if err != nil {
		return err
	}
	r.nft = c
	r.ports = append(r.ports, port)
	return nil
}

// Provider implements guest.Router: the link's rules go in (a new link,
// or a new client address on it), and the conntrack entries of its
// client address, which may be a previous client's, are flushed.
func (r *Router) Provider(index uint32, client netip.Addr) (msgs []string, err error) {
	r.call(func() { msgs, err = r.change(index, client) })
	return msgs, err
}

// Gone implements guest.Router.
func (r *Router) Gone(index uint32) (msgs []string) {
	r.call(func() { msgs, _ = r.change(index, netip.Addr{}) })
	return msgs
}

// change makes client the client of the provider NIC at index; the zero
// Addr removes the NIC. It writes the table when that changes it, flushes
// the conntrack entries of the client addresses concerned, and returns
// what it did, for the NIC's log.
func (r *Router) change(index uint32, client netip.Addr) ([]string, error) {
	var old netip.Addr
	next := make([]Link, 0, len(r.links)+1)
	for i, l := range r.links {
		if l.Index != index {
			next = append(next, l)
		} else if old = l.Client; old == client && l.unsaid {
			// In the first table already: only its IPv6 settings,
			// before the agent brings it up.
			msg, err := quietIPv6(index)
			if err != nil {
				return nil, err
			}
			r.links[i].unsaid = false
			return appendNonEmpty([]string{"routing for client " + client.String()}, msg), nil
		}
	}
	if old == client {
		return nil, nil
	}
	var v6msg string
	if client.IsValid() {
		// Before the table: a NIC the router cannot make deaf to
		// router advertisements stays down.
		var err error
		if v6msg, err = quietIPv6(index); err != nil {
			return nil, err
		}
	}
	if client.IsValid() {
		next = append(next, Link{Index: index, Client: client})
	}
	prev := r.links
	r.links = next
	msg := "routing for client " + client.String()
	if !client.IsValid() {
		msg = "stopped routing for client " + old.String()
	} else if old.IsValid() {
		msg += " (was " + old.String() + ")"
	}
	msgs := appendNonEmpty([]string{msg}, v6msg)
	err := r.write(false, index)
	if errors.Is(err, unix.ENOENT) {
		// The limits table is gone (another program's change the
		// monitor has not put back yet, or could not): written whole.
		err = r.write(true)
	}
	if err != nil {
		err = wrap("table inet "+TableName, err)
		if client.IsValid() {
			// Fail closed: the NIC is not brought up.
			r.links = prev
			return nil, err
		}
		msgs = append(msgs, "error: "+err.Error())
	}
	// The new client's address: the entries from it, NAT state an
	// earlier client with the address left, which the new one could
	// otherwise inherit. The entries to it are the provider's own
	// connections, which reach the new client as nothing but resets:
	// one walk of the conntrack table instead of two, while the agent
	// waits to bring the NIC up. The address that goes: from and to.
	// Both families: the link's client's IPv6 address goes with its
	// IPv4 one.
	if client.IsValid() {
		msgs = r.flush(msgs, client, index, true, false)
		if r.forward6Was != 0 {
			msgs = r.flush(msgs, Link{Client: client}.client6(), index, true, false)
		}
	}
	if old.IsValid() {
		msgs = r.flush(msgs, old, index, true, true)
		if r.forward6Was != 0 {
			msgs = r.flush(msgs, Link{Client: old}.client6(), index, true, true)
		}
	}
	return msgs, nil
}

func appendNonEmpty(msgs []string, m string) []string {
	if m == "" {
		return msgs
	}
	return append(msgs, m)
}

// flush deletes the conntrack entries from a (with from) and to a (with
// to), IPv6's among those of the link at index (conntrack.flush), and
// appends what it did to msgs.
func (r *Router) flush(msgs []string, a netip.Addr, index uint32, from, to bool) []string {
	what := a.String()
	n, err := r.ct.flush(a, index, from, to)
	if n > 0 {
		msgs = append(msgs, "flushed "+strconv.Itoa(n)+" conntrack entries of "+what)
	}
	if err != nil {
		msgs = append(msgs, "error: flush conntrack entries of "+what+": "+err.Error())
	}
	return msgs
}

// setDNS makes d the DNS decision: the forwarder's upstreams. The table
// does not change (it redirects to the forwarder whatever the upstream),
// so neither do the clients' conntrack entries.
func (r *Router) setDNS(d DNS) {
	if d.equal(r.dns) {
		return
	}
	r.dns = d
	r.fwd.SetUpstreams(d.Upstreams)
	for _, m := range d.describe(r.resolvers) {
		r.say(m)
	}
}

// Stop implements guest.Router: the table goes, forwarding goes back to
// what it was before the router (the first one, when an earlier run
// crashed) turned it on, and the resolver watch ends.
func (r *Router) Stop() (err error) {
	r.call(func() { err = r.stop() })
	return err
}

// stop undoes what the router did, in the order that never leaves
// forwarding on without the rules: the table's watch ends first (the
// router's own removal must not be put back), forwarding goes back to
// what it was, and only then does the table go. The agent has taken the
// provider NICs down before (guest.Router's Stop), so with forwarding on
// before the router (sysctl.d, Docker), nothing reaches a provider link
// once the table is gone either.
func (r *Router) stop() error {
	r.stopped = true
	_ = r.tables.close()
	var errs []error
	for _, f := range r.forwards() {
		name, was := forwardName(f.path), string(f.was)
		if cur, err := readForward(f.path); err != nil {
			errs = append(errs, err)
		} else if cur == f.was {
			r.say("left " + name + " " + was + ", as it was")
		} else if err := writeForward(f.path, f.was); err != nil {
			errs = append(errs, wrap("set "+name+" back to "+was, err))
		} else {
			r.say("set " + name + " " + was + " again")
		}
	}
	for _, t := range []struct {
		name  string
		queue func(*nftables.Conn)
	}{{TableName, deleteTable}, {LimitsTableName, deleteLimitsTable}} {
		if r.nft == nil {
			if err := r.dialNFT(); err != nil {
				errs = append(errs, wrap("remove table inet "+t.name+": open nftables", err))
				continue
			}
		}
		t.queue(r.nft)
		if err := r.commit(); err != nil {
			errs = append(errs, wrap("remove table inet "+t.name, err))
		} else {
			r.say("removed table inet " + t.name)
		}
	}
	if err := r.removeGuard(); err != nil {
		errs = append(errs, err)
	}
	r.closeConns()
	return errors.Join(errs...)
}

// forwardSwitch is a forwarding switch (IPForward, IPv6Forward) and its
// value from before the router.
type forwardSwitch struct {
	path string
	was  byte
}

// forwards is the forwarding switches the router turns on: IPv4's, and
// IPv6's unless the kernel has no IPv6.
func (r *Router) forwards() []forwardSwitch {
	fs := []forwardSwitch{{IPForward, r.forwardWas}}
	if r.forward6Was != 0 {
		fs = append(fs, forwardSwitch{IPv6Forward, r.forward6Was})
	}
	return fs
}

func (r *Router) closeConns() {
	if r.guard != nil {
		_ = r.guard.Close() // the guard table goes with it
	}
	if r.fwd != nil {
		_ = r.fwd.Close()
	}
	if r.routes != nil {
		_ = r.routes.close()
	}
	if r.tables != nil {
		_ = r.tables.close()
	}
	if r.watch != nil {
		_ = r.watch.close()
	}
	if r.ct != nil {
		_ = r.ct.close()
	}
	if r.nft != nil {
		_ = r.nft.CloseLasting()
	}
}
