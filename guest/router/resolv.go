package router

import (
	"net/netip"
	"slices"
	"strings"

	"spectrum-os.org/netcfg/guest/router/dnsfwd"
	"spectrum-os.org/netcfg/internal/mac"
)

// ResolvConf is the provider's resolver configuration, which its DHCP
// client (or connman, NetworkManager, resolvconf) rewrites at any time.
const ResolvConf = "/etc/resolv.conf"

// maxNameservers is glibc's MAXNS: the resolver uses the first three
// nameservers and ignores the rest, so the router does too.
const maxNameservers = 3

// Nameservers returns the nameservers of a resolv.conf among the first
// three it names (those glibc uses), of either family, in order. Lines are
// read as glibc's res_init reads them: a line that starts with
// "nameserver" and a space or a tab, then the address up to the next
// blank; anything else is ignored. Addresses are read in their usual forms
// (netip: dotted decimal, IPv6 with an optional %zone); glibc's inet_aton
// also takes shorthands like "127.1", which are not recognised and count
// as no nameserver.
func Nameservers(b []byte) []netip.Addr {
	var out []netip.Addr
	for len(b) > 0 && len(out) < maxNameservers {
		line := b
		b = nil
		for i, c := range line {
			if c == '\n' {
				line, b = line[:i], line[i+1:]
				break
			}
		}
		const kw = "nameserver"
		if len(line) <= len(kw) || string(line[:len(kw)]) != kw || line[len(kw)] != ' ' && line[len(kw)] != '\t' {
			continue
		}
		v := line[len(kw):]
		for len(v) > 0 && (v[0] == ' ' || v[0] == '\t') {
			v = v[1:]
		}
		for i, c := range v {
			if c == ' ' || c == '\t' {
				v = v[:i]
				break
			}
		}
		if a, err := netip.ParseAddr(string(v)); err == nil {
			out = append(out, a)
		}
	}
	return out
}

// maxResolvConf bounds what is read of a resolver file: a real one is a
// few hundred bytes, and the nameservers that count are near its top.
const maxResolvConf = 64 << 10

// DNS is the router's DNS decision: where the forwarder sends clients'
// queries, and why.
type DNS struct {
	// Upstreams are the nameservers the forwarder may use, in order: it
	// asks the first whose route allows it now (checkRoute). None: every
	// query is refused.
	Upstreams []netip.Addr
	// Why is where they come from, or why there are none, for the log.
	Why string
	// Skipped is each nameserver of the file that may never be used, with
	// the reason, for the log.
	Skipped []string
}

func (d DNS) equal(o DNS) bool {
	return slices.Equal(d.Upstreams, o.Upstreams) && d.Why == o.Why && slices.Equal(d.Skipped, o.Skipped)
}

// describe is the decision in words, for the log: a line, then one for
// each nameserver skipped. to names the virtual resolvers the forwarder
// answers.
func (d DNS) describe(to string) []string {
	var first string
	switch len(d.Upstreams) {
	case 0:
		first = "DNS to " + to + " is refused: " + d.Why
	case 1:
		first = "DNS to " + to + " goes to " + d.Upstreams[0].String() + " (" + d.Why + ")"
	default:
		s := make([]string, len(d.Upstreams))
		for i, a := range d.Upstreams {
			s[i] = a.String()
		}
		first = "DNS to " + to + " goes to the first of " + strings.Join(s, ", ") + " it may use (" + d.Why + ")"
	}
	return append([]string{first}, d.Skipped...)
}

// decideDNS is the router's DNS decision from the resolver file at path
// as it is now: its nameservers that may ever be upstreams
// (dnsfwd.CheckUpstream; the IPv6 virtual resolver too, though it lies in
// the clients' prefix). A loopback resolver (systemd-resolved's stub
// 127.0.0.53, a dnsmasq on 127.0.0.1) is one: the forwarder asks it from
// the provider itself. Where each routes is checked at each query.
func decideDNS(path string) DNS {
	b := make([]byte, maxResolvConf)
	n, err := readFile(path, b)
	if err != nil {
		return DNS{Why: "cannot read " + path + ": " + err.Error()}
	}
	ns := Nameservers(b[:n])
	if len(ns) == 0 {
		return DNS{Why: path + " names no nameserver"}
	}
	var d DNS
	for _, a := range ns {
		clients := clientPrefixes
		if a.Unmap() == mac.Resolver6 {
			clients = nil
		}
		if err := dnsfwd.CheckUpstream(a, clients); err != nil {
			d.Skipped = append(d.Skipped, path+" names nameserver "+a.String()+", never used: "+err.Error())
			continue
		}
		d.Upstreams = append(d.Upstreams, a.Unmap())
	}
	switch {
	case len(d.Upstreams) == 0:
		d.Why = path + " names no nameserver that may be used"
	case len(d.Upstreams) == 1 && virtualResolver(d.Upstreams[0]):
		d.Why = "first nameserver of " + path + ": this provider's own provider, while it routes through a client NIC"
	case len(d.Upstreams) == 1:
		d.Why = "first nameserver of " + path
	default:
		d.Why = "nameservers of " + path
	}
	return d
}
