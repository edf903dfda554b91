package guest_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"spectrum-os.org/netcfg/internal/nstest"
)

// agentRun is one finished run of the agent.
type agentRun struct {
	code    int
	console string // what it wrote to -console
	stderr  string
}

// consoleFile makes an empty file for -console (the agent never creates its
// console, as it must not create files under an unpopulated /dev).
func consoleFile(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "console")
	if err := os.WriteFile(p, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// runAgent runs the real binary inside ns with a fresh console file.
func runAgent(t *testing.T, ns *nstest.NS, args ...string) agentRun {
	t.Helper()
	console := consoleFile(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := ns.Command(ctx, agentBin, append([]string{"-console", console}, args...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	r := agentRun{stderr: stderr.String()}
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	case err != nil:
		t.Fatalf("run %s: %v", agentBin, err)
	}
	b, err := os.ReadFile(console)
	if err != nil {
		t.Fatal(err)
	}
	r.console = string(b)
	t.Logf("agent exit %d, console:\n%sstderr: %q", r.code, r.console, r.stderr)
	return r
}

// lines splits a log into its lines.
func lines(s string) []string {
	return strings.Split(strings.TrimSuffix(s, "\n"), "\n")
}

// ipLink is what `ip -j addr show` reports of a link, in the fields the
// tests compare.
type ipLink struct {
	Index    int      `json:"ifindex"`
	Name     string   `json:"ifname"`
	Flags    []string `json:"flags"`
	MAC      string   `json:"address"`
	AddrInfo []ipAddr `json:"addr_info"`
}

type ipAddr struct {
	Family    string `json:"family"`
	Local     string `json:"local"`
	Prefixlen int    `json:"prefixlen"`
	Broadcast string `json:"broadcast,omitempty"`
	Scope     string `json:"scope"`
	NoDAD     bool   `json:"nodad,omitempty"`
}

// ipRoute is one entry of `ip -j route show table main`.
type ipRoute struct {
	Dst      string   `json:"dst"`
	Gateway  string   `json:"gateway,omitempty"`
	Dev      string   `json:"dev"`
	Protocol string   `json:"protocol,omitempty"`
	Scope    string   `json:"scope,omitempty"`
	Prefsrc  string   `json:"prefsrc,omitempty"`
	Metric   int      `json:"metric,omitempty"`
	Flags    []string `json:"flags"`
}

// links reads every link with its IPv4 addresses, by name.
func links(t *testing.T, ns *nstest.NS) map[string]ipLink {
	t.Helper()
	var ls []ipLink
	if err := json.Unmarshal(ns.IP("-j", "-4", "addr", "show"), &ls); err != nil {
		t.Fatal(err)
	}
	// -4 leaves out links without IPv4; read them too.
	var all []ipLink
	if err := json.Unmarshal(ns.IP("-j", "link", "show"), &all); err != nil {
		t.Fatal(err)
	}
	m := make(map[string]ipLink, len(all))
	for _, l := range all {
		l.AddrInfo = []ipAddr{}
		m[l.Name] = l
	}
	for _, l := range ls {
		x := m[l.Name]
		x.AddrInfo = l.AddrInfo
		m[l.Name] = x
	}
	return m
}

// link reads one link.
func link(t *testing.T, ns *nstest.NS, name string) ipLink {
	t.Helper()
	l, ok := links(t, ns)[name]
	if !ok {
		t.Fatalf("no link %s in %s", name, ns.Name)
	}
	return l
}

// routes reads the main table's IPv4 routes through dev ("" for all).
func routes(t *testing.T, ns *nstest.NS, dev string) []ipRoute { return routesOf(t, ns, "-4", dev) }

// routes6 reads the main table's IPv6 routes through dev ("" for all).
func routes6(t *testing.T, ns *nstest.NS, dev string) []ipRoute { return routesOf(t, ns, "-6", dev) }

func routesOf(t *testing.T, ns *nstest.NS, family, dev string) []ipRoute {
	t.Helper()
	args := []string{"-j", family, "route", "show", "table", "main"}
	if dev != "" {
		args = append(args, "dev", dev)
	}
	var rs []ipRoute
	if err := json.Unmarshal(ns.IP(args...), &rs); err != nil {
		t.Fatal(err)
	}
	for i := range rs {
		if rs[i].Dev == "" {
			rs[i].Dev = dev // ip leaves dev out when filtering by it
		}
		if rs[i].Flags == nil {
			rs[i].Flags = []string{}
		}
	}
	return rs
}

// addrs6 reads a link's IPv6 addresses.
func addrs6(t *testing.T, ns *nstest.NS, name string) []ipAddr {
	t.Helper()
	var ls []ipLink
	if err := json.Unmarshal(ns.IP("-j", "-6", "addr", "show", "dev", name), &ls); err != nil {
		t.Fatal(err)
	}
	if len(ls) == 0 {
		return []ipAddr{}
	}
	return ls[0].AddrInfo
}

// state is everything the tests compare before and after a run.
type state struct {
	Links   map[string]ipLink
	Routes  []ipRoute
	Routes6 []ipRoute
	Addrs6  map[string][]ipAddr
	RP      map[string]string // rp_filter per link
}

func snapshot(t *testing.T, ns *nstest.NS) state {
	t.Helper()
	s := state{Links: links(t, ns), Routes: routes(t, ns, ""), Routes6: routes6(t, ns, ""), Addrs6: map[string][]ipAddr{}, RP: map[string]string{}}
	for name := range s.Links {
		s.RP[name] = ns.Sysctl("net.ipv4.conf." + name + ".rp_filter")
		s.Addrs6[name] = addrs6(t, ns, name)
	}
	return s
}

// ifindex is a link's index as a string, for expected log lines.
func ifindex(t *testing.T, ns *nstest.NS, name string) int {
	t.Helper()
	return link(t, ns, name).Index
}

func itoa(i int) string { return strconv.Itoa(i) }

// upFlags is how ip shows a tap that is up: a tap with no process behind it
// never has carrier.
var upFlags = []string{"NO-CARRIER", "BROADCAST", "MULTICAST", "UP"}
