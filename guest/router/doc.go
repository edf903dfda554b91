// Package router is the provider's router, spectrum-router's
// (docs/DESIGN.md, "The provider's router"): IPv4 and IPv6 forwarding,
// masquerading of client traffic (NAT66 for IPv6), isolation between clients,
// anti-spoofing per provider link, and a virtual DNS resolver address for
// clients. The agent (package guest) tells it about provider NICs through
// guest.Router; only spectrum-router's main wires Start in, so the init
// hook every guest carries, spectrum-netcfg, links none of this.
//
// # What it does
//
// Start installs the table inet spectrum-router (TableName; writeTable
// has it in nft syntax) for the provider NICs present, and only then turns
// net.ipv4.ip_forward and net.ipv6.conf.all.forwarding on (accept_ra 2
// first on the NICs that take router advertisements, so that the uplinks
// keep theirs), so that nothing is ever forwarded without the rules. From
// then on:
//
//   - A provider NIC is in the table before the agent brings it up; the
//     agent leaves a NIC the table could not take down (fail closed).
//   - From a provider link only the link's own client address (100.64.A.B
//     and fd9f:2b8:5010:AB::2 of its MAC) is forwarded (sets clients and
//     clients6, beside the strict rp_filter the agent sets); nothing goes
//     from one provider link to another; to a provider link only replies
//     (conntrack established/related); invalid
//     packets from a provider link nowhere; ICMP errors from a provider
//     link only about its own client's connections (which carry the
//     link's ifindex as their ct mark); link-local addresses
//     (169.254.0.0/16, fe80::/10) are never forwarded.
//   - A provider link reaches nothing of the provider itself but DNS and
//     echo to its own gateway: the rest is refused at once (TCP reset,
//     ICMP unreachable); DHCP from it is dropped, and so are IPv6 router
//     advertisements, solicitations and redirects (its NIC also gets
//     accept_ra 0 and autoconf 0); neighbour discovery passes.
//   - Each provider link may start 1000 connections a second and hold a
//     quarter of nf_conntrack_max (256 to 16384) conntrack entries
//     (LimitsFor), so no client starves the others. The limits' state is
//     in a table of their own, LimitsTableName (limits.go), which NIC
//     changes touch only by set elements, so no client's count starts
//     again when another client's VM stops.
//   - Client traffic leaving through any other interface (an uplink, or
//     a chained provider's own client link) is masqueraded, IPv4 and IPv6.
//   - DNS to Resolver is redirected to the router's forwarder, which asks
//     the provider's own resolver (see DNS).
//   - When a provider NIC comes or changes its MAC, the conntrack entries
//     from its client addresses are deleted (ctnetlink, the kernel picking
//     them), so no NAT state of an earlier client with the same address
//     carries over; when it goes, those from and to it.
//   - SIGTERM: the agent takes the provider NICs down, then Stop sets
//     forwarding (both families) back to what it was before the first run and
//     only then deletes the table, so nothing is forwarded without the
//     rules even when forwarding was on before the router. The table
//     records those values in the names of empty chains
//     (ip_forward-was-0, ipv6_forwarding-was-0), so a router restarted
//     after a crash still knows them. Nothing else of the provider's ruleset is touched.
//   - Anyone else changing or removing the table (nft flush ruleset) is
//     seen in nftables' notifications (tableWatch) and the table is
//     written again at once; if it cannot be, forwarding is off until it
//     is.
//   - The guards (guard.go) keep anything of a client's from being
//     forwarded while the table is gone: a table the router's socket owns
//     (GuardTableName), which another program's nft flush ruleset leaves,
//     drops what the main table has not marked (GuardMark), and policy
//     routing rules keep clients apart even after a crash.
//
// Every change is one nftables transaction that replaces the whole main
// table (and changes the limits table's elements), so packets see the old
// rules or the new, a restart that finds its own table converges to the
// same ruleset, and a table someone else changed is put back whole. The rules name NICs by ifindex, not by name, so a NIC
// that udev renames stays covered.
//
// The router never runs nft or iptables and never touches another table.
// On a kernel without IPv6 it routes IPv4 only, and says so.
//
// # DNS
//
// A client names Resolver (100.127.255.53) and Resolver6
// (fd9f:2b8:5010::53) in its resolv.conf, whatever its provider and link
// id. Neither is on-link for any client, so each reaches the client's
// provider, whose table redirects UDP and TCP port 53 sent to either from
// a provider link (by that link's own client) to the port of the router's
// DNS forwarder (package dnsfwd), which listens in both families (IPv4
// only on a kernel without IPv6, and a line). The forwarder asks the first
// allowed nameserver of the provider's own /etc/resolv.conf, of either
// family whatever the query's, and answers REFUSED at once when there is
// none. The file is followed with inotify on its directory (a
// DHCP client renames a new file over it) and through symlinks; a change
// gives the forwarder its new upstreams and changes nothing in the table.
//
// An upstream is allowed by its address (dnsfwd.CheckUpstream: unicast,
// global, private or loopback, not a client's) and, before each query, by
// its route (routeCheck): never through a provider link, never broadcast
// or multicast, and Resolver or Resolver6 itself only through one of the
// provider's own client NICs: a provider that is a client of another (a VPN VM)
// forwards to its provider, which resolves. A resolver on the provider's
// loopback (systemd-resolved's 127.0.0.53) works as any other.
//
// # Console
//
// Lines about one NIC come with that NIC's other lines; the router's own
// start with "spectrum-router: ":
//
//	spectrum-router: added ip rules 10: iif lo goto 12; 11: from 100.64.0.0/16 to 100.64.0.0/16 prohibit; 12: nop
//	spectrum-router: added ip -6 rules 10: iif lo goto 12; 11: from fd9f:2b8:5010::/48 to fd9f:2b8:5010::/48 prohibit; 12: nop
//	spectrum-router: added table inet spectrum-router-guard (owned by the router: nothing of a client's is forwarded without table inet spectrum-router)
//	spectrum-router: added table inet spectrum-router (1 provider NICs)
//	spectrum-router: per-link limits (table inet spectrum-router-limits): 16384 conntrack entries, 1000 new connections a second (burst 2000), 200 DNS packets a second (burst 400) per protocol
//	spectrum-router: set net.ipv4.ip_forward 1, was 0
//	spectrum-router: set IPv6 accept_ra 2, was 1, to keep taking router advertisements with forwarding on: default, eth0
//	spectrum-router: set net.ipv6.conf.all.forwarding 1, was 0
//	spectrum-router: DNS forwarder on port 40123, UDP and TCP
//	spectrum-router: DNS to 100.127.255.53 and fd9f:2b8:5010::53 goes to 192.0.2.53 (first nameserver of /etc/resolv.conf)
//	eth1 0a:b3:ec:80:12:34: router: routing for client 100.64.18.52
//	eth1 0a:b3:ec:80:12:34: router: flushed 2 conntrack entries of 100.64.18.52
//	eth1 0a:b3:ec:80:12:34: router: stopped routing for client 100.64.18.52
//	spectrum-router: DNS to 100.127.255.53 and fd9f:2b8:5010::53 is refused: /etc/resolv.conf names no nameserver
//	spectrum-router: DNS upstream 100.127.255.53 not used: routes through eth0, not a client NIC: this provider is no one's client
//	eth2 0a:b3:ec:80:00:09: set link down
//	spectrum-router: set net.ipv4.ip_forward 0 again
//	spectrum-router: set net.ipv6.conf.all.forwarding 0 again
//	spectrum-router: removed table inet spectrum-router
//	spectrum-router: removed table inet spectrum-router-limits
//	spectrum-router: removed table inet spectrum-router-guard
//	spectrum-router: removed ip rules 10: iif lo goto 12; 11: from 100.64.0.0/16 to 100.64.0.0/16 prohibit; 12: nop
//	spectrum-router: removed ip -6 rules 10: iif lo goto 12; 11: from fd9f:2b8:5010::/48 to fd9f:2b8:5010::/48 prohibit; 12: nop
//
// # Kernel
//
// The ruleset needs nf_tables with the inet family, NAT chains
// (nft_chain_nat, nf_nat), masquerade and redirect (nft_masq, nft_redir),
// conntrack state (nft_ct, nf_conntrack), reject (nft_reject_inet), the
// limits (nft_limit, nft_connlimit), and ctnetlink (nf_conntrack_netlink).
// A kernel that builds them as modules loads them on demand through
// modprobe; an initramfs without one must load them first.
package router

// Resolver is the virtual DNS resolver address every client names in its
// resolv.conf ("nameserver 100.127.255.53"), whatever its provider and
// link id, so one client image works behind any provider. A provider
// running the router redirects DNS (UDP and TCP port 53) sent to it
// through a provider link to its forwarder, which asks the resolver the
// provider itself uses now (a nameserver of its /etc/resolv.conf); a
// chained provider whose own resolver is this address asks its provider.
//
// It lies in the shared address space 100.64.0.0/10 (RFC 6598, meant for a
// provider's internal network, where the clients' 100.64.0.0/16 already
// is), outside 100.64.0.0/16 and 169.254.0.0/16: no client has it on-link,
// so every client sends it through its default route, to its provider.
const Resolver = "100.127.255.53"

// Resolver6 is the IPv6 virtual DNS resolver (mac.Resolver6), which every
// client names beside Resolver ("nameserver fd9f:2b8:5010::53"); the
// router answers it as it does Resolver, through the same forwarder, so
// either reaches an upstream of either family. It lies in subnet 0 of the
// links' unique local prefix, which no link has: every client sends it
// through its default route, to its provider.
const Resolver6 = "fd9f:2b8:5010::53"
