package router_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"spectrum-os.org/netcfg/internal/mac"
	"spectrum-os.org/netcfg/internal/nstest"
)

// agentBin is the real static spectrum-router and netcfgBin the hook
// spectrum-netcfg (the clients' agent), built once by TestMain with the
// guest's flags; the tests run them as processes in their namespaces.
var agentBin, netcfgBin string

func TestMain(m *testing.M) {
	wrapped()
	dir, err := os.MkdirTemp("", "spectrum-router-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	agentBin, netcfgBin = filepath.Join(dir, "spectrum-router"), filepath.Join(dir, "spectrum-netcfg")
	for _, bin := range []string{agentBin, netcfgBin} {
		// The Makefile's GUESTFLAGS.
		cmd := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", bin, "spectrum-os.org/netcfg/cmd/"+filepath.Base(bin))
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "build %s: %v\n%s", filepath.Base(bin), err, out)
			os.RemoveAll(dir)
			os.Exit(1)
		}
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// deadline is when a test's waits give up: 60 s from now (a loaded
// machine), or earlier when the test's own deadline is nearer.
func deadline(t *testing.T) time.Time {
	d := time.Now().Add(60 * time.Second)
	if td, ok := t.Deadline(); ok && td.Add(-5*time.Second).Before(d) {
		d = td.Add(-5 * time.Second)
	}
	return d
}

// agent is one spectrum-router (with whatever args) running
// in a namespace with a private /etc (an empty tmpfs in its own mount
// namespace), so that its /etc/resolv.conf is the test's to write and the
// machine's is never touched.
type agent struct {
	t       *testing.T
	ns      *nstest.NS
	cmd     *exec.Cmd
	console string
	done    chan struct{}
	err     error // cmd.Wait's, once done is closed
}

// noResolvConf, as startAgent's resolv, leaves /etc/resolv.conf missing.
const noResolvConf = "-missing-"

// startAgent starts the agent in ns with resolv as its /etc/resolv.conf
// and waits for it to be watching. It is stopped (SIGKILL) when the test
// ends, if it still runs.
func startAgent(t *testing.T, ns *nstest.NS, resolv string, args ...string) *agent {
	t.Helper()
	a := startAgentNoWait(t, ns, resolv, args...)
	a.waitLine("spectrum-netcfg: watching for new NICs")
	return a
}

func startAgentNoWait(t *testing.T, ns *nstest.NS, resolv string, args ...string) *agent {
	t.Helper()
	return startAgentSh(t, ns, "", resolv, args...)
}

// startAgentSh is startAgentNoWait with shell commands run first in the
// agent's mount namespace (after /etc is made private).
func startAgentSh(t *testing.T, ns *nstest.NS, sh0, resolv string, args ...string) *agent {
	t.Helper()
	return startAgentWith(t, ns, "", sh0, resolv, args...)
}

// startAgentWith is startAgentSh with the agent run through this test
// binary as a wrapper (see wrapped) when wrap is not "".
func startAgentWith(t *testing.T, ns *nstest.NS, wrap, sh0, resolv string, args ...string) *agent {
	t.Helper()
	console := filepath.Join(t.TempDir(), "console")
	if err := os.WriteFile(console, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	// $1 is the agent, $2 resolv.conf's contents, the rest its args.
	script := `set -e
mount -t tmpfs none /etc
` + sh0 + `
if [ "$2" != "` + noResolvConf + `" ]; then printf '%s' "$2" >/etc/resolv.conf; fi
agent=$1; shift 2
exec "$agent" "$@"`
	sh := []string{"--mount", "--propagation", "private", "sh", "-c", script, "sh", agentBin, resolv}
	sh = append(sh, append([]string{"-console", console}, args...)...)
	a := &agent{t: t, ns: ns, console: console, done: make(chan struct{})}
	a.cmd = ns.Command(context.Background(), "unshare", sh...)
	if wrap != "" {
		sh[7] = os.Args[0]
		a.cmd = ns.Command(context.Background(), "unshare", sh...)
		a.cmd.Env = append(os.Environ(), wrapEnv+"="+wrap, wrapExecEnv+"="+agentBin)
	}
	var stderr bytes.Buffer
	a.cmd.Stderr = &stderr
	if err := a.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		a.err = a.cmd.Wait()
		if stderr.Len() > 0 {
			t.Logf("agent's stderr: %s", stderr.String())
		}
		close(a.done)
	}()
	t.Cleanup(func() {
		select {
		case <-a.done:
		default:
			_ = a.cmd.Process.Kill()
			<-a.done
			t.Logf("agent killed at the end of the test; console:\n%s", a.log())
		}
	})
	return a
}

// etc is the agent's /etc as the test sees it.
func (a *agent) etc() string { return "/proc/" + strconv.Itoa(a.cmd.Process.Pid) + "/root/etc" }

// setResolv replaces the agent's /etc/resolv.conf as a DHCP client does:
// a new file renamed over it. It returns how many lines the console had
// before, for waitLineAfter.
func (a *agent) setResolv(s string) int {
	a.t.Helper()
	n := len(a.lines())
	tmp := filepath.Join(a.etc(), ".resolv.conf.tmp")
	if err := os.WriteFile(tmp, []byte(s), 0o644); err != nil {
		a.t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(a.etc(), "resolv.conf")); err != nil {
		a.t.Fatal(err)
	}
	return n
}

func (a *agent) log() string {
	b, err := os.ReadFile(a.console)
	if err != nil {
		a.t.Fatal(err)
	}
	return string(b)
}

func (a *agent) lines() []string { return strings.Split(strings.TrimSuffix(a.log(), "\n"), "\n") }

// waitLine waits until the console has line, the whole line; it fails
// the test if the agent exits first.
func (a *agent) waitLine(line string) {
	a.t.Helper()
	a.waitLineAfter(0, line)
}

// waitLineAfter waits for line among the console's lines after the first
// n (a line that comes again after a change must not be taken for the one
// before it).
func (a *agent) waitLineAfter(n int, line string) {
	a.t.Helper()
	end := deadline(a.t)
	for {
		sc := bufio.NewScanner(strings.NewReader(a.log()))
		for i := 0; sc.Scan(); i++ {
			if i >= n && sc.Text() == line {
				return
			}
		}
		select {
		case <-a.done:
			a.t.Fatalf("agent exited (%v) before logging %q; console:\n%s", a.err, line, a.log())
		default:
		}
		if time.Now().After(end) {
			a.t.Fatalf("no line %q on the console in time; console:\n%s", line, a.log())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// linesSince returns the console's lines after the first n.
func (a *agent) linesSince(n int) []string { return a.lines()[n:] }

// dnsPort is the port of the agent's DNS forwarder, from its console.
func (a *agent) dnsPort() string {
	a.t.Helper()
	const pre, post = "spectrum-router: DNS forwarder on port ", ", UDP and TCP"
	for _, l := range a.lines() {
		if p, ok := strings.CutPrefix(l, pre); ok {
			if p, ok = strings.CutSuffix(p, post); ok {
				return p
			}
		}
	}
	a.t.Fatalf("no line %q on the console; console:\n%s", pre+"N"+post, a.log())
	return ""
}

// stop sends SIGTERM and returns the exit status.
func (a *agent) stop() int {
	a.t.Helper()
	if err := a.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		a.t.Fatal(err)
	}
	select {
	case <-a.done:
	case <-time.After(30 * time.Second):
		a.t.Fatalf("agent did not end within 30 s of SIGTERM; console:\n%s", a.log())
	}
	var ee *exec.ExitError
	switch {
	case a.err == nil:
		return 0
	case errors.As(a.err, &ee):
		return ee.ExitCode()
	}
	a.t.Fatalf("agent: %v", a.err)
	return -1
}

// kill ends the agent with SIGKILL, as a crash would: it cleans up
// nothing.
func (a *agent) kill() {
	a.t.Helper()
	_ = a.cmd.Process.Kill()
	<-a.done
}

// ruleset is the router's tables as nft -j shows them, in comparable
// form: the names of the limits table's sets and chains (and its rules'
// chains) start with "limits:".
type ruleset struct {
	Tables []string // those there, of spectrum-router and spectrum-router-limits
	Sets   map[string]nftSet
	Chains map[string]nftChain
	Rules  []nftRule
}

// limitsPrefix starts the names of the limits table's objects in a ruleset.
const limitsPrefix = "limits:"

type nftSet struct {
	Type  string   // "iface_index", or "iface_index . ipv4_addr"
	Elems []string // sorted; a concatenation as "eth1 . 100.64.18.52"
}

type nftChain struct {
	Type, Hook, Policy string
	Prio               int
}

type nftRule struct {
	Chain, Comment string
	Expr           string // the expressions in a text form (render)
}

// readRuleset reads the router's tables with nft -j in ns; ok is false
// when there is no main table.
func readRuleset(t *testing.T, ns *nstest.NS) (rs ruleset, ok bool) {
	t.Helper()
	out, err := ns.Command(context.Background(), "nft", "-j", "list", "ruleset").Output()
	if err != nil {
		t.Fatalf("nft -j list ruleset: %v", err)
	}
	rs = readTableJSON(t, out, "spectrum-router", "spectrum-router-limits")
	return rs, slices.Contains(rs.Tables, "spectrum-router")
}

// readTableJSON is the tables named among nft -j's output out, in
// comparable form (the limits table's objects prefixed, limitsPrefix).
func readTableJSON(t *testing.T, out []byte, tables ...string) (rs ruleset) {
	t.Helper()
	var doc struct {
		Nftables []map[string]json.RawMessage `json:"nftables"`
	}
	if err := json.Unmarshal(out, &doc); err != nil {
		t.Fatalf("nft -j: %v\n%s", err, out)
	}
	rs = ruleset{Tables: []string{}, Sets: map[string]nftSet{}, Chains: map[string]nftChain{}}
	var limits []nftRule
	for _, o := range doc.Nftables {
		for kind, raw := range o {
			var obj struct {
				Family, Table, Name, Chain, Comment string
				Type                                json.RawMessage
				Hook, Policy                        string
				Prio                                int
				Elem                                []json.RawMessage
				Expr                                []json.RawMessage
			}
			if err := json.Unmarshal(raw, &obj); err != nil {
				t.Fatalf("nft -j %s: %v", kind, err)
			}
			tbl := obj.Table
			if kind == "table" {
				tbl = obj.Name
			}
			if kind == "metainfo" || obj.Family != "inet" || !slices.Contains(tables, tbl) {
				continue
			}
			if tbl == "spectrum-router-limits" {
				obj.Name, obj.Chain = limitsPrefix+obj.Name, limitsPrefix+obj.Chain
			}
			switch kind {
			case "table":
				rs.Tables = append(rs.Tables, tbl)
			case "set":
				var s nftSet
				var types []string
				if json.Unmarshal(obj.Type, &s.Type) != nil {
					if err := json.Unmarshal(obj.Type, &types); err != nil {
						t.Fatalf("set %s type %s", obj.Name, obj.Type)
					}
					s.Type = strings.Join(types, " . ")
				}
				s.Elems = []string{}
				for _, e := range obj.Elem {
					s.Elems = append(s.Elems, render(e))
				}
				slices.Sort(s.Elems)
				rs.Sets[obj.Name] = s
			case "chain":
				var typ string
				_ = json.Unmarshal(obj.Type, &typ)
				rs.Chains[obj.Name] = nftChain{Type: typ, Hook: obj.Hook, Policy: obj.Policy, Prio: obj.Prio}
			case "rule":
				parts := make([]string, len(obj.Expr))
				for i, e := range obj.Expr {
					parts[i] = render(e)
				}
				r := nftRule{Chain: obj.Chain, Comment: obj.Comment, Expr: strings.Join(parts, " ")}
				if tbl != "spectrum-router-limits" {
					rs.Rules = append(rs.Rules, r)
				} else {
					limits = append(limits, r) // after the main table's, whichever nft lists first
				}
			}
		}
	}
	rs.Rules = append(rs.Rules, limits...)
	slices.Sort(rs.Tables)
	return rs
}

// render is nft's JSON for an expression or statement in a text form
// close to nft's own ("meta iif @links", "ip saddr != @clients", "dnat ip
// to 192.0.2.53"); anything it does not know stays JSON, so nothing
// unexpected can pass unseen.
func render(raw json.RawMessage) string {
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		return string(raw)
	}
	return renderValue(v)
}

func renderValue(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case float64:
		return strconv.FormatFloat(x, 'f', -1, 64)
	case []any:
		parts := make([]string, len(x))
		for i, e := range x {
			parts[i] = renderValue(e)
		}
		return strings.Join(parts, ",")
	case map[string]any:
		if len(x) == 1 {
			for k, val := range x {
				m, _ := val.(map[string]any)
				switch k {
				case "match":
					op := m["op"].(string)
					s := renderValue(m["left"])
					if op != "==" && op != "in" {
						s += " " + op
					}
					return s + " " + renderValue(m["right"])
				case "&", "|", "^":
					ops := val.([]any)
					return renderValue(ops[0]) + " " + k + " " + renderValue(ops[1])
				case "meta":
					return "meta " + m["key"].(string)
				case "ct":
					return "ct " + m["key"].(string)
				case "payload":
					return m["protocol"].(string) + " " + m["field"].(string)
				case "concat":
					parts := make([]string, 0)
					for _, e := range val.([]any) {
						parts = append(parts, renderValue(e))
					}
					return strings.Join(parts, " . ")
				case "prefix":
					return renderValue(m["addr"]) + "/" + renderValue(m["len"])
				case "drop", "accept", "masquerade", "return":
					if val == nil {
						return k
					}
				case "jump":
					return "jump " + m["target"].(string)
				case "reject":
					if e, ok := m["expr"].(string); ok {
						return "reject with " + m["type"].(string) + " " + e
					}
					return "reject with " + m["type"].(string)
				case "set":
					if m != nil { // add @set { key stmt }
						return m["op"].(string) + " " + m["set"].(string) + " {" + renderValue(m["elem"]) + " " + renderValue(m["stmt"]) + "}"
					}
					return "{" + renderValue(val) + "}"
				case "ct count":
					if m["inv"] == true {
						return "ct count over " + renderValue(m["val"])
					}
					return "ct count " + renderValue(m["val"])
				case "limit":
					over := ""
					if m["inv"] == true {
						over = "over "
					}
					return "limit rate " + over + renderValue(m["rate"]) + "/" + renderValue(m["per"]) + " burst " + renderValue(m["burst"]) + " packets"
				case "mangle":
					return renderValue(m["key"]) + " set " + renderValue(m["value"])
				case "dnat":
					return "dnat " + m["family"].(string) + " to " + m["addr"].(string)
				case "redirect":
					return "redirect to :" + renderValue(m["port"])
				case "tcp option":
					return "tcp option " + m["name"].(string) + " " + m["field"].(string)
				case "rt":
					return "rt " + m["key"].(string)
				}
			}
		}
	}
	b, _ := json.Marshal(v)
	return string(b)
}

// wantRuleset is the table for the provider NICs in clients (name →
// client address), the DNS forwarder on port dnsPort, and forwarding as
// it was before, net.ipv4.ip_forward and net.ipv6.conf.all.forwarding
// both ("0" or "1"). The rules written once
// per link come in the NICs' ifindex order, which the test does not know:
// checkRuleset compares them as sets (sortLinkRules).
func wantRuleset(clients map[string]string, dnsPort, forwardWas string) ruleset {
	names := slices.Sorted(maps.Keys(clients))
	set := func(typ string, elem func(name string) string) nftSet {
		s := nftSet{Type: typ, Elems: []string{}}
		for _, n := range names {
			s.Elems = append(s.Elems, elem(n))
		}
		slices.Sort(s.Elems)
		return s
	}
	rs := ruleset{
		Tables: []string{"spectrum-router", "spectrum-router-limits"},
		Sets: map[string]nftSet{
			"links":   set("iface_index", func(n string) string { return n }),
			"clients": set("iface_index . ipv4_addr", func(n string) string { return n + " . " + clients[n] }),
			"gateways": set("iface_index . ipv4_addr", func(n string) string {
				return n + " . 169.254." + strings.SplitN(clients[n], ".", 3)[2]
			}),
			"client-addrs":         set("ipv4_addr", func(n string) string { return clients[n] }),
			limitsPrefix + "links": set("iface_index", func(n string) string { return n }),
			"clients6":             set("iface_index . ipv6_addr", func(n string) string { return n + " . " + link6(clients[n], 2) }),
			"gateways6": func() nftSet {
				s := set("iface_index . ipv6_addr", func(n string) string { return n + " . " + link6(clients[n], 1) })
				for _, n := range names {
					s.Elems = append(s.Elems, n+" . fe80::1")
				}
				slices.Sort(s.Elems)
				return s
			}(),
			"client-addrs6": set("ipv6_addr", func(n string) string { return link6(clients[n], 2) }),
			// Dynamic: each link enters them with its first new
			// connection (checkRuleset leaves their elements out).
			limitsPrefix + "link-rate":  {Type: "iface_index", Elems: []string{}},
			limitsPrefix + "link-conns": {Type: "iface_index", Elems: []string{}},
			limitsPrefix + "link-dns":   {Type: "iface_index . inet_proto", Elems: []string{}},
		},
		Chains: map[string]nftChain{
			"prerouting":                        {Type: "nat", Hook: "prerouting", Policy: "accept", Prio: -100},
			"client-dns":                        {},
			"dns-input":                         {Type: "filter", Hook: "input", Policy: "accept", Prio: -10},
			"guard":                             {Type: "filter", Hook: "prerouting", Policy: "accept", Prio: -150},
			"from-link":                         {},
			"output":                            {Type: "filter", Hook: "output", Policy: "accept", Prio: 0},
			"input":                             {Type: "filter", Hook: "input", Policy: "accept", Prio: 0},
			"to-provider":                       {},
			"client-dns-in":                     {},
			"forward":                           {Type: "filter", Hook: "forward", Policy: "accept", Prio: 0},
			"from-client":                       {},
			"to-client":                         {},
			"postrouting":                       {Type: "nat", Hook: "postrouting", Policy: "accept", Prio: 100},
			"leak":                              {Type: "filter", Hook: "postrouting", Policy: "accept", Prio: 110},
			"ip_forward-was-" + forwardWas:      {},
			"ipv6_forwarding-was-" + forwardWas: {},
			limitsPrefix + "guard":              {Type: "filter", Hook: "prerouting", Policy: "accept", Prio: -149},
			limitsPrefix + "from-link":          {},
			limitsPrefix + "dns-input":          {Type: "filter", Hook: "input", Policy: "accept", Prio: -9},
		},
	}
	add := func(chain, comment, expr string) { rs.Rules = append(rs.Rules, nftRule{chain, comment, expr}) }
	add("prerouting", "DNS from a client", "meta iif . ip saddr @clients jump client-dns")
	add("prerouting", "DNS from a client", "meta iif . ip6 saddr @clients6 jump client-dns")
	for _, a := range []string{"ip daddr 100.127.255.53", "ip6 daddr fd9f:2b8:5010::53"} {
		for _, p := range []string{"udp", "tcp"} {
			add("client-dns", "DNS to the virtual resolver goes to this provider's forwarder",
				a+" "+p+" dport 53 redirect to :"+dnsPort)
		}
	}
	for _, p := range []string{"udp", "tcp"} {
		add("dns-input", "nothing reaches the forwarder but DNS redirected from a client", p+" dport "+dnsPort+" ct status ! dnat drop")
	}
	add("guard", "from a provider link", "meta iif @links jump from-link")
	add("from-link", "invalid packets go nowhere (nor un-NATed to the uplink)", "ct state invalid drop")
	add("from-link", "from a provider link only its client's address", "meta iif . ip saddr != @clients drop")
	add("from-link", "from a provider link only its client's address", "ip6 saddr != fe80::/10 ip6 saddr != :: meta iif . ip6 saddr != @clients6 drop")
	add("from-link", "a link-local source only to its link", "ip6 saddr fe80::/10 ip6 daddr != fe80::/10 ip6 daddr != ff02::/16 drop")
	add("from-link", "the unspecified source only to its link's multicast (DAD, MLD)", "ip6 saddr :: ip6 daddr != ff02::/16 drop")
	add("from-link", "a connection from a provider link carries its ifindex", "ct state new ct mark set meta iif")
	add("from-link", "ICMP errors only about its own client's connections", "ct state related meta iif . ct mark != @link-marks drop")
	add("output", "the provider's own connection to a client carries the link's ifindex", "meta oif @links ct state new ct mark set meta oif")
	add("input", "from a provider link", "meta iif @links jump to-provider")
	add("to-provider", "no client redirects the provider's routes", "icmp type redirect drop")
	add("to-provider", "no client is the provider's IPv6 router", "icmpv6 type {nd-router-solicit,nd-router-advert,nd-redirect} drop")
	add("to-provider", "no client is the provider's DHCP server", "udp dport {67,68,546,547} drop")
	add("to-provider", "replies to the provider's own connections", "ct state established,related accept")
	add("to-provider", "neighbour discovery", "icmpv6 type {nd-neighbor-solicit,nd-neighbor-advert} accept")
	add("to-provider", "DNS to the provider", "jump client-dns-in")
	add("to-provider", "echo to the link's own gateway", "meta iif . ip daddr @gateways icmp type echo-request accept")
	add("to-provider", "echo to the link's own gateway", "meta iif . ip6 daddr @gateways6 icmpv6 type echo-request accept")
	add("to-provider", "nothing else of the provider: refused at once", "ip protocol tcp reject with tcp reset")
	add("to-provider", "nothing else of the provider: refused at once", "ip6 saddr != fe80::/10 meta l4proto tcp reject with tcp reset")
	add("to-provider", "nothing else of the provider: refused at once", "reject with icmpx port-unreachable")
	for _, p := range []string{"udp", "tcp"} {
		add("client-dns-in", "DNS to the virtual resolver, redirected to the forwarder", p+" dport "+dnsPort+" ct status dnat accept")
	}
	const ll = "link-local addresses are never forwarded (RFC 3927, RFC 4291)"
	add("forward", ll, "ip daddr 169.254.0.0/16 drop")
	add("forward", ll, "ip saddr 169.254.0.0/16 drop")
	add("forward", ll, "ip6 daddr fe80::/10 drop")
	add("forward", ll, "ip6 saddr fe80::/10 drop")
	for _, a := range []string{"ip saddr 100.64.0.0/16", "ip daddr 100.64.0.0/16", "ip6 saddr fd9f:2b8:5010::/48", "ip6 daddr fd9f:2b8:5010::/48"} {
		add("forward", "seen by this table: the guard table passes it", a+" meta mark set meta mark | 268435456")
	}
	add("forward", "from a provider link", "meta iif @links jump from-client")
	add("forward", "to a provider link", "meta oif @links jump to-client")
	add("from-client", "no client reaches another", "meta oif @links drop")
	add("from-client", "only DNS to the virtual resolver, which never gets here",
		"ip daddr 100.127.255.53 reject with icmpx port-unreachable")
	add("from-client", "the links' prefix ends here (the IPv6 virtual resolver: DNS never gets here)",
		"ip6 daddr fd9f:2b8:5010::/48 reject with icmpx port-unreachable")
	add("from-client", "a SYN's MSS no more than the route out carries", "tcp flags syn tcp option maxseg size set rt mtu")
	add("from-client", "clients reach everything else", "accept")
	add("to-client", "replies reach clients", "ct state established,related accept")
	add("to-client", "nothing else reaches a client", "drop")
	add("postrouting", "traffic to a client keeps its source", "meta oif @links return")
	add("postrouting", "clients leave with this provider's address", "ip saddr 100.64.0.0/16 masquerade")
	add("postrouting", "clients leave with this provider's address", "ip6 saddr fd9f:2b8:5010::/48 masquerade")
	add("leak", "no client's address leaves un-NATed", "meta oif != @links ip saddr @client-addrs drop")
	add("leak", "no client's address leaves un-NATed", "meta oif != @links ip6 saddr @client-addrs6 drop")
	add("leak", "no link's own address leaves (masquerade's pick while the uplink has none)", "meta oif != @links ip6 saddr & ffff:ffff:ffff:0:ffff:ffff:ffff:ffff fd9f:2b8:5010::1 drop")
	const lim = limitsPrefix
	add(lim+"guard", "from a provider link", "meta iif @links jump from-link")
	add(lim+"from-link", "new connections a second, per link", "ct state new add @link-rate {meta iif limit rate over 1000/second burst 2000 packets} drop")
	add(lim+"from-link", "conntrack entries, per link", "ct state new add @link-conns {meta iif ct count over "+strconv.Itoa(linkEntries())+"} drop")
	for _, p := range []string{"udp", "tcp"} {
		add(lim+"dns-input", "a client's share of the forwarder",
			"meta iif @links "+p+" dport "+dnsPort+" add @link-dns {meta iif . meta l4proto limit rate over 200/second burst 400 packets} drop")
	}
	return rs
}

// link6 is host's address (1 the provider's, 2 the client's) in the IPv6
// /64 of the link whose client is 100.64.A.B: fd9f:2b8:5010:AB::host.
func link6(client string, host byte) string {
	a := netip.MustParseAddr(client).As4()
	b := mac.LinkID(uint16(a[2])<<8 | uint16(a[3])).LinkPrefix().Addr().As16()
	b[15] = host
	return netip.AddrFrom16(b).String()
}

// linkEntries is the conntrack entries a link may hold, as docs/DESIGN.md
// says: a quarter of nf_conntrack_max, at least 256 and at most 16384.
func linkEntries() int {
	b, err := os.ReadFile("/proc/sys/net/netfilter/nf_conntrack_max")
	if err != nil {
		panic(err)
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		panic(err)
	}
	return min(max(n/4, 256), 16384)
}

// limitsLine is the router's console line saying the per-link limits.
func limitsLine() string {
	return "spectrum-router: per-link limits (table inet spectrum-router-limits): " + strconv.Itoa(linkEntries()) +
		" conntrack entries, 1000 new connections a second (burst 2000), 200 DNS packets a second (burst 400) per protocol"
}

// sortLinkRules sorts each run of rules that differ only in their link
// (the same chain and comment), so that two rulesets compare whatever the
// NICs' ifindexes.
func sortLinkRules(rules []nftRule) {
	for i := 0; i < len(rules); {
		j := i + 1
		for j < len(rules) && rules[j].Chain == rules[i].Chain && rules[j].Comment == rules[i].Comment {
			j++
		}
		slices.SortFunc(rules[i:j], func(a, b nftRule) int { return strings.Compare(a.Expr, b.Expr) })
		i = j
	}
}

// conntrackEntries lists ns's conntrack entries with the conntrack tool,
// one line each, for the addresses given (-s or -d): IPv4's, or IPv6's
// when an address is.
func conntrackEntries(t *testing.T, ns *nstest.NS, args ...string) []string {
	t.Helper()
	fam := "ipv4"
	for _, a := range args {
		if strings.Contains(a, ":") {
			fam = "ipv6"
		}
	}
	out, err := ns.Command(context.Background(), "conntrack", append([]string{"-L", "-f", fam}, args...)...).Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			t.Fatalf("conntrack -L %v: %v\n%s", args, err, ee.Stderr)
		}
		t.Fatal(err)
	}
	var lines []string
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if l != "" {
			lines = append(lines, l)
		}
	}
	return lines
}

// addConntrack creates a UDP conntrack entry src:1234 -> dst:53 in ns with
// the conntrack tool, and its further options (--mark M).
func addConntrack(t *testing.T, ns *nstest.NS, src, dst string, opts ...string) {
	t.Helper()
	out, err := ns.Command(context.Background(), "conntrack", append([]string{"-I", "-p", "udp", "-s", src, "-d", dst,
		"--sport", "1234", "--dport", "53", "--timeout", "600"}, opts...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("conntrack -I %s -> %s: %v\n%s", src, dst, err, out)
	}
}

// sysctl sets a sysctl in ns.
func sysctl(t *testing.T, ns *nstest.NS, kv string) {
	t.Helper()
	if out, err := ns.Command(context.Background(), "sysctl", "-qw", kv).CombinedOutput(); err != nil {
		t.Fatalf("sysctl -w %s: %v\n%s", kv, err, out)
	}
}

// inNS runs f on a thread in the namespace ns: sockets f creates belong
// to it for good, whichever thread uses them later.
func inNS(t *testing.T, ns *nstest.NS, f func()) {
	t.Helper()
	fd, err := unix.Open(ns.Path(), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	self, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(self)
	done := make(chan error)
	go func() {
		runtime.LockOSThread()
		if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			done <- err
			return
		}
		f()
		if err := unix.Setns(self, unix.CLONE_NEWNET); err != nil {
			// Leave the thread locked: it dies with this goroutine
			// rather than carry the namespace to other code.
			done <- err
			return
		}
		runtime.UnlockOSThread()
		done <- nil
	}()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// link is the ifindex of a link in ns.
func link(t *testing.T, ns *nstest.NS, name string) int {
	t.Helper()
	var ls []struct {
		Index int `json:"ifindex"`
	}
	if err := json.Unmarshal(ns.IP("-j", "link", "show", "dev", name), &ls); err != nil || len(ls) != 1 {
		t.Fatalf("ip link show %s: %v", name, err)
	}
	return ls[0].Index
}

func itoa(i int) string { return strconv.Itoa(i) }
