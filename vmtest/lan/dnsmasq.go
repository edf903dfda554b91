package lan

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"
)

// dnsmasq is one dnsmasq process in the LAN's namespace.
type dnsmasq struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

// Dnsmasq is the path of Debian's dnsmasq (package dnsmasq-base).
func Dnsmasq() (string, error) {
	if p, err := exec.LookPath("dnsmasq"); err == nil {
		return p, nil
	}
	if p, err := exec.LookPath("/usr/sbin/dnsmasq"); err == nil {
		return p, nil
	}
	return "", errors.New("lan: no dnsmasq (scripts/deps.sh installs Debian's dnsmasq-base)")
}

// startDnsmasq starts the DNS server, then the DHCP server, for p: two
// instances, so that each listens only where it should (the DNS server on
// p.DNS and p.DNS6 alone, the DHCP server on the router's address, its
// identity, which every Plan keeps, or on the LAN's NIC when it speaks
// IPv6: dnsmasq sends router advertisements only on an interface it
// serves by name).
func (l *LAN) startDnsmasq(p Plan) error {
	mode := l.cfg.Mode
	common := []string{"--keep-in-foreground", "--conf-file=/dev/null", "--pid-file=",
		"--log-facility=-", "--no-hosts", "--no-resolv", "--no-poll", "--bind-interfaces"}
	// Only what it knows: WebName, NXDOMAIN for anything else under
	// lan.test, and nothing forwarded anywhere (no upstream). A family
	// the LAN does not speak has no record (NODATA).
	var dnsArgs []string
	if mode.IPv4() {
		dnsArgs = append(dnsArgs, "--listen-address="+p.DNS.String(), "--address=/"+WebName+"/"+p.Web.String())
	}
	if mode.IPv6() {
		dnsArgs = append(dnsArgs, "--listen-address="+p.DNS6.String(), "--address=/"+WebName+"/"+p.Web6.String())
	}
	dns, err := l.runDnsmasq("dnsmasq-dns", slices.Concat(common, dnsArgs, []string{"--local=/lan.test/", "--log-queries"}), "")
	if err != nil {
		return err
	}
	l.dns = dns
	type check struct {
		server, want netip.Addr
		lookup       func(context.Context, netip.Addr, string) ([]netip.Addr, error)
	}
	var checks []check
	if mode.IPv4() {
		checks = append(checks, check{p.DNS, p.Web, l.Lookup})
	}
	if mode.IPv6() {
		checks = append(checks, check{p.DNS6, p.Web6, l.Lookup6})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, c := range checks {
		for {
			got, err := c.lookup(ctx, c.server, WebName)
			if err == nil && len(got) == 1 && got[0] == c.want {
				break
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("lan: DNS server on %v does not answer %s (%v, %v): %w\n%s", c.server, WebName, got, err, ctx.Err(), l.Log())
			case <-dns.done:
				return fmt.Errorf("lan: dnsmasq (DNS) exited: %v\n%s", dns.err, l.Log())
			case <-time.After(50 * time.Millisecond):
			}
		}
	}

	dhcpArgs := slices.Concat(common, []string{"--port=0", // no DNS in this instance
		"--dhcp-leasefile=" + l.leaseFile(p), "--log-dhcp"})
	// dnsmasq binds its DHCP socket before it logs the pool, and its
	// DHCPv6 and router advertisement sockets before it logs the
	// interface it binds to.
	ready := "DHCP, IP range"
	if mode.IPv6() {
		dhcpArgs = append(dhcpArgs, "--interface="+Iface)
		ready = "sockets bound exclusively to interface " + Iface
	} else {
		dhcpArgs = append(dhcpArgs, "--listen-address="+Router.String())
	}
	if mode.IPv4() {
		dhcpArgs = append(dhcpArgs,
			fmt.Sprintf("--dhcp-range=%v,%v,255.255.255.0,%d", p.RangeStart, p.RangeEnd, int(l.cfg.LeaseTime.Seconds())),
			"--dhcp-option=option:router,"+Router.String(),
			"--dhcp-option=option:dns-server,"+p.DNS.String(),
			fmt.Sprintf("--dhcp-option=option:T1,%d", int(l.cfg.T1.Seconds())),
			fmt.Sprintf("--dhcp-option=option:T2,%d", int(l.cfg.T2.Seconds())),
			// NAK a lease from another plan at once, so the client asks anew.
			"--dhcp-authoritative")
		if l.cfg.MTU != 0 {
			dhcpArgs = append(dhcpArgs, fmt.Sprintf("--dhcp-option=option:mtu,%d", l.cfg.MTU))
		}
	}
	if mode.IPv6() {
		secs := int(l.cfg.LeaseTime.Seconds())
		rng := fmt.Sprintf("--dhcp-range=::,constructor:%s,ra-stateless,64,%d", Iface, secs)
		if l.cfg.Stateful {
			rng = fmt.Sprintf("--dhcp-range=%v,%v,64,%d", p.Range6Start, p.Range6End, secs)
		}
		mtu := ""
		if l.cfg.MTU != 0 {
			mtu = fmt.Sprintf("mtu:%d,", l.cfg.MTU)
		}
		dhcpArgs = append(dhcpArgs, "--enable-ra",
			// An advertisement every 10 s (and one at once for a
			// solicitation), the router for 10 minutes.
			"--ra-param="+Iface+","+mtu+"10,600",
			rng,
			// In the advertisements' RDNSS as well as in DHCPv6.
			"--dhcp-option=option6:dns-server,["+p.DNS6.String()+"]")
	}
	dhcp, err := l.runDnsmasq("dnsmasq-dhcp", dhcpArgs, ready)
	if err != nil {
		return err
	}
	l.dhcp = dhcp
	return nil
}

// runDnsmasq starts dnsmasq with args in the namespace; with ready set, it
// waits until dnsmasq logs a line containing it.
func (l *LAN) runDnsmasq(name string, args []string, ready string) (*dnsmasq, error) {
	bin, err := Dnsmasq()
	if err != nil {
		return nil, err
	}
	d := &dnsmasq{name: name, done: make(chan struct{})}
	seen := make(chan struct{})
	var once sync.Once
	w := &lineWriter{f: func(line string) {
		l.logf("%s", line)
		if ready != "" && strings.Contains(line, ready) {
			once.Do(func() { close(seen) })
		}
	}}
	d.cmd = exec.Command("ip", append([]string{"netns", "exec", l.cfg.NS, bin}, args...)...)
	d.cmd.Stdout, d.cmd.Stderr = w, w
	// dnsmasq switches to user nobody after binding, which clears the
	// parent-death signal; Close (or the next Start's removal of a
	// namespace left behind) stops it otherwise.
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	l.logf("%s: ip netns exec %s %s %s", name, l.cfg.NS, bin, strings.Join(args, " "))
	if err := d.cmd.Start(); err != nil {
		return nil, fmt.Errorf("lan: start %s: %w", name, err)
	}
	go func() { d.err = d.cmd.Wait(); w.flush(); close(d.done) }()
	if ready == "" {
		return d, nil
	}
	select {
	case <-seen:
		return d, nil
	case <-d.done:
		return nil, fmt.Errorf("lan: %s exited at start: %v\n%s", name, d.err, l.Log())
	case <-time.After(10 * time.Second):
		d.stop()
		return nil, fmt.Errorf("lan: %s: no %q in its log after 10s\n%s", name, ready, l.Log())
	}
}

func (d *dnsmasq) stop() error {
	select {
	case <-d.done:
		return nil
	default:
	}
	d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.done:
		return nil
	case <-time.After(5 * time.Second):
		d.cmd.Process.Kill()
		<-d.done
		return fmt.Errorf("lan: %s did not stop within 5s of SIGTERM; killed", d.name)
	}
}

// Lookup asks the DNS server at server, from inside the LAN, for name's
// IPv4 addresses.
func (l *LAN) Lookup(ctx context.Context, server netip.Addr, name string) ([]netip.Addr, error) {
	return l.lookup(ctx, server, "ip4", name)
}

// Lookup6 is Lookup for name's IPv6 addresses.
func (l *LAN) Lookup6(ctx context.Context, server netip.Addr, name string) ([]netip.Addr, error) {
	return l.lookup(ctx, server, "ip6", name)
}

func (l *LAN) lookup(ctx context.Context, server netip.Addr, network, name string) ([]netip.Addr, error) {
	r := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		return Dial(l.path, network, netip.AddrPortFrom(server, 53).String())
	}}
	return r.LookupNetIP(ctx, network, name)
}

// lineWriter calls f once per complete line written to it.
type lineWriter struct {
	mu  sync.Mutex
	buf bytes.Buffer
	f   func(string)
}

func (w *lineWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Write(p)
	for {
		i := bytes.IndexByte(w.buf.Bytes(), '\n')
		if i < 0 {
			return len(p), nil
		}
		line := string(w.buf.Next(i + 1))
		w.f(strings.TrimRight(line, "\r\n"))
	}
}

func (w *lineWriter) flush() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.buf.Len() > 0 {
		w.f(w.buf.String())
		w.buf.Reset()
	}
}
