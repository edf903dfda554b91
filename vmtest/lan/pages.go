package lan

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
)

// frontPage is the web site's front page (http://www.lan.test/), the same
// for every request of a family, so a guest's fetch can be checked by its
// checksum: the how of the family (ipv4How, ipv6How), then the family.
const frontPage = `<!DOCTYPE html>
<html>
<head><title>www.lan.test: the Spectrum test LAN</title></head>
<body>
<h1>Welcome to www.lan.test</h1>
<p>%s</p>
<p>Your request reached this server over %s.</p>
<ul>
<li><a href="/whoami">Who am I?</a> The address this server saw.</li>
<li><a href="/about">About this LAN</a>: its servers and addresses.</li>
</ul>
</body>
</html>
`

const ipv4How = `This page comes from a web server on a simulated LAN, 203.0.113.0/24
(a documentation prefix), that has no route to the VMs' 100.64.0.0/16. Your
request reached it through netvm: netvm got its uplink address from the
LAN's DHCP server, your VM resolved this name through netvm, and netvm
masqueraded your address on the way out.`

const ipv6How = `This page comes from a web server on a simulated LAN, 2001:db8:1::/64
(a documentation prefix), that has no route to the VMs' fd9f:2b8:5010::/48.
Your request reached it through netvm: netvm got its uplink address from the
LAN's router advertisements, and masqueraded your VM's address on the way
out (NAT66).`

// FrontPageFor is the front page as a client of family ("IPv4" or
// "IPv6", FamilyOf) gets it.
func FrontPageFor(family string) string {
	how := ipv4How
	if family == "IPv6" {
		how = ipv6How
	}
	return fmt.Sprintf(frontPage, how, family)
}

// FrontPage is the front page as an IPv4 client gets it.
var FrontPage = FrontPageFor("IPv4")

// PageFamily is the line of the front page that says which family
// reached the server, as a text browser shows it.
func PageFamily(family string) string { return "Your request reached this server over " + family + "." }

// PageHeading is the front page's heading, as a text browser shows it.
const PageHeading = "Welcome to www.lan.test"

// PageTitle is the front page's title.
const PageTitle = "www.lan.test: the Spectrum test LAN"

// PageSum is the hex SHA-256 of FrontPage (IPv4's).
func PageSum() string { return PageSumFor("IPv4") }

// PageSumFor is the hex SHA-256 of the front page of family.
func PageSumFor(family string) string {
	s := sha256.Sum256([]byte(FrontPageFor(family)))
	return hex.EncodeToString(s[:])
}

// BigPath is the path of a page of BigSize bytes (plain text, the same
// for every request), for a download much larger than any MTU.
const (
	BigPath = "/1mib"
	BigSize = 1 << 20
)

// bigPage is the page at BigPath: lines of 64 bytes, each numbered.
var bigPage = func() []byte {
	b := make([]byte, 0, BigSize)
	for i := 0; len(b) < BigSize; i++ {
		b = fmt.Appendf(b, "%06d the Spectrum test LAN: one mebibyte in lines of 64 bytes\n", i)
	}
	return b
}()

// BigSum is the hex SHA-256 of the page at BigPath.
func BigSum() string {
	s := sha256.Sum256(bigPage)
	return hex.EncodeToString(s[:])
}

const whoamiPage = `<!DOCTYPE html>
<html>
<head><title>Who am I?</title></head>
<body>
<h1>Your request came from %v</h1>
<p>It came over %s. That is netvm's address on the LAN, not your VM's: %v
is what the provider put in your packets. <a href="/">Back</a>.</p>
</body>
</html>
`

// about is the /about page: the LAN's servers and addresses in each
// family it speaks.
func (l *LAN) about() string {
	p := l.Plan()
	var b strings.Builder
	b.WriteString("<!DOCTYPE html>\n<html>\n<head><title>About this LAN</title></head>\n<body>\n<h1>About this LAN</h1>\n<ul>\n")
	if l.cfg.Mode.IPv4() {
		fmt.Fprintf(&b, "<li>IPv4: %v, with no route anywhere else. Router and DHCP server: %v (dnsmasq), leases from %v to %v.</li>\n",
			Prefix, Router, p.RangeStart, p.RangeEnd)
	}
	if l.cfg.Mode.IPv6() {
		how := "addresses by SLAAC, the resolver by stateless DHCPv6 and RDNSS"
		if l.cfg.Stateful {
			how = fmt.Sprintf("addresses by DHCPv6 from %v to %v, the resolver by DHCPv6 and RDNSS", p.Range6Start, p.Range6End)
		}
		fmt.Fprintf(&b, "<li>IPv6: %v, with no route anywhere else. Router %v (dnsmasq's router advertisements): %s.</li>\n",
			Prefix6, Router6, how)
	}
	var dns, web []string
	if l.cfg.Mode.IPv4() {
		dns, web = append(dns, p.DNS.String()), append(web, p.Web.String())
	}
	if l.cfg.Mode.IPv6() {
		dns, web = append(dns, p.DNS6.String()), append(web, p.Web6.String())
	}
	fmt.Fprintf(&b, "<li>DNS server: %s (dnsmasq), which knows one name, %s, at %s, and forwards nothing.</li>\n",
		strings.Join(dns, " and "), WebName, strings.Join(web, " and "))
	b.WriteString("</ul>\n<p><a href=\"/\">Back</a>.</p>\n</body>\n</html>\n")
	return b.String()
}

const notFoundPage = `<!DOCTYPE html>
<html>
<head><title>Not found</title></head>
<body><h1>Not found</h1><p>No page %q here. <a href="/">Back</a>.</p></body>
</html>
`
