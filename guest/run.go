package guest

import (
	"context"
	"errors"
	"io"
	"net"
	"strconv"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"spectrum-os.org/netcfg/internal/mac"
)

// DonePrefix begins the summary line the agent writes to the console when
// its first pass over the NICs is over (with -watch it keeps running after
// it). The whole line is what DoneLine returns, for example
//
//	spectrum-netcfg: done: 2 configured, 1 failed, status 1
//
// where "configured" counts the 0A:B3:EC NICs now in their wanted state,
// "failed" those that are not (refused MACs included), and status is the
// exit status the pass stands for (0 all configured, 1 something failed).
// Tests and the host match on this prefix; keep it stable.
const DonePrefix = "spectrum-netcfg: done: "

// DoneLine is the summary line, without its newline.
func DoneLine(configured, failed, status int) string {
	return DonePrefix + strconv.Itoa(configured) + " configured, " + strconv.Itoa(failed) +
		" failed, status " + strconv.Itoa(status)
}

// Outcome is what happened to one link.
type Outcome uint8

// The outcomes of configuring one link.
const (
	Foreign    Outcome = iota // not an inter-guest NIC: untouched, not logged
	Configured                // in its wanted state (changed or not)
	Failed                    // at least one change failed
	Refused                   // carries the OUI but a MAC that is never assigned
	Gone                      // removed (unplugged) while being configured: not an error
)

// NICError is what went wrong with one NIC: a *mac.RefusedError, or the
// *ActionError values of the changes that failed, joined.
type NICError struct {
	Name string
	MAC  net.HardwareAddr
	Err  error
}

func (e *NICError) Error() string { return e.Name + " " + e.MAC.String() + ": " + e.Err.Error() }

// Unwrap returns the cause.
func (e *NICError) Unwrap() error { return e.Err }

// Agent configures inter-guest NICs through one rtnetlink connection and
// logs what it does.
type Agent struct {
	c   *netlink.Conn
	log *Log
	// allRPFilter is net.ipv4.conf.all.rp_filter as last read (-1:
	// unknown).
	allRPFilter int
	// known remembers, per ifindex, the MAC a NIC had and how configuring it
	// went, so that watch mode reacts only to NICs that are new or changed.
	known map[uint32]known
	// router, when not nil, is told about provider NICs (-route).
	router Router
}

type known struct {
	mac     string
	hw      net.HardwareAddr // the same, and name, for the log when the NIC goes
	name    string
	outcome Outcome
}

// NewAgent returns an agent that makes its changes through c and logs to
// log.
func NewAgent(c *netlink.Conn, log *Log) *Agent {
	return &Agent{c: c, log: log, allRPFilter: -1, known: make(map[uint32]known)}
}

// SetRouter makes the agent keep r up to date with its provider NICs.
func (a *Agent) SetRouter(r Router) { a.router = r }

// route tells the router about a provider NIC before it is brought up,
// and logs what that changed (or the error) under the NIC's name and MAC.
func (a *Agent) route(l Link, nic mac.NIC) error {
	if nic.Side != mac.Provider || a.router == nil {
		return nil
	}
	msgs, err := a.router.Provider(l.Index, nic.Link.ClientAddr())
	for _, m := range msgs {
		a.log.NIC(l.Name, l.MAC, "router: "+m)
	}
	if err != nil {
		a.log.NIC(l.Name, l.MAC, "error: router: "+err.Error())
	}
	return err
}

// routerGone tells the router that the NIC at l.Index is no longer a
// provider NIC it must route for, and logs what that changed under the
// NIC's name and MAC. For a NIC the router does not route for nothing
// changes, so the callers only spare it the NICs that cannot be one.
func (a *Agent) routerGone(l Link) {
	if a.router == nil {
		return
	}
	for _, m := range a.router.Gone(l.Index) {
		a.log.NIC(l.Name, l.MAC, "router: "+m)
	}
}

// downProviders takes every provider NIC the agent knows down, before the
// router stops: once its table is gone, a provider link that is up would
// be neither isolated nor filtered if forwarding stays on (it was on
// before the router: sysctl.d, Docker, networkd's IPForward=). It returns
// how many it could not take down.
func (a *Agent) downProviders() (failed int) {
	defer a.log.Flush()
	// In ifindex order, for a log that reads the same each time (an
	// insertion: slices.Sort would cost spectrum-netcfg 8 KB for this).
	idx := make([]uint32, 0, len(a.known))
	for i, k := range a.known {
		if nic, err := mac.Classify(k.hw); err == nil && nic.Side == mac.Provider {
			j := len(idx)
			idx = append(idx, i)
			for ; j > 0 && idx[j-1] > i; j-- {
				idx[j] = idx[j-1]
			}
			idx[j] = i
		}
	}
	for _, i := range idx {
		k := a.known[i]
		changed, err := Apply(a.c, Action{Kind: LinkDown, Index: i})
		switch {
		case errors.Is(err, unix.ENODEV):
		case err != nil:
			a.log.NIC(k.name, k.hw, "error: "+err.Error())
			failed++
		case changed:
			a.log.NIC(k.name, k.hw, Action{Kind: LinkDown, Index: i}.String())
		}
	}
	return failed
}

// ConfigureNIC brings link l to the state its MAC asks for, logs one line
// per change and one outcome line, and returns the errors it met, joined.
func (a *Agent) ConfigureNIC(l Link, addrs []Addr, routes []Route) (Outcome, error) {
	nic, err := mac.Classify(l.MAC)
	if _, ok := a.known[l.Index]; ok && (err != nil || nic.Side != mac.Provider) {
		a.routerGone(l) // its MAC changed
	}
	if errors.Is(err, mac.ErrForeign) {
		delete(a.known, l.Index)
		a.log.Flush()
		return Foreign, nil
	}
	defer a.log.Flush()
	if err != nil {
		reason := err
		var re *mac.RefusedError
		if errors.As(err, &re) {
			reason = re.Err
		}
		a.log.NIC(l.Name, l.MAC, "error: refused, left unconfigured: "+reason.Error())
		a.known[l.Index] = known{mac: l.MAC.String(), hw: l.MAC, name: l.Name, outcome: Refused}
		return Refused, &NICError{Name: l.Name, MAC: l.MAC, Err: err}
	}
	desc := Want(nic, l.Index).Describe(nic.Side)
	var errs []error
	n := 0
	acts := Plan(l, nic, addrs, routes)
	if l.IPv6 != IPv6On {
		// Not a failure: the guest chose a kernel or a setting without IPv6.
		a.log.NIC(l.Name, l.MAC, "IPv6 off ("+l.IPv6.String()+"): IPv4 only")
	}
	if err := a.route(l, nic); err != nil {
		// Fail closed: a provider NIC the router does not cover carries
		// nothing; one that is up (an earlier run's) goes down.
		errs = append(errs, err)
		acts = nil
		if l.Up {
			acts = []Action{{Kind: LinkDown, Index: l.Index}}
		}
	}
	// One round trip for the NIC's changes, but strict reverse-path
	// filtering in one of its own before them: the kernel would make the
	// rest (the link up) even if it failed.
	batches := [2][]Action{nil, acts}
	if len(acts) > 0 && acts[0].Kind == SetRPFilter {
		batches = [2][]Action{acts[:1], acts[1:]}
	}
batches:
	for _, batch := range batches {
		if len(batch) == 0 {
			continue
		}
		changed, batchErrs := ApplyAll(a.c, batch)
		for i, act := range batch {
			err := batchErrs[i]
			if errors.Is(err, unix.ENODEV) {
				// Unplugged under our feet (a provider's NIC goes when its
				// client stops): nothing to configure, nothing failed.
				// Said here or at the link's removal notice, whichever
				// comes first, once.
				a.log.NIC(l.Name, l.MAC, "removed")
				a.routerGone(l)
				delete(a.known, l.Index)
				return Gone, nil
			}
			if err != nil {
				a.log.NIC(l.Name, l.MAC, "error: "+err.Error())
				errs = append(errs, err)
				if act.Kind == SetRPFilter {
					// Fail closed: a provider NIC without strict
					// reverse-path filtering would let a client send
					// with another client's address.
					break batches
				}
				continue
			}
			if changed[i] {
				n++
				a.log.NIC(l.Name, l.MAC, act.String())
			}
		}
	}
	if nic.Side == mac.Provider && a.allRPFilter > 1 {
		// The kernel uses the larger of conf/all and conf/<nic>. The
		// agent must not change conf/all (it applies to every link),
		// so it can only say that strict filtering is not in effect.
		err := errors.New("net.ipv4.conf.all.rp_filter is " + strconv.Itoa(a.allRPFilter) +
			", which makes this NIC's reverse-path filtering loose: set it to 0 or 1")
		a.log.NIC(l.Name, l.MAC, "error: "+err.Error())
		errs = append(errs, err)
	}
	out := Configured
	switch {
	case len(errs) > 0:
		out = Failed
		a.log.NIC(l.Name, l.MAC, desc+": failed")
	case n == 0:
		a.log.NIC(l.Name, l.MAC, desc+": already configured")
	default:
		a.log.NIC(l.Name, l.MAC, desc+": configured")
	}
	a.known[l.Index] = known{mac: l.MAC.String(), hw: l.MAC, name: l.Name, outcome: out}
	if len(errs) > 0 {
		return out, &NICError{Name: l.Name, MAC: l.MAC, Err: errors.Join(errs...)}
	}
	return out, nil
}

// ConfigureAll configures every inter-guest NIC in s; one failing NIC does
// not stop the others. It returns how many ended configured and how many
// failed, and their errors joined.
func (a *Agent) ConfigureAll(s State) (configured, failed int, err error) {
	a.allRPFilter = s.AllRPFilter
	var errs []error
	for _, l := range s.Links {
		out, err := a.ConfigureNIC(l, s.Addrs, s.Routes)
		switch out {
		case Configured:
			configured++
		case Failed, Refused:
			failed++
			errs = append(errs, err)
		}
	}
	return configured, failed, errors.Join(errs...)
}

// Run is the whole agent: it logs to cfg.Console, configures every NIC and,
// with cfg.Watch, keeps configuring NICs as they appear until ctx ends.
// With startRouter (spectrum-router; nil in spectrum-netcfg) it starts the
// router before the first pass and stops it at the end; a router that does
// not start leaves every provider NIC down (fail closed), and Run returns
// after the first pass. It returns the exit status: 0 when every
// inter-guest NIC is configured (and the router, if any, ran and stopped
// cleanly), 1 otherwise.
func Run(ctx context.Context, cfg Config, stderr io.Writer, startRouter StartRouter) int {
	console := cfg.Console
	if console == "" {
		console = DefaultConsole
	}
	w, closeConsole, err := OpenConsole(console, stderr)
	defer closeConsole()
	log := NewLog(w)
	if err != nil {
		log.Line("spectrum-netcfg: cannot open the console, logging to stderr: ", err.Error())
	}
	defer log.Flush()

	var nc *netlink.Conn
	if cfg.Watch {
		// Subscribe before listing, so that a NIC that appears between
		// the listing and the subscription is not missed.
		nc, err = netlink.Dial(unix.NETLINK_ROUTE, &netlink.Config{Groups: unix.RTMGRP_LINK})
		if err != nil {
			log.Line("spectrum-netcfg: error: subscribe to link notifications: ", err.Error())
			log.Line(DoneLine(0, 0, 1))
			return 1
		}
		defer nc.Close()
	}
	c, err := netlink.Dial(unix.NETLINK_ROUTE, nil)
	if err != nil {
		log.Line("spectrum-netcfg: error: open rtnetlink: ", err.Error())
		log.Line(DoneLine(0, 0, 1))
		return 1
	}
	defer c.Close()
	// Extended acks carry the kernel's reason for a refusal into the log.
	_ = c.SetOption(netlink.ExtendedAcknowledge, true)

	a := NewAgent(c, log)
	status := 0
	s, err := Scan(c)
	if err != nil {
		log.Line("spectrum-netcfg: error: ", err.Error())
		status = 1
	}
	routerFailed := false
	if startRouter != nil {
		// Before the first pass, so that a provider NIC is never up
		// without the router's rules for it.
		log.Flush()
		r, err := startRouter(ctx, w, s.Links)
		if err != nil {
			log.Line(RouterPrefix, "error: ", err.Error(), "; provider NICs stay down")
			r, routerFailed, status = refusing{err}, true, 1
		}
		a.SetRouter(r)
	}
	configured, failed, _ := a.ConfigureAll(s)
	if failed > 0 {
		status = 1
	}
	log.Line(DoneLine(configured, failed, status))
	log.Flush()
	if !cfg.Watch || routerFailed {
		return status
	}
	// With -watch the status is what holds at the end: a NIC that failed
	// and was configured later counts as configured.
	status = a.Watch(ctx, nc)
	if startRouter != nil {
		if a.downProviders() > 0 {
			status = 1
		}
		if err := a.router.Stop(); err != nil {
			log.Line(RouterPrefix, "error: ", err.Error())
			status = 1
		}
	}
	log.Line("spectrum-netcfg: stopped, status ", strconv.Itoa(status))
	log.Flush()
	return status
}
