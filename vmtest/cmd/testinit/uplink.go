package main

import (
	"bytes"
	"context"
	"net"
	"strings"
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

// dhcp starts the DHCP client (package dhcpc) on every uplink, for as long
// as the VM runs, and waits up to timeout for each one's first lease. Each
// client reports every lease that changes something as "dhcp IFACE lease
// addr=... dns=... n=N" (N counts renewals too); then the step reports
// "dhcp ok n=NICS" or "fail dhcp ...".
func dhcp(timeout time.Duration) {
	// The uplinks' drivers have probed by now (the agent and the disks
	// ran after the modules were loaded).
	names := uplinks()
	if len(names) == 0 {
		report("fail dhcp: no NIC without the OUI")
		return
	}
	h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		report("fail dhcp: %v", err)
		return
	}
	first := make(chan string, len(names))
	for _, n := range names {
		leased := false
		cfg := dhcpc.Config{Iface: n, Handle: h, ResolvConf: resolvConf,
			Log: func(format string, args ...any) { report(format, args...) },
			OnLease: func(dhcpc.Lease) {
				if !leased {
					leased = true
					first <- n
				}
			}}
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
		case n := <-first:
			got = append(got, n)
		case <-deadline:
			report("fail dhcp: no lease on %s within %v (got %s)", strings.Join(names, ","), timeout, strings.Join(got, ","))
			return
		}
	}
	report("dhcp ok n=%d", len(got))
}
