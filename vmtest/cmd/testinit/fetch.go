package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"spectrum-os.org/netcfg/vmtest/tput"
)

// resolve looks name up (A and AAAA, Go's resolver, through
// /etc/resolv.conf) until it answers or timeout passes: "resolve NAME ok
// addrs=A,B tries=N" or "fail resolve NAME: ...". NAME@SERVER asks SERVER
// (an address, port 53) alone, over UDP: "resolve NAME@SERVER ok ...".
// A suffix /N waits for N addresses or more (Go's resolver answers with
// the A records alone when the AAAA query fails, and the other way
// round): "resolve NAME@SERVER/N ok ...".
func resolve(arg string, timeout time.Duration) {
	query, want := arg, 1
	if i := strings.LastIndex(arg, "/"); i >= 0 {
		n, err := strconv.Atoi(arg[i+1:])
		if err != nil || n < 1 {
			report("fail resolve %s: want NAME[@SERVER][/N]", arg)
			return
		}
		query, want = arg[:i], n
	}
	name, server, _ := strings.Cut(query, "@")
	r := net.DefaultResolver
	if server != "" {
		to := net.JoinHostPort(server, "53")
		r = &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, to)
		}}
	}
	deadline := time.Now().Add(timeout)
	for try := 1; ; try++ {
		addrs, err := lookup(r, name)
		if err == nil && len(addrs) < want {
			err = fmt.Errorf("%d addresses (%s), want %d", len(addrs), strings.Join(addrs, ","), want)
		}
		if err == nil {
			report("resolve %s ok addrs=%s tries=%d", arg, strings.Join(addrs, ","), try)
			return
		}
		if time.Now().After(deadline) {
			report("fail resolve %s: %v (tries=%d)", arg, err, try)
			return
		}
		time.Sleep(time.Second)
	}
}

func lookup(r *net.Resolver, name string) ([]string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	addrs, err := r.LookupHost(ctx, name)
	slices.Sort(addrs)
	return addrs, err
}

// resolvConfStep reports the nameservers of /etc/resolv.conf as the
// guest's resolver reads them: "resolvconf nameservers=A,B".
func resolvConfStep() {
	b, err := os.ReadFile(resolvConf)
	if err != nil {
		report("fail resolvconf: %v", err)
		return
	}
	var ns []string
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "nameserver" {
			ns = append(ns, f[1])
		}
	}
	report("resolvconf nameservers=%s", strings.Join(ns, ","))
}

// page is one fetch's result.
type page struct {
	status int
	remote string // the address connected to
	bytes  int
	sum    string // hex SHA-256 of the body
	title  string
}

func (p page) String() string {
	return fmt.Sprintf("status=%d addr=%s bytes=%d sha256=%s title=%q", p.status, p.remote, p.bytes, p.sum, p.title)
}

var titleRE = regexp.MustCompile(`(?is)<title>(.*?)</title>`)

// get fetches u once, on a new connection (so each fetch resolves the name
// again), within 10 s.
func get(u string) (page, error) {
	var remote string
	tr := &http.Transport{DisableKeepAlives: true,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
			if err == nil {
				remote = c.RemoteAddr().(*net.TCPAddr).IP.String()
			}
			return c, err
		}}
	c := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	resp, err := c.Get(u)
	if err != nil {
		return page{}, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return page{}, err
	}
	sum := sha256.Sum256(body)
	p := page{status: resp.StatusCode, remote: remote, bytes: len(body), sum: hex.EncodeToString(sum[:])}
	if m := titleRE.FindSubmatch(body); m != nil {
		p.title = string(bytes.TrimSpace(m[1]))
	}
	if resp.StatusCode != http.StatusOK {
		return p, fmt.Errorf("%s: %s", u, resp.Status)
	}
	return p, nil
}

// fetch gets u until it answers 200 or timeout passes: "fetch URL ok
// status=200 addr=IP bytes=N sha256=HEX title=... tries=N" or "fail fetch
// URL: ...".
func fetch(u string, timeout time.Duration) {
	deadline := time.Now().Add(timeout)
	for try := 1; ; try++ {
		p, err := get(u)
		if err == nil {
			report("fetch %s ok %v tries=%d", u, p, try)
			return
		}
		if time.Now().After(deadline) {
			report("fail fetch %s: %v (tries=%d)", u, err, try)
			return
		}
		time.Sleep(time.Second)
	}
}

// fetchWatch gets u every second for as long as the VM runs, and reports
// each change: "fetchwatch URL up n=N addr=IP ..." when it answers after
// not answering, or answers from another address (a new DNS answer), and
// "fetchwatch URL down n=N err=..." after three misses in a row. N counts
// the up reports. It shows a path (and name resolution) coming back, or
// following a change, without restarting this VM.
func fetchWatch(u string) {
	up, misses, n, addr := false, 0, 0, ""
	for {
		start := time.Now()
		p, err := get(u)
		switch {
		case err == nil && (!up || p.remote != addr):
			up, misses, addr = true, 0, p.remote
			n++
			report("fetchwatch %s up n=%d %v", u, n, p)
		case err == nil:
			misses = 0
		case up:
			if misses++; misses >= 3 {
				up = false
				report("fetchwatch %s down n=%d err=%q", u, n, err.Error())
			}
		}
		if d := time.Second - time.Since(start); d > 0 {
			time.Sleep(d)
		}
	}
}

// lynxPath is Debian's lynx, in the archives that carry it.
const lynxPath = "/usr/bin/lynx"

// lynxDump runs `lynx -dump URL` until it succeeds or timeout passes, and
// writes the page as lynx renders it to the console, framed by "lynx
// -dump URL" and "lynx URL ok lines=N tries=N" (or "fail lynx URL: ...").
// Lynx resolves the name itself (glibc, /etc/resolv.conf).
func lynxDump(u string, timeout time.Duration) {
	if _, err := os.Stat(lynxPath); err != nil {
		report("fail lynx %s: no lynx in this initramfs", u)
		return
	}
	deadline := time.Now().Add(timeout)
	for try := 1; ; try++ {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		cmd := exec.CommandContext(ctx, lynxPath, "-dump", u)
		cmd.Env = guestEnv("dumb")
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		cancel()
		if err == nil && len(bytes.TrimSpace(out)) > 0 {
			report("lynx -dump %s", u)
			var b strings.Builder
			sc := bufio.NewScanner(bytes.NewReader(out))
			lines := 0
			for sc.Scan() {
				b.WriteString(sc.Text() + "\n")
				lines++
			}
			// One write: the page's lines stay together on the console.
			os.Stdout.WriteString(b.String())
			report("lynx %s ok lines=%d tries=%d", u, lines, try)
			return
		}
		if time.Now().After(deadline) {
			report("fail lynx %s: %v: %s (tries=%d)", u, err, bytes.TrimSpace(stderr.Bytes()), try)
			return
		}
		time.Sleep(2 * time.Second)
	}
}

// throughput sends to a tput receiver at addr (HOST:PORT, or HOST for
// tput.Port) for secs seconds: "tput ADDR ok bytes=N took=S mbit=M" or
// "fail tput ...".
func throughput(arg string) {
	addr, secs := arg, 5
	if i := strings.LastIndex(arg, "/"); i >= 0 {
		addr = arg[:i]
		if n, err := strconv.Atoi(arg[i+1:]); err == nil {
			secs = n
		}
	}
	if _, _, err := net.SplitHostPort(addr); err != nil {
		addr = net.JoinHostPort(addr, strconv.Itoa(tput.Port))
	}
	r, err := tput.Send(addr, time.Duration(secs)*time.Second, time.Duration(secs)*time.Second+time.Minute)
	if err != nil {
		report("fail tput %s: %v", addr, err)
		return
	}
	report("tput %s ok bytes=%d took=%.3fs mbit=%.2f", addr, r.Bytes, r.Took.Seconds(), r.BitsPerSecond()/1e6)
}

// throughputBack is throughput the other way round: it waits for a
// receiver to connect to this VM's tput.BackPort (a provider running
// tputdial towards its client, which may not open connections to it) and
// sends to it for secs seconds: "tput ADDR ok ..." as throughput says it,
// ADDR (HOST/SECS) naming the receiver.
func throughputBack(arg string) {
	addr, secs := arg, 5
	if i := strings.LastIndex(arg, "/"); i >= 0 {
		addr = arg[:i]
		if n, err := strconv.Atoi(arg[i+1:]); err == nil {
			secs = n
		}
	}
	// A listener per family (IPv6's IPv6 alone), so that a receiver
	// of the other family waiting to connect is not taken for this one.
	network := "tcp4"
	if ip := net.ParseIP(addr); ip != nil && ip.To4() == nil {
		network = "tcp6"
	}
	addr = net.JoinHostPort(addr, strconv.Itoa(tput.BackPort))
	ln := backLns[network]
	if ln == nil {
		var err error
		if ln, err = net.ListenTCP(network, &net.TCPAddr{Port: tput.BackPort}); err != nil {
			report("fail tput %s: %v", addr, err)
			return
		}
		backLns[network] = ln
	}
	r, err := tput.SendOn(ln, time.Duration(secs)*time.Second, time.Duration(secs)*time.Second+time.Minute)
	if err != nil {
		report("fail tput %s: %v", addr, err)
		return
	}
	report("tput %s ok bytes=%d took=%.3fs mbit=%.2f", addr, r.Bytes, r.Took.Seconds(), r.BitsPerSecond()/1e6)
}

// The listeners of throughputBack ("tcp4", "tcp6"), kept from one
// measurement to the next (the steps run one after the other).
var backLns = map[string]*net.TCPListener{}

// throughputDial connects to HOST's tput.BackPort and receives, again
// and again, for as long as the VM runs: the receiver of throughputBack.
func throughputDial(host string) {
	addr := net.JoinHostPort(host, strconv.Itoa(tput.BackPort))
	for {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			time.Sleep(20 * time.Millisecond)
			continue
		}
		tput.Receive(c)
	}
}

// rtt measures N echo round trips to ADDR with probe (UDP to port 7, or
// ICMP): "rtt ADDR ok n=N min=MS median=MS max=MS" or "fail rtt ...". The
// first round trip is not counted: under TCG it pays for translating the
// path's code, and it resolves the neighbour.
func rtt(arg string, probe func(net.IP, int) (time.Duration, error)) {
	addr, n := arg, 20
	if i := strings.LastIndex(arg, "/"); i >= 0 {
		addr = arg[:i]
		if v, err := strconv.Atoi(arg[i+1:]); err == nil {
			n = v
		}
	}
	ip := net.ParseIP(addr)
	if v4 := ip.To4(); v4 != nil {
		ip = v4 // the probes take a family's length as its family
	}
	if ip == nil {
		report("fail rtt %s: not an IP address", addr)
		return
	}
	if _, err := probe(ip, 0); err != nil {
		report("fail rtt %s: %v", addr, err)
		return
	}
	var ms []float64
	for seq := 1; seq <= n; seq++ {
		d, err := probe(ip, seq)
		if err != nil {
			report("fail rtt %s: %v (after %d)", addr, err, len(ms))
			return
		}
		ms = append(ms, float64(d.Microseconds())/1000)
	}
	slices.Sort(ms)
	report("rtt %s ok n=%d min=%.3fms median=%.3fms max=%.3fms", addr, n, ms[0], ms[len(ms)/2], ms[len(ms)-1])
}

// guestEnv is the environment of programs the init runs for a user (the
// console shell, lynx).
func guestEnv(term string) []string {
	return []string{"PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin", "HOME=/root", "TERM=" + term,
		"LANG=C.UTF-8", "USER=root", "LOGNAME=root", "SHELL=/bin/sh"}
}

// validURL rejects a step argument that is not an http URL.
func validURL(u string) bool {
	p, err := url.Parse(u)
	return err == nil && p.Scheme == "http" && p.Host != ""
}

// serveTput runs the throughput receiver (vmtest/tput) on port 5001, so a
// client can measure its path to this VM.
func serveTput() {
	ln, err := net.Listen("tcp4", ":"+strconv.Itoa(tput.Port))
	if err != nil {
		report("fail tput receiver: %v", err)
		return
	}
	tput.Serve(ln)
}
