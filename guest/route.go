package guest

import (
	"context"
	"errors"
	"io"
	"net/netip"
)

// RouterPrefix begins the router's own console lines (those about no one
// NIC): spectrum-router's, never spectrum-netcfg's.
const RouterPrefix = "spectrum-router: "

// Router is the provider's router the agent keeps up to date in
// spectrum-router (package guest/router implements it; that program's main
// wires it in, so this package, and spectrum-netcfg, do not depend on it). The agent calls it from its one
// goroutine: Provider for each provider NIC it configures, Gone as NICs
// go, and Stop at the end.
type Router interface {
	// Provider is called for the provider NIC at ifindex index, whose
	// link's client is client (100.64.A.B), each time the agent
	// configures it, before it brings the NIC up: the rules for the
	// link must be in place before its client can send through it. It
	// returns what it changed, as lines for the NIC's log (after the
	// NIC's name and MAC). On an error the agent does not configure the
	// NIC: with forwarding on, a provider link the rules do not know
	// would be neither isolated nor filtered.
	Provider(index uint32, client netip.Addr) ([]string, error)
	// Gone is called when a NIC the agent knew goes, or stops being a
	// provider NIC (its MAC changed); it returns what it changed, for
	// the NIC's log. A NIC the router does not route for is no change.
	Gone(index uint32) []string
	// Stop removes everything the router added and returns what could
	// not be undone. The agent calls it after taking every provider NIC
	// down, so that no provider link is up, with forwarding on (it may
	// have been on before the router), once the rules are gone.
	Stop() error
}

// StartRouter starts the router, logging its own lines (those that are
// about no one NIC) to w, the agent's console, until Stop; ctx ending
// stops nothing by itself. links is every link of the agent's first scan:
// the router's first ruleset covers the provider NICs among them at
// once, so that when the agent restarts, the NICs that are up stay
// covered while it goes through them. An error means the router is not
// running and IPv4 forwarding is not on.
type StartRouter func(ctx context.Context, w io.Writer, links []Link) (Router, error)

// refusing stands in for a router that did not start: it covers no
// provider NIC, so the agent leaves each down.
type refusing struct{ err error }

func (r refusing) Provider(uint32, netip.Addr) ([]string, error) {
	return nil, errors.New("no router: " + r.err.Error())
}
func (refusing) Gone(uint32) []string { return nil }
func (refusing) Stop() error          { return nil }
