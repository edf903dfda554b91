package router

import (
	"errors"
	"os"
	"strings"

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

// IPv6Forward is IPv6's switch, net.ipv6.conf.all.forwarding, written for
// the same reason: it sets every NIC's, and conf/default's for NICs to
// come. A kernel without IPv6 (ipv6.disable=1) has no such file.
const IPv6Forward = "/proc/sys/net/ipv6/conf/all/forwarding"

// ipv6Conf is the directory of the per-NIC IPv6 settings.
const ipv6Conf = "/proc/sys/net/ipv6/conf/"

// forwardName is the sysctl name of a forwarding switch, for the log.
func forwardName(path string) string {
	if path == IPv6Forward {
		return "net.ipv6.conf.all.forwarding"
	}
	return "net.ipv4.ip_forward"
}

// hasIPv6 tells whether the kernel has IPv6 (its forwarding switch).
func hasIPv6() bool {
	_, err := readFileString(IPv6Forward)
	return !errors.Is(err, unix.ENOENT)
}

// readForward returns the value of the forwarding switch at path
// (IPForward or IPv6Forward): '0' or '1'.
func readForward(path string) (byte, error) {
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

// writeForward sets the forwarding switch at path to v ('0' or '1').
func writeForward(path string, v byte) error {
	return writeFileString(path, string(v))
}

// keepRA makes every NIC that takes IPv6 router advertisements (accept_ra
// 1) keep taking them once forwarding is on (accept_ra 2), and
// conf/default too, for NICs that come later (a hot-plugged uplink, a
// VPN's tun device): when IPv6 forwarding goes on, the kernel stops
// taking advertisements on a NIC whose accept_ra is 1, and deletes the
// default routes they gave it (rt6_purge_dflt_routers), so an uplink
// configured by SLAAC would lose its default route. A provider NIC
// (provider tells) is left alone: it takes none (quietIPv6). It returns
// the NICs it changed and the errors, each naming its NIC; a NIC gone
// meanwhile is none of them.
func keepRA(provider func(index uint32) bool) (changed []string, errs []error) {
	ents, err := os.ReadDir(ipv6Conf)
	if err != nil {
		return nil, []error{wrap("read "+ipv6Conf, err)}
	}
	for _, e := range ents {
		name := e.Name()
		if name == "all" || name == "lo" {
			continue
		}
		if name != "default" {
			if index, err := ifIndex(name); err != nil || provider(index) {
				continue
			}
		}
		path := ipv6Conf + name + "/accept_ra"
		v, err := readFileString(path)
		if errors.Is(err, unix.ENOENT) {
			continue
		}
		if err == nil && v == "1" {
			if err = writeFileString(path, "2"); err == nil {
				changed = append(changed, name)
				continue
			}
		}
		if err != nil && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, wrap("set "+path+" 2", err))
		}
	}
	return changed, errs
}

// keepRALine is keepRA's line for the router's log, "" when it changed
// nothing.
func keepRALine(changed []string) string {
	if len(changed) == 0 {
		return ""
	}
	return "set IPv6 accept_ra 2, was 1, to keep taking router advertisements with forwarding on: " + strings.Join(changed, ", ")
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
