// Package router is the provider's router of spectrum-netcfg -watch -route:
// IPv4 forwarding, masquerading of client traffic, isolation between
// clients, anti-spoofing per provider link, and a virtual DNS resolver
// address for clients (docs/DESIGN.md, "The provider's router").
package router

// Resolver is the virtual DNS resolver address every client names in its
// resolv.conf ("nameserver 100.127.255.53"), whatever its provider and
// link id, so one client image works behind any provider. A provider
// running the router DNATs DNS (UDP and TCP port 53) sent to it through a
// provider link to the resolver the provider itself uses now (the first
// IPv4 nameserver of its /etc/resolv.conf); a chained provider whose own
// resolver is this address forwards and masquerades it to its upstream.
//
// It lies in the shared address space 100.64.0.0/10 (RFC 6598, meant for a
// provider's internal network, where the clients' 100.64.0.0/16 already
// is), outside 100.64.0.0/16 and 169.254.0.0/16: no client has it on-link,
// so every client sends it through its default route, to its provider.
const Resolver = "100.127.255.53"
