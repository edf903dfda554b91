// Package dnsfwd is the DNS forwarder of the provider's router: clients
// send their queries to the virtual resolvers (100.127.255.53:53,
// [fd9f:2b8:5010::53]:53), the router's ruleset redirects them from
// provider links to the forwarder's port, which it listens on in both
// families, and the forwarder sends each to the provider's current
// upstream resolver, of either family whatever the query's, and its
// answer back (docs/DESIGN.md, "DNS").
//
// It takes only what it must from clients, and bounds all of it:
//
//   - A message is read only as far as its header and one question
//     (golang.org/x/net/dns/dnsmessage); anything else is passed on as
//     is. A message that is not a standard query is answered at once
//     (FORMERR, NOTIMP) and never forwarded; one too short to carry an ID
//     is dropped.
//   - Each client (its source address) has queries in flight, a query
//     rate and TCP connections of its own to spend (Limits); over them it
//     gets REFUSED at once, and so does every client while there is no
//     upstream it may use: never a silent drop, so stub resolvers fail
//     fast instead of waiting out their timeouts.
//   - The forwarder sends only to the upstreams it was given, each checked
//     when given (CheckUpstream: unicast, global or private, not a client
//     address) and again, at most a second old, before each query (the
//     Config's Check: where it routes now). An answer is taken only from
//     the upstream asked, on a socket of the query's own, with the random
//     ID the forwarder gave the query and the question asked.
//
// It never sends to a client anything but an answer to that client's own
// query, from the address the query was sent to.
package dnsfwd
