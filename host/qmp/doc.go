// Package qmp is spectrumd's client for QEMU's machine protocol (QMP): the
// commands the daemon needs to supervise a VM and to hot-plug network links.
//
// A QEMU that a guest has broken into is a hostile peer, so everything it
// sends is untrusted input:
//
//   - Every line is bounded (Dialer.MaxLine, DefaultMaxLine), the greeting
//     included; a longer line ends the session with ErrLineTooLong. The
//     client never holds more than one line, one reply and, per waiting
//     caller, a few events.
//   - Every command carries QMP's "id" member, a fresh random number; a
//     reply whose id is missing or is not the waiting command's is dropped
//     and counted (Stats.Stray), never taken as a later command's answer
//     (which QEMU cannot send early: it cannot guess the id).
//   - Every message is checked: the greeting must have its version and
//     capabilities, a reply exactly one of "return" and "error", an error a
//     non-empty class and description (else ErrProtocol), an event a name
//     and a timestamp. A line that is not a JSON object ends the session.
//   - Events are dispatched as they are read, never queued for later: one
//     nobody waits for is counted and forgotten, one a waiting caller has
//     no room for is dropped and counted (Stats.EventsDropped). A flood of
//     events costs CPU, not memory, and a reply behind it is still read.
//   - Every call takes a context. If it ends before QEMU answers, the
//     session is closed (Done, and Err says which command timed out): QEMU
//     answers in order, so a command it did not answer holds up every later
//     one, and what QEMU did with it is unknown. Dial again for a fresh
//     session (QEMU accepts a new connection on its monitor socket), as
//     host/qemu's Process.QMP does.
//
// The framing is the package's own, on a net.UnixConn, rather than
// github.com/digitalocean/go-qemu's SocketMonitor, which it used to wrap:
// that monitor decodes the greeting with an unbounded json.Decoder (a 64 MiB
// greeting took the daemon's heap to 225 MiB), stops reading for good at a
// line over bufio.Scanner's 64 KiB, sends no id and takes the next reply as
// the answer (one unsolicited reply shifts every later answer), counts an
// error with an empty description as success, and takes no context. None
// of that can be bounded from outside it, and QMP is plain JSON lines.
//
// File descriptors go to QEMU as SCM_RIGHTS with the command that names
// them (GetFD), which QEMU's monitor accepts on any unix socket without
// the "oob" capability: that is how host/qemu hot-plugs a tap (GetFD, then
// netdev_add and device_add; UnplugNIC here undoes it).
//
// A Client never writes to the guest: QMP talks to QEMU, not to the VM.
package qmp
