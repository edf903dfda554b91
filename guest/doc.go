// Package guest is the guest agent spectrum-netcfg: it configures the NICs
// whose MAC carries the OUI 0A:B3:EC through rtnetlink, as docs/DESIGN.md's
// table says, once at boot (an initramfs init hook) and, with -watch, again
// each time a NIC appears or changes.
//
// A pass lists links, addresses and main-table routes of both families once (Scan),
// computes per NIC the changes that bring it to its wanted state (Plan, a
// pure function of the MAC, the ifindex and what the kernel reported) and
// makes them (ApplyAll: a NIC's changes in one round trip, the kernel
// answering its refusals and the last). On an inter-guest NIC the agent manages only what has
// the shape it creates: 100.64.x.y/16 and 169.254.x.y/32 addresses, default
// routes via a 169.254.x.y gateway, and 100.64.x.y/32 host routes. Of those,
// whatever the current MAC does not ask for is stale (the NIC's MAC changed)
// and is removed. Anything else, and every other link, is left alone.
//
// Strict reverse-path filtering on provider NICs is set through rtnetlink
// too (RTM_SETLINK with IFLA_AF_SPEC/AF_INET/IFLA_INET_CONF, the value
// /proc/sys/net/ipv4/conf/<nic>/rp_filter shows), so the agent needs neither
// /proc nor /sys mounted and mounts nothing. The kernel applies the larger of
// conf/all and conf/<nic>. The agent does not change conf/all (it applies to
// every link) but reads it (RTM_GETNETCONF): when it is 2, loose, a provider
// NIC is configured and reported as failed, with the reason. A guest that
// sets conf/all/rp_filter=2 after the agent ran (systemd's default) makes
// the filtering loose without the agent knowing.
//
// What the caller must provide: file descriptors 0, 1 and 2 open, or a
// /dev/null to open. The Go runtime checks them before main and, when one
// is closed and /dev/null cannot be opened, aborts with "cannot open
// standard fds" (exit status 2). A kernel without /dev/console in the
// initramfs starts init with them closed; an init that mounts devtmpfs
// first, or has /dev/console and /dev/null in its archive, is fine.
//
// The agent must never: read from its console, create its console file
// (under an unpopulated /dev that would leave a regular file behind), shell
// out, touch a link without the OUI, or turn on IP forwarding. In
// spectrum-router (the same agent, always watching) it drives a Router
// (package guest/router, wired in by that program's main): the provider's
// forwarding, NAT, isolation and DNS for the clients of its provider NICs.
//
// # Console log
//
// One line per change, per refusal and per NIC outcome, written per NIC in
// one write(2):
//
//	eth0 0a:b3:ec:00:a5:46: set link up
//	eth0 0a:b3:ec:00:a5:46: added 100.64.165.70/16
//	eth0 0a:b3:ec:00:a5:46: added route default via 169.254.165.70 metric 2 onlink
//	eth0 0a:b3:ec:00:a5:46: added fd9f:2b8:5010:a546::2/64
//	eth0 0a:b3:ec:00:a5:46: added route default via fe80::1 metric 2
//	eth0 0a:b3:ec:00:a5:46: client 100.64.165.70/16 via 169.254.165.70: configured
//	eth1 0a:b3:ec:80:00:07: provider 169.254.0.7/32 for client 100.64.0.7: already configured
//	eth2 0a:b3:ec:00:ff:ff: error: refused, left unconfigured: link id 00:00 and ff:ff are never assigned
//	spectrum-netcfg: done: 2 configured, 1 failed, status 1
//
// A NIC's outcome line ends in ": configured", ": already configured" or
// ": failed" (after its "error:" lines). The pass ends with the DoneLine
// (match DonePrefix). With -watch, "spectrum-netcfg: watching for new NICs"
// follows; hot-plugged NICs log the same per-NIC lines; SIGTERM ends with
// "spectrum-netcfg: stopped, status N". In spectrum-router the router's lines come
// in between: about a NIC among that NIC's ("eth1 0a:b3:ec:80:12:34:
// router: routing for client 100.64.18.52"), its own starting with
// "spectrum-router: ".
//
// Exit status: 0 when every 0A:B3:EC NIC is configured (in spectrum-router:
// and the router started and stopped cleanly), 1 when at least one is not (the
// others still are), 2 for a bad command line.
package guest
