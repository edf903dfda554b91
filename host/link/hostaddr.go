package link

import (
	"fmt"
	"strings"

	"github.com/vishvananda/netlink"
)

// A user's bridge that carries an address of the host makes every uplink
// VM on it an ordinary LAN peer of the host: the VM can send the host
// router advertisements, ARP and DHCP like any device on the LAN, and
// reach its services there. spectrumd does not change the bridge; it says
// so (CreateUplink's log, spectrumd check).

// HostAddrs lists the addresses interface name has in the caller's network
// namespace (as prefixes: "192.0.2.1/24"), for `spectrumd check`, which
// runs where spectrumd would. It needs no privilege.
func HostAddrs(name string) ([]string, error) {
	h, err := netlink.NewHandle(netlink.FAMILY_ALL)
	if err != nil {
		return nil, fmt.Errorf("netlink: %w", err)
	}
	defer h.Close()
	l, err := h.LinkByName(name)
	if err != nil {
		return nil, fmt.Errorf("host interface %s: %w", name, err)
	}
	return hostAddrs(h, l)
}

// hostAddrs lists l's addresses through h.
func hostAddrs(h *netlink.Handle, l netlink.Link) ([]string, error) {
	as, err := h.AddrList(l, netlink.FAMILY_ALL)
	if err != nil {
		return nil, fmt.Errorf("addresses of %s: %w", l.Attrs().Name, err)
	}
	out := make([]string, 0, len(as))
	for _, a := range as {
		out = append(out, a.IPNet.String())
	}
	return out, nil
}

// HostAddrWarning is what check and CreateUplink say of bridge br with the
// host's addresses addrs.
func HostAddrWarning(br string, addrs []string) string {
	return fmt.Sprintf("host bridge %s has the host's address %s: a VM with an uplink on it is an ordinary LAN peer of the host (it can send the host router advertisements, ARP and DHCP, and reach its services)",
		br, strings.Join(addrs, ", "))
}
