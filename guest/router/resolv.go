package router

import (
	"net/netip"
)

// ResolvConf is the provider's resolver configuration, which its DHCP
// client (or connman, NetworkManager, resolvconf) rewrites at any time.
const ResolvConf = "/etc/resolv.conf"

// maxNameservers is glibc's MAXNS: the resolver uses the first three
// nameservers and ignores the rest, so the router does too.
const maxNameservers = 3

// FirstNameserver returns the first IPv4 nameserver of a resolv.conf
// among the first three nameservers it names (those glibc uses), or the
// zero Addr when there is none. Lines are read as glibc's res_init reads
// them: a line that starts with "nameserver" and a space or a tab, then
// the address up to the next blank; anything else is ignored. Addresses
// are read in their usual forms (netip: dotted decimal, IPv6 with an
// optional %zone); glibc's inet_aton also takes shorthands like
// "127.1", which are not recognised and count as no nameserver.
func FirstNameserver(b []byte) netip.Addr {
	n := 0
	for len(b) > 0 && n < maxNameservers {
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
		a, err := netip.ParseAddr(string(v))
		if err != nil {
			continue
		}
		if a.Is4() {
			return a
		}
		n++
	}
	return netip.Addr{}
}

// maxResolvConf bounds what is read of a resolver file: a real one is a
// few hundred bytes, and the nameservers that count are near its top.
const maxResolvConf = 64 << 10

// decideDNS is the router's DNS decision from the resolver file at path
// as it is now.
//
// A loopback resolver (systemd-resolved's stub 127.0.0.53, a dnsmasq on
// 127.0.0.1) cannot be a DNAT target for clients without route_localnet,
// which would open every service listening on the provider's loopback to
// them; DNS is refused and the log says why. With systemd-resolved, point
// /etc/resolv.conf at /run/systemd/resolve/resolv.conf, which lists its
// upstream servers, and the router follows that.
func decideDNS(path string) DNS {
	b := make([]byte, maxResolvConf)
	n, err := readFile(path, b)
	if err != nil {
		return DNS{Why: "cannot read " + path + ": " + err.Error()}
	}
	a := FirstNameserver(b[:n])
	switch {
	case !a.IsValid():
		return DNS{Why: path + " names no IPv4 nameserver"}
	case a == resolverAddr:
		return DNS{Mode: DNSForward, Why: path + " names it too: this provider is a client of another"}
	case a.IsLoopback() || a.IsUnspecified():
		return DNS{Why: path + " names " + a.String() + ", on this provider's loopback, which clients cannot reach"}
	}
	return DNS{Mode: DNSNAT, Addr: a, Why: "first IPv4 nameserver of " + path}
}
