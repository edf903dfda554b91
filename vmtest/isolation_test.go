package vmtest

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"spectrum/internal/mac"
	"spectrum/internal/nstest"
	"spectrum/vmtest/vm"
)

// TestOneProviderThreeClients wires one provider to three clients by hand:
// each client gets its own address, clients cannot reach each other, and a
// datagram a client forges with another client's source address is dropped
// by the provider (strict reverse-path filtering on the provider's NIC).
func TestOneProviderThreeClients(t *testing.T) {
	k := vm.Require(t)
	a := vm.BuildAssets(t, k)
	ns := nstest.New(t)
	ctx := vm.Context(t, 4*time.Minute)
	data, run := t.TempDir(), t.TempDir()

	ids := []mac.LinkID{0x0001, 0x0002, 0x0003}
	var clients, providers []vm.NIC
	for _, id := range ids {
		c, p := vm.AddLink(ns, id)
		clients, providers = append(clients, c), append(providers, p)
	}
	addr := func(i int) string { return ids[i].ClientAddr().String() }
	gw := func(i int) string { return ids[i].Gateway().String() }

	// The provider reaches clients 2 and 3, which only serve: so the only
	// datagrams the provider's echo server can see come from client 1.
	netvm := vm.Launch(t, ns, mustDir(t, data, vm.Spec{Name: "netvm",
		Test: "ping:" + addr(1) + ",ping:" + addr(2) + ",serve"}, a), run, providers)
	var procs []*vm.Proc
	for i := 1; i <= 2; i++ {
		procs = append(procs, vm.Launch(t, ns, mustDir(t, data, vm.Spec{
			Name: fmt.Sprintf("client%d", i+1), Providers: []string{"netvm"}, Test: "serve"}, a), run, clients[i:i+1]))
	}
	for i := 1; i <= 2; i++ {
		for _, proto := range []string{"icmp", "udp"} {
			netvm.Wait(t, ctx, "ping "+addr(i)+" "+proto+" ok")
		}
	}
	// Client 1 starts once the others answer, so its probes of them mean
	// something.
	c1 := vm.Launch(t, ns, mustDir(t, data, vm.Spec{Name: "client1", Providers: []string{"netvm"},
		Test: fmt.Sprintf("ping:%s,noping:%s,noping:%s,spoof:%s>%s,serve", gw(0), addr(1), addr(2), addr(1), gw(0))}, a),
		run, clients[0:1])
	procs = append([]*vm.Proc{c1}, procs...)

	for i, p := range procs {
		p.Wait(t, ctx, "state done n=1 ")
		nic := nicName(t, p, clients[i].MAC)
		if got, want := events(p, "addr "+nic), []string{"addr " + nic + " " + ids[i].ClientPrefix().String()}; !slices.Equal(got, want) {
			t.Errorf("%s addresses %q, want %q", p.Name, got, want)
		}
	}
	netvm.Wait(t, ctx, "state done n=1 ")
	for i, n := range providers {
		nic := nicName(t, netvm, n.MAC)
		if got, want := events(netvm, "addr "+nic), []string{"addr " + nic + " " + gw(i) + "/32"}; !slices.Equal(got, want) {
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
	// The barrier echo was answered after any forged datagram that got
	// through was reported; give the provider's console a moment to reach
	// the host.
	time.Sleep(2 * time.Second)
	if got := netvm.Serial.Events("echo from " + addr(1) + " "); len(got) != 0 {
		t.Errorf("netvm accepted datagrams forged with client2's address: %q", got)
	}
	if got := netvm.Serial.Events("echo from " + addr(0) + " "); len(got) != 1 {
		t.Errorf("netvm echo server never heard client1's genuine datagrams (control): %q", got)
	}
}
