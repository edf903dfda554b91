// Package daemon is spectrumd's running core: it keeps one supervised VMM
// process per started VM, wires each network link on the host before either
// end needs it, plugs provider NICs in and out as clients come and go,
// forwards every VM's serial console into the host's logs (through
// host/vmlog), and answers the control socket's requests (it is the Handler
// of a host/control Server).
//
// It reaches QEMU and the kernel's network stack only through the VMM and
// Network interfaces, so the whole state machine is tested with fakes; the
// real implementations live in host/qemu and host/link. It never writes to a
// VM's serial console.
package daemon
