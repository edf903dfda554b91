package dhcpc

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
)

// resolvConf is the client's resolv.conf: the DHCP lease's resolvers and
// the IPv6 ones (RDNSS, DHCPv6), written whenever either changes, IPv4's
// first (glibc reads the first three; a provider's router takes the first
// IPv4 one).
type resolvConf struct {
	path, iface string
	mu          sync.Mutex
	v4, v6      []netip.Addr
	server      netip.Addr // the DHCP server's identifier
	written     bool
}

// set4 sets the IPv4 resolvers (from the lease of server).
func (r *resolvConf) set4(dns []netip.Addr, server netip.Addr) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.written && slices.Equal(r.v4, dns) {
		return nil
	}
	r.v4, r.server = slices.Clone(dns), server
	return r.writeLocked()
}

// set6 sets the IPv6 resolvers.
func (r *resolvConf) set6(dns []netip.Addr) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if slices.Equal(r.v6, dns) {
		return nil
	}
	r.v6 = slices.Clone(dns)
	return r.writeLocked()
}

// writeLocked replaces the file by a rename, so a reader (the provider's
// router following its resolver) never sees a half-written file.
func (r *resolvConf) writeLocked() error {
	if r.path == "" {
		return nil
	}
	var b strings.Builder
	if len(r.v4) > 0 || len(r.v6) == 0 {
		fmt.Fprintf(&b, "# from the DHCP lease on %s (server %v)\n", r.iface, r.server)
	}
	if len(r.v6) > 0 {
		fmt.Fprintf(&b, "# from the router advertisements and DHCPv6 on %s\n", r.iface)
	}
	for _, d := range r.v4 {
		fmt.Fprintf(&b, "nameserver %v\n", d)
	}
	for _, d := range r.v6 {
		if d.IsLinkLocalUnicast() {
			d = d.WithZone(r.iface) // glibc takes a scoped resolver
		}
		fmt.Fprintf(&b, "nameserver %v\n", d)
	}
	tmp := filepath.Join(filepath.Dir(r.path), "."+filepath.Base(r.path)+".dhcp")
	if err := os.WriteFile(tmp, []byte(b.String()), 0o644); err != nil {
		return fmt.Errorf("resolv.conf: %w", err)
	}
	if err := os.Rename(tmp, r.path); err != nil {
		return fmt.Errorf("resolv.conf: %w", err)
	}
	r.written = true
	return nil
}
