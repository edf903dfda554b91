package vmtest

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"spectrum-os.org/netcfg/internal/mac"
	"spectrum-os.org/netcfg/internal/nstest"
	"spectrum-os.org/netcfg/vmtest/vm"
)

// spectrumdBin is cmd/spectrumd built once for the whole package.
var spectrumdBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "vmtest-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	spectrumdBin, err = vm.BuildSpectrumd(dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// env is one test's world: the guest assets, its own network namespace, a
// data directory with the VM directories and a state directory that
// outlives a spectrumd restart.
type env struct {
	t           testing.TB
	a           *vm.Assets
	ns          *nstest.NS
	ctx         context.Context
	data, state string
	specs       map[string]vm.Spec
}

func newEnv(t testing.TB, d time.Duration) *env {
	t.Helper()
	k := vm.Require(t)
	e := &env{t: t, a: vm.BuildAssets(t, k), ns: nstest.New(t), ctx: vm.Context(t, d),
		data: t.TempDir(), state: t.TempDir(), specs: map[string]vm.Spec{}}
	return e
}

// vm writes a VM directory. Its steps come later, from setTest, once the
// link ids are known.
func (e *env) vm(name string, providers []string, cmdline string) {
	e.t.Helper()
	s := vm.Spec{Name: name, Providers: providers, Cmdline: cmdline}
	if _, err := vm.WriteDir(e.data, s, e.a); err != nil {
		e.t.Fatal(err)
	}
	e.specs[name] = s
}

// setTest rewrites name's cmdline with the test init's steps.
func (e *env) setTest(name, test string) {
	e.t.Helper()
	s := e.specs[name]
	s.Test = test
	if err := vm.WriteCmdline(e.data+"/"+name, s); err != nil {
		e.t.Fatal(err)
	}
	e.specs[name] = s
}

func (e *env) serve() *vm.Spectrumd {
	e.t.Helper()
	return vm.Serve(e.t, e.ns, spectrumdBin, e.data, e.state)
}

// waitState waits until one of p's state dumps holds every line of want
// (the agent may configure a hot-plugged NIC after the first dump) and
// returns that dump.
func waitState(t testing.TB, ctx context.Context, p *vm.Proc, want ...string) []string {
	t.Helper()
	st, err := p.Serial.WaitState(ctx, func(st []string) bool {
		for _, w := range want {
			if !slices.Contains(st, w) {
				return false
			}
		}
		return true
	})
	if err != nil {
		t.Fatalf("%s: state never held %q: %v", p.Name, want, err)
	}
	return st
}

// nicIn returns the name of the NIC with MAC hw in a state dump.
func nicIn(t testing.TB, p *vm.Proc, st []string, hw string) string {
	t.Helper()
	for _, e := range st {
		if strings.HasPrefix(e, "link ") && vm.Field(e, "mac") == hw {
			return strings.Fields(e)[1]
		}
	}
	t.Fatalf("%s: no NIC with MAC %s in %q", p.Name, hw, st)
	return ""
}

// filter returns the lines of st that start with prefix, sorted.
func filter(st []string, prefix string) []string {
	var out []string
	for _, e := range st {
		if strings.HasPrefix(e, prefix) {
			out = append(out, e)
		}
	}
	slices.Sort(out)
	return out
}

// watchedPair is the documented pair under spectrumd, each guest probing
// the other every second (pingwatch), so a path that goes and comes back
// shows in the log of the VM that was not restarted.
type watchedPair struct {
	d        *vm.Spectrumd
	id       mac.LinkID
	gw, addr string // the link's gateway (netvm) and client address (appvm-lynx)
}

// newWatchedPair writes netvm and appvm-lynx (providers/net/netvm), starts
// spectrumd, and writes their probes once the link has its id.
func newWatchedPair(e *env) *watchedPair {
	e.t.Helper()
	e.vm("netvm", nil, "spectrum.watch")
	e.vm("appvm-lynx", []string{"netvm"}, "")
	d := e.serve()
	id := d.LinkID(e.t, "appvm-lynx", "netvm")
	p := &watchedPair{d: d, id: id, gw: id.Gateway().String(), addr: id.ClientAddr().String()}
	e.setTest("netvm", "pingwatch:"+p.addr+",serve")
	e.setTest("appvm-lynx", "pingwatch:"+p.gw+",serve")
	return p
}
