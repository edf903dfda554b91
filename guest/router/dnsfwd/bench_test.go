package dnsfwd

import (
	"net"
	"net/netip"
	"slices"
	"testing"
	"time"
)

// BenchmarkDNS is the forwarder's added latency: one client asking an A
// query, one after the other, straight to a resolver on loopback (direct)
// and through the forwarder to it (forwarder), over UDP and over TCP (a
// connection per query, as a stub does after a truncated answer). Each of
// the b.N iterations is 50 queries; the median and 99th percentile of all.
// The forwarder's path is two loopback exchanges and a goroutine, with a
// socket of the query's own; the route check is the test's (free), while
// the router's is one netlink round trip a second.
func BenchmarkDNS(b *testing.B) {
	up := newUpstream(b)
	f, err := Listen(Config{
		Listen:       []netip.Addr{netip.MustParseAddr("127.0.0.1")},
		Clients:      []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")},
		UpstreamPort: up.port,
		Limits:       Limits{Rate: 1e9, Burst: 1 << 30},
	})
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	f.SetUpstreams([]netip.Addr{netip.MustParseAddr("127.0.0.1")})
	q := newQuery(b, 1, "web.example.")
	for _, path := range []struct {
		name string
		port uint16
	}{{"direct", up.port}, {"forwarder", f.Port()}} {
		for _, proto := range []string{"udp", "tcp"} {
			b.Run("path="+path.name+"/proto="+proto, func(b *testing.B) {
				to := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), path.port).String()
				var lat []time.Duration
				buf := make([]byte, 65535)
				for b.Loop() {
					for range 50 {
						start := time.Now()
						c, err := net.Dial(proto, to)
						if err != nil {
							b.Fatal(err)
						}
						c.SetDeadline(time.Now().Add(5 * time.Second))
						if proto == "udp" {
							_, err = c.Write(q)
							if err == nil {
								_, err = c.Read(buf)
							}
						} else {
							_, err = roundTripTCP(c, q)
						}
						c.Close()
						if err != nil {
							b.Fatal(err)
						}
						lat = append(lat, time.Since(start))
					}
				}
				slices.Sort(lat)
				b.ReportMetric(float64(lat[len(lat)/2].Nanoseconds())/1000, "median-µs")
				b.ReportMetric(float64(lat[len(lat)*99/100].Nanoseconds())/1000, "p99-µs")
			})
		}
	}
}
