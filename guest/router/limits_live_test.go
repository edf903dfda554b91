package router_test

import (
	"net"
	"testing"
	"time"

	"spectrum-os.org/netcfg/guest/router"
	"spectrum-os.org/netcfg/internal/nstest"
)

// The limits' life (issue 17): what a client keeps when the router's
// tables change.

// TestHostileConntrackCap: a client's conntrack entries stay within its
// link's cap however the table changes. The provider's router is told
// nf_conntrack_max is 1024 (a file bound over it in the router's mount
// namespace), so each link may hold 256. Client 1 fills its share with
// answered UDP flows (30 s entries), then another client's NIC comes (a
// VM started: the main table is written again), and client 1 tries as many
// again; then that NIC goes (the VM powered off), and client 1 tries once
// more: it must hold no more than 256 all along. Before the limits had a
// table of their own, each change gave it 256 more.
func TestHostileConntrackCap(t *testing.T) {
	prov := nstest.New(t)
	newLAN(t, prov)
	pa := startAgentSh(t, prov, "echo 1024 >/etc/ctmax && mount --bind /etc/ctmax "+router.ConntrackMax, "nameserver "+dns1Addr+"\n")
	pa.waitLine("spectrum-netcfg: watching for new NICs")
	c1 := client(t, prov, pa, "p1", 1)
	const cap = 256
	// Each flow a datagram to the LAN's echo server from its own source
	// port, answered (or dropped at the cap: a short wait, so that the
	// first entries, 30 s each, are all still there at the end).
	flows := func(from int) (answered int) {
		for p := from; p < from+cap+8; p++ {
			var c net.Conn
			var err error
			inNS(t, c1, func() {
				d := net.Dialer{LocalAddr: &net.UDPAddr{Port: p}}
				c, err = d.Dial("udp", webAddr+":7")
			})
			if err != nil {
				t.Fatal(err)
			}
			c.SetDeadline(time.Now().Add(300 * time.Millisecond))
			c.Write([]byte("flow"))
			if _, err := c.Read(make([]byte, 100)); err == nil {
				answered++
			}
			c.Close()
		}
		return answered
	}
	entries := func() int { return len(conntrackEntries(t, prov, "-s", "100.64.0.1")) }
	a1 := flows(20000)
	first := entries()
	t.Logf("client 1: %d of %d flows answered, %d entries", a1, cap+8, first)
	if first > cap {
		t.Fatalf("client 1 holds %d conntrack entries, over its link's %d", first, cap)
	}
	if first < cap-16 {
		t.Fatalf("client 1 holds %d conntrack entries, want about %d: the test's set-up is wrong", first, cap)
	}
	client(t, prov, pa, "p2", 2) // a NIC comes: the main table is written again
	a2 := flows(30000)
	t.Logf("client 1 after another NIC came: %d of %d more flows answered", a2, cap+8)
	if n := entries(); n > cap {
		t.Errorf("client 1 holds %d conntrack entries after another link came, over its link's %d (%d before)", n, cap, first)
	}
	n := len(pa.lines())
	prov.IP("link", "del", "p2") // the NIC goes
	pa.waitLineAfter(n, "p2 0a:b3:ec:80:00:02: router: stopped routing for client 100.64.0.2")
	a3 := flows(40000)
	t.Logf("client 1 after the NIC went: %d of %d more flows answered", a3, cap+8)
	if n := entries(); n > cap {
		t.Errorf("client 1 holds %d conntrack entries after another link went, over its link's %d (%d before)", n, cap, first)
	}
}
