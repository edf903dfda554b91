package lan

import (
	"crypto/sha256"
	"encoding/hex"
)

// FrontPage is the web site's front page (http://www.lan.test/), the same
// for every request, so a guest's fetch can be checked by its checksum.
const FrontPage = `<!DOCTYPE html>
<html>
<head><title>www.lan.test: the Spectrum test LAN</title></head>
<body>
<h1>Welcome to www.lan.test</h1>
<p>This page comes from a web server on a simulated LAN, 203.0.113.0/24
(a documentation prefix), that has no route to the VMs' 100.64.0.0/16. Your
request reached it through netvm: netvm got its uplink address from the
LAN's DHCP server, your VM resolved this name through netvm, and netvm
masqueraded your address on the way out.</p>
<ul>
<li><a href="/whoami">Who am I?</a> The address this server saw.</li>
<li><a href="/about">About this LAN</a>: its servers and addresses.</li>
</ul>
</body>
</html>
`

// PageHeading is the front page's heading, as a text browser shows it.
const PageHeading = "Welcome to www.lan.test"

// PageTitle is the front page's title.
const PageTitle = "www.lan.test: the Spectrum test LAN"

// PageSum is the hex SHA-256 of FrontPage.
func PageSum() string {
	s := sha256.Sum256([]byte(FrontPage))
	return hex.EncodeToString(s[:])
}

const whoamiPage = `<!DOCTYPE html>
<html>
<head><title>Who am I?</title></head>
<body>
<h1>Your request came from %v</h1>
<p>That is netvm's address on the LAN, not your VM's: %v is what the
provider's NAT put in your packets. <a href="/">Back</a>.</p>
</body>
</html>
`

const aboutPage = `<!DOCTYPE html>
<html>
<head><title>About this LAN</title></head>
<body>
<h1>About this LAN</h1>
<ul>
<li>Subnet: %v, with no route anywhere else.</li>
<li>Router and DHCP server: %v (dnsmasq). The DHCP server hands out
    %v as the router and leases from %v to %v.</li>
<li>DNS server: %v (dnsmasq), which knows one name, %s, at %v, and
    forwards nothing.</li>
</ul>
<p><a href="/">Back</a>.</p>
</body>
</html>
`

const notFoundPage = `<!DOCTYPE html>
<html>
<head><title>Not found</title></head>
<body><h1>Not found</h1><p>No page %q here. <a href="/">Back</a>.</p></body>
</html>
`
