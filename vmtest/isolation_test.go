package vmtest

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"spectrum-os.org/netcfg/internal/mac"
	"spectrum-os.org/netcfg/vmtest/vm"
)

// TestOneProviderThreeClients runs one provider and three clients under
// spectrumd: each client gets its own address, clients cannot reach each
// other, and a datagram a client forges with another client's source
// address is dropped by the provider (strict reverse-path filtering on the
// provider's NIC).
func TestOneProviderThreeClients(t *testing.T) {
	e := newEnv(t, 5*time.Minute)
	e.vm("netvm", nil, "spectrum.watch")
	for i := 1; i <= 3; i++ {
		e.vm(fmt.Sprintf("client%d", i), []string{"netvm"}, "")
	}
	d := e.serve()
	var ids []mac.LinkID
	for i := 1; i <= 3; i++ {
		ids = append(ids, d.LinkID(t, fmt.Sprintf("client%d", i), "netvm"))
	}
	if len(slices.Compact(slices.Sorted(slices.Values(ids)))) != 3 {
		t.Fatalf("link ids %v, want three distinct", ids)
	}
	addr := func(i int) string { return ids[i].ClientAddr().String() }
	gw := func(i int) string { return ids[i].Gateway().String() }
	ctx := e.ctx

	// The provider reaches clients 2 and 3, which only serve: so the only
	// datagrams the provider's echo server can see come from client 1.
	e.setTest("netvm", "ping:"+addr(1)+",ping:"+addr(2)+",serve")
	e.setTest("client2", "serve")
	e.setTest("client3", "serve")
	// Client 1 starts once the others answer, so its probes of them mean
	// something.
	e.setTest("client1", fmt.Sprintf("ping:%s,noping:%s,noping:%s,spoof:%s>%s,serve", gw(0), addr(1), addr(2), addr(1), gw(0)))
	procs := []*vm.Proc{nil, d.Start(t, "client2"), d.Start(t, "client3")}
	netvm := d.Proc("netvm")
	for i := 1; i <= 2; i++ {
		for _, proto := range []string{"icmp", "udp"} {
			netvm.Wait(t, ctx, "ping "+addr(i)+" "+proto+" ok")
		}
	}
	procs[0] = d.Start(t, "client1")
	c1 := procs[0]

	for i, p := range procs {
		p.Wait(t, ctx, "state done n=1 ")
		st, _ := p.Serial.State(1)
		nic := nicIn(t, p, st, ids[i].MAC(mac.Client).String())
		if got, want := filter(st, "addr "+nic), []string{"addr " + nic + " " + ids[i].ClientPrefix().String()}; !slices.Equal(got, want) {
			t.Errorf("%s addresses %q, want %q", p.Name, got, want)
		}
	}
	st, err := netvm.Serial.WaitState(ctx, func(st []string) bool { return len(filter(st, "addr eth")) == 3 })
	if err != nil {
		t.Fatalf("netvm: not three addresses: %v", err)
	}
	for i := range ids {
		nic := nicIn(t, netvm, st, ids[i].MAC(mac.Provider).String())
		if got, want := filter(st, "addr "+nic+" "), []string{"addr " + nic + " " + gw(i) + "/32"}; !slices.Equal(got, want) {
			t.Errorf("netvm addresses on %s %q, want %q", nic, got, want)
		}
	}

	c1.Wait(t, ctx, "ping "+gw(0)+" udp ok")
	for _, other := range []string{addr(1), addr(2)} {
		l := c1.Wait(t, ctx, "noping "+other, "fail noping "+other)
		if e, _ := vm.Event(l.Text); strings.HasPrefix(e, "fail") {
			t.Errorf("client1 reached another client: %s", e)
		}
	}
	l := c1.Wait(t, ctx, "spoof ", "fail spoof")
	if e, _ := vm.Event(l.Text); vm.Field(e, "barrier") != "ok" {
		t.Fatalf("client1: %s", e)
	}
	// The barrier datagram followed the forged ones on the same path:
	// once netvm's echo server has reported it, it had read (and
	// reported) any forged datagram that got through.
	netvm.Wait(t, ctx, "barrier spoof-"+addr(1)+" from "+addr(0)+" ")
	if got := netvm.Serial.Events("echo from " + addr(1) + " "); len(got) != 0 {
		t.Errorf("netvm accepted datagrams forged with client2's address: %q", got)
	}
	if got := netvm.Serial.Events("echo from " + addr(0) + " "); len(got) != 1 {
		t.Errorf("netvm echo server never heard client1's genuine datagrams (control): %q", got)
	}
}
