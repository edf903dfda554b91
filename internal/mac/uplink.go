package mac

import (
	"errors"
	"net"
)

// An uplink NIC is a VM's NIC on a host network (the user's LAN bridge), not
// on a link. Its MAC must never carry the OUI: the guest agent configures
// exactly the NICs that do, and leaves every other one to the guest's own
// network configuration, as it would a hardware NIC.

// Errors returned by CheckUplink, wrapped in a *RefusedError naming the MAC.
var (
	// ErrOUI means an uplink MAC carries the inter-guest OUI.
	ErrOUI = errors.New("carries the inter-guest OUI 0a:b3:ec, which only link NICs have")
	// ErrMulticast means the MAC is a multicast (or broadcast) address,
	// which no NIC may have as its own.
	ErrMulticast = errors.New("is a multicast address (the low bit of the first octet is set)")
	// ErrZero means the MAC is 00:00:00:00:00:00.
	ErrZero = errors.New("is all zeros")
)

// CheckUplink tells why hw cannot be the MAC of an uplink NIC: it must be a
// 6-octet unicast address other than all zeros, outside the OUI. Globally
// administered addresses are allowed: a user may give a VM the MAC a DHCP
// server or a switch already knows.
func CheckUplink(hw net.HardwareAddr) error {
	switch {
	case len(hw) != 6:
		return &RefusedError{MAC: hw.String(), Err: ErrSyntax}
	case hw[0]&0x01 != 0:
		return &RefusedError{MAC: hw.String(), Err: ErrMulticast}
	case hw[0] == OUI[0] && hw[1] == OUI[1] && hw[2] == OUI[2]:
		return &RefusedError{MAC: hw.String(), Err: ErrOUI}
	case hw[0]|hw[1]|hw[2]|hw[3]|hw[4]|hw[5] == 0:
		return &RefusedError{MAC: hw.String(), Err: ErrZero}
	}
	return nil
}

// DeriveUplink returns the MAC of the uplink NIC of VM vm on host interface
// iface when the configuration names none: the same for the same names on
// every host and at every start, locally administered, unicast, and never in
// the OUI. It is 46 bits of an FNV-1a hash of both names, so two pairs of
// names collide with a chance of about 2^-46; the configuration loader
// rejects the second VM of a collision all the same.
func DeriveUplink(vm, iface string) net.HardwareAddr {
	const offset, prime = 14695981039346656037, 1099511628211
	h := uint64(offset)
	add := func(s string) {
		for i := 0; i < len(s); i++ {
			h ^= uint64(s[i])
			h *= prime
		}
	}
	// A NUL cannot be in either name, so ("ab", "c") and ("a", "bc")
	// hash differently.
	add("spectrum uplink\x00")
	add(vm)
	add("\x00")
	add(iface)
	hw := make(net.HardwareAddr, 6)
	for i := range hw {
		hw[i] = byte(h >> (8 * i))
	}
	hw[0] = hw[0]&^0x01 | 0x02 // unicast, locally administered
	if hw[0] == OUI[0] && hw[1] == OUI[1] && hw[2] == OUI[2] {
		// One hash in 2^22 lands in the OUI: move it out, keeping every
		// other bit (0x0e is still unicast and locally administered).
		hw[0] = 0x0e
	}
	return hw
}
