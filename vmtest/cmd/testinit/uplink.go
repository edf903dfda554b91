package main

import (
	"bytes"
	"context"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"spectrum-os.org/netcfg/internal/mac"
	"spectrum-os.org/netcfg/vmtest/dhcpc"
)

// resolvConf is the guest's resolver configuration: in the archive, the
// provider's virtual resolver (every client the same); on a VM with an
// uplink, the DHCP client replaces it with the lease's resolvers.
const resolvConf = "/etc/resolv.conf"

// uplinks returns the NICs the agent leaves alone: Ethernet NICs whose MAC
// lacks the OUI (spectrumd's uplinks/net NICs).
func uplinks() []string {
	ifs, err := net.Interfaces()
	if err != nil {
		report("fail dhcp: %v", err)
		return nil
	}
	var out []string
	for _, i := range ifs {
		if i.Flags&net.FlagLoopback != 0 || len(i.HardwareAddr) != 6 || bytes.HasPrefix(i.HardwareAddr, mac.OUI[:]) {
			continue
		}
		out = append(out, i.Name)
	}
	return out
}

// dhcp starts the uplinks' network manager (package dhcpc) on every
// uplink, for as long as the VM runs, in both families: DHCP, and router
// advertisements (SLAAC, accept_ra=2 so that a provider that forwards
// keeps taking them) with DHCPv6 as they ask; resolv.conf names the
// resolvers of both. It waits up to timeout for each uplink's first
// configuration of the families in want: "" either (a LAN speaks IPv4,
// IPv6 or both), "4", "6" or "46" (each of them: on a dual-stack LAN, so
// that the next step has both). Each client reports every lease that
// changes something as "dhcp IFACE lease addr=... dns=... n=N" (N counts
// renewals too) and every IPv6 configuration as "dhcp6 IFACE lease
// addrs=... router=... dns=... n=N"; then the step reports "dhcp ok
// n=NICS" or "fail dhcp ...".
func dhcp(timeout time.Duration, want string) {
	// The uplinks' drivers have probed by now (the agent and the disks
	// ran after the modules were loaded).
	names := uplinks()
	if len(names) == 0 {
		report("fail dhcp: no NIC without the OUI")
		return
	}
	if strings.Trim(want, "46") != "" {
		report("fail dhcp: families %q: want 4, 6 or 46", want)
		return
	}
	h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		report("fail dhcp: %v", err)
		return
	}
	// configured gets each NIC once, when it has what want asks for.
	configured := make(chan string, len(names))
	for _, n := range names {
		var mu sync.Mutex
		have, done := "", false
		got := func(family string) {
			mu.Lock()
			defer mu.Unlock()
			if !strings.Contains(have, family) {
				have += family
			}
			ok := len(have) > 0
			for _, f := range want {
				ok = ok && strings.ContainsRune(have, f)
			}
			if ok && !done {
				done = true
				configured <- n
			}
		}
		cfg := dhcpc.Config{Iface: n, Handle: h, ResolvConf: resolvConf, IPv6: true,
			Log:      func(format string, args ...any) { report(format, args...) },
			OnLease:  func(dhcpc.Lease) { got("4") },
			OnLease6: func(dhcpc.Lease6) { got("6") }}
		go func() {
			if err := dhcpc.Run(context.Background(), cfg); err != nil {
				report("fail dhcp %s: %v", n, err)
			}
		}()
	}
	var got []string
	deadline := time.After(timeout)
	for len(got) < len(names) {
		select {
		case n := <-configured:
			got = append(got, n)
		case <-deadline:
			report("fail dhcp: no lease on %s within %v (got %s)", strings.Join(names, ","), timeout, strings.Join(got, ","))
			return
		}
	}
	report("dhcp ok n=%d", len(got))
}
