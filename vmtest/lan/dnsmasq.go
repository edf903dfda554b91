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
// p.DNS alone, the DHCP server on the router's address, its identity, which
// every Plan keeps).
func (l *LAN) startDnsmasq(p Plan) error {
	common := []string{"--keep-in-foreground", "--conf-file=/dev/null", "--pid-file=",
		"--log-facility=-", "--no-hosts", "--no-resolv", "--no-poll", "--bind-interfaces"}
	dnsArgs := slices.Concat(common, []string{
		"--listen-address=" + p.DNS.String(),
		// Only what it knows: WebName, NXDOMAIN for anything else under
		// lan.test, and nothing forwarded anywhere (no upstream).
		"--address=/" + WebName + "/" + p.Web.String(),
		"--local=/lan.test/",
		"--log-queries"})
	dns, err := l.runDnsmasq("dnsmasq-dns", dnsArgs, "")
	if err != nil {
		return err
	}
	l.dns = dns
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for {
		got, err := l.Lookup(ctx, p.DNS, WebName)
		if err == nil && len(got) == 1 && got[0] == p.Web {
			break
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("lan: DNS server on %v does not answer %s (%v, %v): %w\n%s", p.DNS, WebName, got, err, ctx.Err(), l.Log())
		case <-dns.done:
			return fmt.Errorf("lan: dnsmasq (DNS) exited: %v\n%s", dns.err, l.Log())
		case <-time.After(50 * time.Millisecond):
		}
	}

	dhcpArgs := slices.Concat(common, []string{
		"--port=0", // no DNS in this instance
		"--listen-address=" + Router.String(),
		fmt.Sprintf("--dhcp-range=%v,%v,255.255.255.0,%d", p.RangeStart, p.RangeEnd, int(l.cfg.LeaseTime.Seconds())),
		"--dhcp-option=option:router," + Router.String(),
		"--dhcp-option=option:dns-server," + p.DNS.String(),
		fmt.Sprintf("--dhcp-option=option:T1,%d", int(l.cfg.T1.Seconds())),
		fmt.Sprintf("--dhcp-option=option:T2,%d", int(l.cfg.T2.Seconds())),
		// NAK a lease from another plan at once, so the client asks anew.
		"--dhcp-authoritative",
		"--dhcp-leasefile=" + l.leaseFile(p),
		"--log-dhcp"})
	// dnsmasq binds its DHCP socket before it logs the pool.
	dhcp, err := l.runDnsmasq("dnsmasq-dhcp", dhcpArgs, "DHCP, IP range")
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
	r := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		return Dial(l.path, network, netip.AddrPortFrom(server, 53).String())
	}}
	return r.LookupNetIP(ctx, "ip4", name)
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
