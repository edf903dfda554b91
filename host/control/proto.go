package control

import "time"

// Request is one command to the daemon.
type Request struct {
	Op     string `json:"op"`               // list, start, stop, status, logs, console
	Name   string `json:"name,omitempty"`   // the VM, for all but list
	Follow bool   `json:"follow,omitempty"` // logs: keep streaming new lines
}

// Response answers a Request.
type Response struct {
	OK    bool       `json:"ok"`
	Error string     `json:"error,omitempty"`
	VMs   []VMStatus `json:"vms,omitempty"`
}

// VMStatus is what list and status report of one VM.
type VMStatus struct {
	Name string `json:"name"`
	// State is one of stopped, starting (links being made, process
	// launching), running, backoff (waiting to restart after a crash),
	// stopping, failed (its first launch failed, or it became invalid
	// before a relaunch: not retried until the next start; Error says why).
	State    string    `json:"state"`
	PID      int       `json:"pid,omitempty"`
	Restarts int       `json:"restarts"`
	Since    time.Time `json:"since,omitzero"`
	LastExit string    `json:"last_exit,omitempty"`
	// Error is why the VM failed, or why its last relaunch failed while it
	// waits to retry.
	Error string `json:"error,omitempty"`
	// NoOutputSince is set while the VM has run for Options.SilentAfter or
	// longer without writing anything to its serial console: it is the
	// launch time (a guest that does not boot shows here).
	NoOutputSince time.Time    `json:"no_output_since,omitzero"`
	Links         []LinkStatus `json:"links,omitempty"`
	// Uplinks are the VM's NICs on host bridges: those it runs with, or
	// its configuration's when it does not run.
	Uplinks []UplinkStatus `json:"uplinks,omitempty"`
	// PCI are the host PCI devices the VM gets by VFIO (uplinks/pci), by
	// address: those it runs with, or its configuration's.
	PCI []string `json:"pci,omitempty"`
	// Warnings are the entries of the VM's directory that are not used
	// ("PATH: why"), as the configuration last loaded found them: a typo
	// (provider/net for providers/net), a blk/ file that is not *.img.
	Warnings []string `json:"warnings,omitempty"`
}

// UplinkStatus is one NIC of a VM on a host bridge (uplinks/net).
type UplinkStatus struct {
	Iface string `json:"iface"` // the host bridge
	MAC   string `json:"mac"`   // the VM's NIC on it
}

// LinkStatus is one network link of a VM as seen from that VM.
type LinkStatus struct {
	Peer string `json:"peer"` // the VM at the other end
	Role string `json:"role"` // this VM's side: "client" or "provider"
	ID   string `json:"id"`   // link id A:B
	MAC  string `json:"mac"`  // this VM's NIC on the link
	// Addrs are the addresses this VM's NIC has on the link, IPv4 first,
	// as spectrum-netcfg configures them from the MAC (docs/DESIGN.md's
	// MAC scheme): a client's 100.64.A.B/16 and fd9f:2b8:5010:AB::2/64; a
	// provider's 169.254.A.B/32, fd9f:2b8:5010:AB::1/64 and fe80::1/64.
	// They are derived, not read from the guest: a guest kernel without
	// IPv6 has only the IPv4 one.
	Addrs []string `json:"addrs,omitempty"`
	// Gateways are a client's default gateways on the link, one per
	// family (169.254.A.B, fe80::1); empty for a provider.
	Gateways []string `json:"gateways,omitempty"`
}
