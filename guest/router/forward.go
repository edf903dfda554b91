package router

import (
	"errors"

	"golang.org/x/sys/unix"
)

// IPForward is the switch for IPv4 forwarding. It is written through
// /proc (the router needs /proc mounted, unlike the rest of the agent):
// rtnetlink can set a NIC's forwarding (IFLA_INET_CONF) but not
// net.ipv4.conf.all, and the kernel asks the forwarding setting of the NIC
// a packet arrives on, so the uplinks (and a VPN's tun device, which may
// appear at any time) would each need it too. Writing this file sets every
// NIC's, as sysctl net.ipv4.ip_forward does.
const IPForward = "/proc/sys/net/ipv4/ip_forward"

// readForward returns the value of IPForward: '0' or '1'.
func readForward() (byte, error) {
	const path = IPForward
	var b [8]byte
	n, err := readFile(path, b[:])
	if err != nil {
		return 0, wrap("read "+path+" (the router needs /proc)", err)
	}
	if n == 0 || (b[0] != '0' && b[0] != '1') {
		return 0, errors.New(path + ": unexpected value " + quote(string(b[:n])))
	}
	return b[0], nil
}

// writeForward sets IPForward to v ('0' or '1').
func writeForward(v byte) error {
	fd, err := unix.Open(IPForward, unix.O_WRONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	_, err = unix.Write(fd, []byte{v, '\n'})
	if cerr := unix.Close(fd); err == nil {
		err = cerr
	}
	return err
}

// readFile reads the start of path into b, as much as fits. The router
// reads small files through plain system calls: os.ReadFile and its
// FileInfo machinery would cost their size in a binary with a budget.
func readFile(path string, b []byte) (int, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return 0, err
	}
	defer unix.Close(fd)
	n := 0
	for n < len(b) {
		m, err := unix.Read(fd, b[n:])
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return n, err
		}
		if m == 0 {
			break
		}
		n += m
	}
	return n, nil
}

func quote(s string) string { return "\"" + s + "\"" }
