package guest_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jsimonetti/rtnetlink/v2"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"

	"spectrum-os.org/netcfg/guest"
	"spectrum-os.org/netcfg/internal/nstest"
)

// BenchmarkWatchHotplug measures how long `spectrum-netcfg -watch` takes to
// configure a provider NIC that appears while it runs. Each iteration adds
// a tap (its random MAC is not the agent's business), then gives it a
// 0A:B3:EC MAC through rtnetlink, which is when the clock starts, and stops
// the clock when this process's own rtnetlink socket in the namespace sees
// the host route, the agent's last change. A late reader can only make the
// figure larger.
func BenchmarkWatchHotplug(b *testing.B) {
	w := startWatch(b, agentBin, "-watch")
	ns, mon, rc := w.ns, w.mon, w.rc

	var lat []time.Duration
	b.StopTimer()
	b.ResetTimer()
	for i := 1; i <= b.N; i++ {
		name := fmt.Sprintf("p%d", i)
		mac := net.HardwareAddr{0x0a, 0xb3, 0xec, 0x80, byte(i >> 8), byte(i)}
		host := netip.AddrFrom4([4]byte{100, 64, byte(i >> 8), byte(i)})
		ipBatch(b, ns, "tuntap add mode tap name "+name+"\n")
		var index uint32
		watchFor(b, mon, func(m netlink.Message) bool {
			if m.Header.Type == unix.RTM_NEWLINK {
				if l, err := guest.ParseLink(m.Data); err == nil && l.Name == name {
					index = l.Index
				}
			}
			return index != 0
		})
		b.StartTimer()
		start := time.Now()
		if err := rc.Link.Set(&rtnetlink.LinkMessage{Index: index, Attributes: &rtnetlink.LinkAttributes{Address: mac}}); err != nil {
			b.Fatalf("set %s address %s: %v", name, mac, err)
		}
		watchFor(b, mon, func(m netlink.Message) bool {
			var r rtnetlink.RouteMessage
			return m.Header.Type == unix.RTM_NEWROUTE && r.UnmarshalBinary(m.Data) == nil &&
				r.DstLength == 32 && r.Attributes.Dst.Equal(host.AsSlice())
		})
		lat = append(lat, time.Since(start))
		b.StopTimer()
	}
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "median-ms")
	b.ReportMetric(float64(lat[len(lat)-1].Microseconds())/1000, "max-ms")
}

// watchFor reads notifications until match says yes, for at most 10s.
func watchFor(b *testing.B, mon *netlink.Conn, match func(netlink.Message) bool) {
	if err := mon.SetReadDeadline(time.Now().Add(10 * time.Second)); err != nil {
		b.Fatal(err)
	}
	for {
		msgs, err := mon.Receive()
		if err != nil {
			b.Fatalf("waiting for a notification: %v", err)
		}
		for _, m := range msgs {
			if match(m) {
				return
			}
		}
	}
}

func waitConsole(b *testing.B, path, line string) {
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(readFileB(b, path), line+"\n") {
		if time.Now().After(deadline) {
			b.Fatalf("no %q on the console:\n%s", line, readFileB(b, path))
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func readFileB(b *testing.B, path string) string {
	s, err := os.ReadFile(path)
	if err != nil {
		b.Fatal(err)
	}
	return string(s)
}

// BenchmarkRouteHotplug measures how long spectrum-router
// takes from a provider NIC appearing (a tap given a 0A:B3:EC provider
// MAC, when the clock starts) to the router's rules for it being in
// place: the commit of the nftables transaction that puts the NIC's
// ifindex and client address in the set "clients" (its anti-spoofing),
// as a socket of this process on the nftables notification group in the
// namespace sees it. The agent
// puts them in before it brings the NIC up; the figure is also the
// router's share of a hot-plug, on top of BenchmarkWatchHotplug's.
func BenchmarkRouteHotplug(b *testing.B) { routeHotplug(b, 0) }

// BenchmarkRouteHotplugConntrack is BenchmarkRouteHotplug on a provider
// whose conntrack table holds 200,000 entries of other addresses (UDP,
// 10 minutes to live, made through ctnetlink before the first NIC), with
// each NIC given its MAC as soon as the one before has its rules: after
// each NIC's rules the router deletes its client address's entries,
// which the next NIC's rules may have to wait for.
func BenchmarkRouteHotplugConntrack(b *testing.B) { routeHotplug(b, 200000) }

// routeHotplug is BenchmarkRouteHotplug, with entries conntrack entries
// made first; with entries, each NIC comes as soon as the one before has
// its rules, without waiting for the agent to finish with it.
// configured-ms (without entries) is until the agent's last change for
// the NIC (its host route).
func routeHotplug(b *testing.B, entries int) {
	// The machine's resolv.conf is only read.
	w := startWatch(b, routerBin)
	ns, mon, nft, rc := w.ns, w.mon, w.nft, w.rc
	if entries > 0 {
		fillConntrack(b, ns, entries)
	}

	newElem := netlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8 | unix.NFT_MSG_NEWSETELEM)
	var lat, done []time.Duration
	b.StopTimer()
	b.ResetTimer()
	for i := 1; i <= b.N; i++ {
		name := fmt.Sprintf("p%d", i)
		hw := net.HardwareAddr{0x0a, 0xb3, 0xec, 0x80, byte(i >> 8), byte(i)}
		ipBatch(b, ns, "tuntap add mode tap name "+name+"\n")
		var index uint32
		watchFor(b, mon, func(m netlink.Message) bool {
			if m.Header.Type == unix.RTM_NEWLINK {
				if l, err := guest.ParseLink(m.Data); err == nil && l.Name == name {
					index = l.Index
				}
			}
			return index != 0
		})
		// The NIC's element of set "clients": its ifindex (host
		// order), then its client's 100.64.A.B.
		elem := binary.NativeEndian.AppendUint32(nil, index)
		elem = append(elem, 100, 64, byte(i>>8), byte(i))
		b.StartTimer()
		start := time.Now()
		if err := rc.Link.Set(&rtnetlink.LinkMessage{Index: index, Attributes: &rtnetlink.LinkAttributes{Address: hw}}); err != nil {
			b.Fatalf("set %s address %s: %v", name, hw, err)
		}
		watchFor(b, nft, func(m netlink.Message) bool {
			return m.Header.Type == newElem && bytes.Contains(m.Data, []byte("clients\x00")) && bytes.Contains(m.Data, elem)
		})
		lat = append(lat, time.Since(start))
		b.StopTimer()
		if entries > 0 {
			continue
		}
		if entries > 0 {
			continue
		}
		// Let the agent finish with the NIC (its host route is its last
		// change), so that each NIC is timed on its own. After the
		// commit the router deletes the client address's conntrack
		// entries; on a loaded 2-CPU machine that work can keep this
		// process from running when the notification comes, which
		// shows in the maximum.
		host := netip.AddrFrom4([4]byte{100, 64, byte(i >> 8), byte(i)})
		watchFor(b, mon, func(m netlink.Message) bool {
			var r rtnetlink.RouteMessage
			return m.Header.Type == unix.RTM_NEWROUTE && r.UnmarshalBinary(m.Data) == nil &&
				r.DstLength == 32 && r.Attributes.Dst.Equal(host.AsSlice())
		})
		done = append(done, time.Since(start))
	}
	slices.Sort(lat)
	slices.Sort(done)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "median-ms")
	b.ReportMetric(float64(lat[len(lat)-1].Microseconds())/1000, "max-ms")
	if len(done) > 0 {
		b.ReportMetric(float64(done[len(done)/2].Microseconds())/1000, "configured-ms")
	}
}

// fillConntrack puts n UDP conntrack entries in ns through ctnetlink:
// 198.51.100.X:P -> 203.0.113.53:53, 10 minutes to live, none of them a
// client's.
func fillConntrack(b *testing.B, ns *nstest.NS, n int) {
	b.Helper()
	fd, err := unix.Open(ns.Path(), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		b.Fatal(err)
	}
	defer unix.Close(fd)
	var c *netlink.Conn
	inNS(b, fd, func() { c, err = netlink.Dial(unix.NETLINK_NETFILTER, nil) })
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	if err := c.SetReadBuffer(4 << 20); err != nil {
		b.Fatal(err)
	}
	attr := func(buf []byte, typ uint16, payload []byte) []byte {
		buf = binary.NativeEndian.AppendUint16(buf, uint16(4+len(payload)))
		buf = binary.NativeEndian.AppendUint16(buf, typ)
		buf = append(buf, payload...)
		for len(buf)%4 != 0 {
			buf = append(buf, 0)
		}
		return buf
	}
	const batch = 200
	start := time.Now()
	for i := 0; i < n; i += batch {
		var msgs []netlink.Message
		for j := i; j < min(i+batch, n); j++ {
			// CTA_TUPLE_ORIG and CTA_TUPLE_REPLY (both needed).
			src, dst := []byte{198, 51, 100, byte(j / 1000)}, []byte{203, 0, 113, 53}
			sport, dport := binary.BigEndian.AppendUint16(nil, uint16(1024+j%1000)), []byte{0, 53}
			tuple := func(src, dst, sport, dport []byte) []byte {
				proto := attr(attr(attr(nil, 1, []byte{unix.IPPROTO_UDP}), 2, sport), 3, dport)
				return attr(attr(nil, 1|unix.NLA_F_NESTED, attr(attr(nil, 1, src), 2, dst)), 2|unix.NLA_F_NESTED, proto)
			}
			data := attr([]byte{unix.AF_INET, unix.NFNETLINK_V0, 0, 0}, 1|unix.NLA_F_NESTED, tuple(src, dst, sport, dport))
			data = attr(data, 2|unix.NLA_F_NESTED, tuple(dst, src, dport, sport))
			data = attr(data, 7, binary.BigEndian.AppendUint32(nil, 600)) // CTA_TIMEOUT
			msgs = append(msgs, netlink.Message{
				Header: netlink.Header{Type: netlink.HeaderType(unix.NFNL_SUBSYS_CTNETLINK << 8), // IPCTNL_MSG_CT_NEW (0)
					Flags: netlink.Request | netlink.Create | netlink.Acknowledge},
				Data: data,
			})
		}
		if _, err := c.SendMessages(msgs); err != nil {
			b.Fatalf("conntrack entries: %v", err)
		}
		for acked := 0; acked < len(msgs); {
			got, err := c.Receive()
			if err != nil {
				b.Fatalf("conntrack entry %d: %v", i+acked, err)
			}
			acked += len(got)
		}
	}
	b.Logf("%d conntrack entries made in %v", n, time.Since(start))
}

// watchBench is a -watch agent running in a fresh namespace, with sockets
// of this process in that namespace: mon on the link and IPv4 route groups,
// nft on the nftables group, rc to change links.
type watchBench struct {
	ns       *nstest.NS
	mon, nft *netlink.Conn
	rc       *rtnetlink.Conn
}

// startWatch starts the agent with args in a new namespace and waits until
// it watches; it is stopped with SIGTERM, and must exit cleanly, when b
// ends.
func startWatch(b *testing.B, bin string, args ...string) *watchBench {
	b.Helper()
	w := &watchBench{ns: nstest.New(b)}
	nsFD, err := unix.Open(w.ns.Path(), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		b.Fatal(err)
	}
	defer unix.Close(nsFD)
	console := filepath.Join(b.TempDir(), "console")
	if err := os.WriteFile(console, nil, 0o600); err != nil {
		b.Fatal(err)
	}
	var agent *exec.Cmd
	inNS(b, nsFD, func() {
		// Sockets and children belong to the namespace of the thread
		// that creates them.
		if w.mon, err = netlink.Dial(unix.NETLINK_ROUTE, &netlink.Config{Groups: unix.RTMGRP_LINK | unix.RTMGRP_IPV4_ROUTE}); err != nil {
			return
		}
		if w.nft, err = netlink.Dial(unix.NETLINK_NETFILTER, &netlink.Config{Groups: 1 << (unix.NFNLGRP_NFTABLES - 1)}); err != nil {
			return
		}
		// Room for a burst of notifications (the router's whole table
		// at each change) while the benchmark is not reading.
		for _, c := range []*netlink.Conn{w.mon, w.nft} {
			if err = c.SetReadBuffer(8 << 20); err != nil {
				return
			}
		}
		if w.rc, err = rtnetlink.Dial(nil); err != nil {
			return
		}
		agent = exec.Command(bin, append(args, "-console", console)...)
		err = agent.Start()
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		_ = agent.Process.Signal(syscall.SIGTERM)
		if err := agent.Wait(); err != nil {
			b.Errorf("agent after SIGTERM: %v\n%s", err, readFileB(b, console))
		}
		w.mon.Close()
		w.nft.Close()
		w.rc.Close()
	})
	waitConsole(b, console, "spectrum-netcfg: watching for new NICs")
	return w
}

// BenchmarkRestoreTable measures how long spectrum-router's table is gone
// after another program removes it (`nft flush ruleset`, as Debian's
// /etc/nftables.conf does): from the commit of the removal to the commit
// of the router's table put back, both as a socket of this process on the
// nftables notification group in the namespace sees them. It is the time
// the provider forwards without the rules; the tests check what holds
// after it (guest/router's TestFailClosedTableChanged).
func BenchmarkRestoreTable(b *testing.B) {
	w := startWatch(b, routerBin)
	table := []byte("spectrum-router\x00")
	typ := func(t int) netlink.HeaderType { return netlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8 | t) }
	var lat []time.Duration
	b.StopTimer()
	b.ResetTimer()
	for range b.N {
		flush := w.ns.Command(context.Background(), "nft", "flush", "ruleset")
		if err := flush.Start(); err != nil {
			b.Fatal(err)
		}
		watchFor(b, w.nft, func(m netlink.Message) bool {
			return m.Header.Type == typ(unix.NFT_MSG_DELTABLE) && bytes.Contains(m.Data, table)
		})
		b.StartTimer()
		start := time.Now()
		watchFor(b, w.nft, func(m netlink.Message) bool {
			return m.Header.Type == typ(unix.NFT_MSG_NEWTABLE) && bytes.Contains(m.Data, table)
		})
		lat = append(lat, time.Since(start))
		b.StopTimer()
		// The rest of the router's transaction.
		watchFor(b, w.nft, func(m netlink.Message) bool { return m.Header.Type == typ(unix.NFT_MSG_NEWGEN) })
		if err := flush.Wait(); err != nil {
			b.Fatalf("nft flush ruleset: %v", err)
		}
	}
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "median-ms")
	b.ReportMetric(float64(lat[len(lat)-1].Microseconds())/1000, "max-ms")
}
