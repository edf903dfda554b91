package router

import (
	"errors"
	"net"
	"net/netip"
	"strconv"
	"sync"

	"github.com/jsimonetti/rtnetlink/v2"
	"golang.org/x/sys/unix"

	"spectrum-os.org/netcfg/internal/mac"
)

// clientPrefixes are the clients' addresses, both families (IPv6: the
// links' ULA, which also holds the provider's own address on each link):
// the forwarder takes queries only from them, and never uses one as an
// upstream.
var clientPrefixes = []netip.Prefix{clientRange, mac.ULA}

// routeCheck decides, by a route lookup, whether the forwarder may send to
// an upstream now (dnsfwd.Config.Check):
//
//   - A virtual resolver (either family's) only where it routes through
//     one of this provider's own client NICs (0A:B3:EC:00:…): then this
//     provider is a client of another, whose router answers. Anywhere else
//     it would go out of the uplink into shared address space
//     (100.64.0.0/10) or a ULA nobody routes, or to a client.
//   - Any other upstream where it is local (a resolver on the provider:
//     127.0.0.53) or routes as unicast through a NIC that is not a
//     provider NIC: never through a provider link, to a client (a route a
//     client's DHCP server put there), and never a broadcast, multicast,
//     blackhole or unreachable route.
type routeCheck struct {
	mu sync.Mutex
	c  *rtnetlink.Conn
}

func newRouteCheck() (*routeCheck, error) {
	c, err := rtnetlink.Dial(nil)
	if err != nil {
		return nil, err
	}
	return &routeCheck{c: c}, nil
}

func (rc *routeCheck) close() error { return rc.c.Close() }

func (rc *routeCheck) check(a netip.Addr) error {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	fam, bits := uint8(unix.AF_INET), uint8(32)
	if a.Is6() {
		fam, bits = unix.AF_INET6, 128
	}
	rs, err := rc.c.Route.Get(&rtnetlink.RouteMessage{
		Family: fam, DstLength: bits,
		Attributes: rtnetlink.RouteAttributes{Dst: a.AsSlice()},
	})
	if err != nil {
		return errors.New("no route: " + err.Error())
	}
	if len(rs) != 1 {
		return errors.New("route lookup: " + strconv.Itoa(len(rs)) + " answers")
	}
	r := rs[0]
	switch r.Type {
	case unix.RTN_LOCAL:
		if virtualResolver(a) {
			return errors.New("an address of this provider's own")
		}
		return nil
	case unix.RTN_UNICAST:
	default:
		return errors.New("a route of type " + routeType(r.Type))
	}
	l, err := rc.c.Link.Get(r.Attributes.OutIface)
	if err != nil {
		return errors.New("route through NIC " + strconv.Itoa(int(r.Attributes.OutIface)) + ": " + err.Error())
	}
	name := "NIC " + strconv.Itoa(int(r.Attributes.OutIface))
	var hw net.HardwareAddr
	if l.Attributes != nil {
		name, hw = l.Attributes.Name, l.Attributes.Address
	}
	nic, err := mac.Classify(hw)
	switch {
	case err == nil && nic.Side == mac.Provider:
		return errors.New("routes through " + name + ", a provider link")
	case virtualResolver(a) && (err != nil || nic.Side != mac.Client):
		return errors.New("routes through " + name + ", not a client NIC: this provider is no one's client")
	}
	return nil
}

// virtualResolver tells whether a is one of the virtual resolvers.
func virtualResolver(a netip.Addr) bool { return a == resolverAddr || a == mac.Resolver6 }

func routeType(t uint8) string {
	switch t {
	case unix.RTN_BROADCAST:
		return "broadcast"
	case unix.RTN_MULTICAST:
		return "multicast"
	case unix.RTN_BLACKHOLE:
		return "blackhole"
	case unix.RTN_UNREACHABLE:
		return "unreachable"
	case unix.RTN_PROHIBIT:
		return "prohibit"
	case unix.RTN_ANYCAST:
		return "anycast"
	}
	return strconv.Itoa(int(t))
}
