// Package control is the protocol between spectrumd's CLI and its daemon:
// the message types, the server the daemon runs on its unix socket, and the
// client the CLI dials it with.
//
// A client connects and writes one JSON Request on one line; the server
// answers with one JSON Response line. For "logs" with Follow and for
// "console" the connection then carries raw bytes (log lines, or the VM's
// virtio-console both ways). The server trusts no client: it checks the
// peer's uid, bounds the request's size and the time to send it, and every
// write; the client bounds its own wait for the reply.
package control
