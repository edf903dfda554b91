package vm

import (
	"fmt"

	"spectrum-os.org/netcfg/internal/mac"
	"spectrum-os.org/netcfg/internal/nstest"
)

// NIC is one virtio-net device of a VM: the tap it is attached to on the
// host and the MAC the guest sees.
type NIC struct {
	Tap string
	MAC string
}

// AddLink creates link id's host side in ns the way the daemon will: a
// bridge and two taps on it (client and provider), all up, with no host
// address. It returns the client's and the provider's NIC.
func AddLink(ns *nstest.NS, id mac.LinkID) (client, provider NIC) {
	br := fmt.Sprintf("spbr-%04x", uint16(id))
	client = NIC{Tap: fmt.Sprintf("spc-%04x", uint16(id)), MAC: id.MAC(mac.Client).String()}
	provider = NIC{Tap: fmt.Sprintf("spp-%04x", uint16(id)), MAC: id.MAC(mac.Provider).String()}
	ns.IP("link", "add", br, "type", "bridge")
	ns.IP("link", "set", br, "up")
	for _, n := range []NIC{client, provider} {
		ns.IP("tuntap", "add", "mode", "tap", "name", n.Tap)
		ns.IP("link", "set", n.Tap, "master", br, "up")
	}
	return client, provider
}
