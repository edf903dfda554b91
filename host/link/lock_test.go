package link

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"net"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"spectrum-os.org/netcfg/internal/mac"
	"spectrum-os.org/netcfg/internal/nstest"
)

// vnetHdrLen is the virtio-net header in front of every frame on our taps
// (IFF_VNET_HDR, the default header size).
const vnetHdrLen = 10

// sendFrame writes a broadcast frame with source src and payload into a
// tap, as the VM behind it would.
func sendFrame(t *testing.T, tap *os.File, src net.HardwareAddr, payload string) {
	t.Helper()
	f := make([]byte, vnetHdrLen, vnetHdrLen+64)
	f = append(f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff)
	f = append(f, src...)
	f = append(f, 0x88, 0xb5) // local experimental EtherType
	f = append(f, payload...)
	for len(f) < vnetHdrLen+60 {
		f = append(f, 0)
	}
	if _, err := tap.Write(f); err != nil {
		t.Fatalf("write to tap: %v", err)
	}
}

// received reads what arrives at a tap within wait and tells whether a
// frame carrying payload came.
func received(t *testing.T, tap *os.File, payload string, wait time.Duration) bool {
	t.Helper()
	fd := int(tap.Fd())
	deadline := time.Now().Add(wait)
	buf := make([]byte, 65536)
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return false
		}
		pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		n, err := unix.Poll(pfd, int(left.Milliseconds())+1)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			t.Fatalf("poll tap: %v", err)
		}
		if n == 0 {
			return false
		}
		n, err = unix.Read(fd, buf)
		if err != nil {
			t.Fatalf("read tap: %v", err)
		}
		if bytes.Contains(buf[:n], []byte(payload)) {
			return true
		}
	}
}

// TestClientCannotForgeMAC sends frames into a link from the client's side
// with its own source MAC and with forged ones (another client's, the
// provider's, any other): only the first comes out of the provider's tap,
// and the forged MACs never enter the bridge's forwarding table.
func TestClientCannotForgeMAC(t *testing.T) {
	n, ns := newNet(t)
	const id = mac.LinkID(0xa546)
	if err := n.Create(id); err != nil {
		t.Fatal(err)
	}
	client, err := n.OpenTap(id, mac.Client)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	provider, err := n.OpenTap(id, mac.Provider)
	if err != nil {
		t.Fatal(err)
	}
	defer provider.Close()
	// Frames go through once both ports forward (carrier up, no STP).
	own := id.MAC(mac.Client)
	deadline := time.Now().Add(5 * time.Second)
	for !received(t, provider, "warm-up", 100*time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("a frame with the client's own MAC never reaches the provider's tap")
		}
		sendFrame(t, client, own, "warm-up")
	}

	hw := func(s string) net.HardwareAddr { m, _ := net.ParseMAC(s); return m }
	for _, tt := range []struct {
		name string
		src  net.HardwareAddr
		pass bool
	}{
		{"own MAC", own, true},
		{"another client's MAC", mac.LinkID(0x0002).MAC(mac.Client), false},
		{"the provider's MAC", id.MAC(mac.Provider), false},
		{"a MAC of no VM", hw("02:00:00:00:00:01"), false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			payload := "spectrum-forge-test " + tt.src.String()
			sendFrame(t, client, tt.src, payload)
			if got := received(t, provider, payload, 300*time.Millisecond); got != tt.pass {
				t.Errorf("frame from %s reached the provider: %v, want %v", tt.src, got, tt.pass)
			}
		})
	}
	out, err := ns.Command(t.Context(), "bridge", "-j", "fdb", "show", "br", Name(id, Bridge)).Output()
	if err != nil {
		t.Fatal(err)
	}
	var fdb []struct {
		MAC    string `json:"mac"`
		Ifname string `json:"ifname"`
	}
	if err := json.Unmarshal(out, &fdb); err != nil {
		t.Fatal(err)
	}
	// The provider's MAC has its static entry on the provider's port.
	for _, e := range fdb {
		if e.Ifname == Name(id, ClientTap) && strings.HasPrefix(e.MAC, "0a:b3:ec:") && e.MAC != own.String() ||
			e.MAC == id.MAC(mac.Provider).String() && e.Ifname != Name(id, ProviderTap) || e.MAC == "02:00:00:00:00:01" {
			t.Errorf("forged MAC %s entered the bridge's forwarding table on %s", e.MAC, e.Ifname)
		}
	}
}

// fdbOf lists the bridge's forwarding entries of link id as "MAC dev".
func fdbOf(t *testing.T, ns *nstest.NS, id mac.LinkID) []string {
	t.Helper()
	out, err := ns.Command(t.Context(), "bridge", "-j", "fdb", "show", "br", Name(id, Bridge)).Output()
	if err != nil {
		t.Fatal(err)
	}
	var fdb []struct {
		MAC    string `json:"mac"`
		Ifname string `json:"ifname"`
	}
	if err := json.Unmarshal(out, &fdb); err != nil {
		t.Fatal(err)
	}
	var s []string
	for _, e := range fdb {
		s = append(s, e.MAC+" "+e.Ifname)
	}
	return s
}

// TestProviderCannotForgeMAC: the provider's port is locked to the
// provider's MAC too. A frame from the provider's side with the client's
// MAC used to move the client's entry onto the provider's port, cutting the
// client off; now it is dropped, the entry stays, and the client still gets
// what is sent to it.
func TestProviderCannotForgeMAC(t *testing.T) {
	n, ns := newNet(t)
	const id = mac.LinkID(0xa546)
	client, provider := openLink(t, n, id)
	own, victim := id.MAC(mac.Provider), id.MAC(mac.Client)
	hw := func(s string) net.HardwareAddr { m, _ := net.ParseMAC(s); return m }
	for _, tt := range []struct {
		name string
		src  net.HardwareAddr
		pass bool
	}{
		{"own MAC", own, true},
		{"its client's MAC", victim, false},
		{"another link's MAC", mac.LinkID(0x0002).MAC(mac.Provider), false},
		{"a MAC of no VM", hw("02:00:00:00:00:01"), false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			payload := "spectrum-forge-test " + tt.src.String()
			sendFrame(t, provider, tt.src, payload)
			if got := received(t, client, payload, 300*time.Millisecond); got != tt.pass {
				t.Errorf("frame from %s reached the client: %v, want %v", tt.src, got, tt.pass)
			}
		})
	}
	if fdb := fdbOf(t, ns, id); !slices.Contains(fdb, victim.String()+" "+Name(id, ClientTap)) {
		t.Errorf("the client's entry left its port: %v", fdb)
	}
	for _, e := range fdbOf(t, ns, id) {
		if e == victim.String()+" "+Name(id, ProviderTap) || strings.HasPrefix(e, "02:00:00:00:00:01") {
			t.Errorf("forged entry %s", e)
		}
	}
	// Unicast to the client still reaches it (not the provider's port).
	sendUnicast(t, provider, victim, own, "to-the-client")
	if !received(t, client, "to-the-client", time.Second) {
		t.Error("after the forged frame, unicast to the client does not reach it")
	}
}

// TestRandomMACsGrowNothing: 20,000 frames with random source MACs from
// each side of a link leave the bridge's forwarding table as it was.
func TestRandomMACsGrowNothing(t *testing.T) {
	n, ns := newNet(t)
	const id = mac.LinkID(0x0102)
	client, provider := openLink(t, n, id)
	before := fdbOf(t, ns, id)
	src := make(net.HardwareAddr, 6)
	for _, side := range []struct {
		name string
		tap  *os.File
	}{{"client", client}, {"provider", provider}} {
		for range 20000 {
			rand.Read(src)
			src[0] &^= 1
			sendFrame(t, side.tap, src, "flood")
		}
		if after := fdbOf(t, ns, id); len(after) != len(before) {
			t.Errorf("%d forwarding entries after 20,000 random source MACs from the %s's side, %d before", len(after), side.name, len(before))
		}
	}
}

// openLink creates link id and opens both taps, once a frame gets through.
func openLink(t *testing.T, n *Net, id mac.LinkID) (client, provider *os.File) {
	t.Helper()
	if err := n.Create(id); err != nil {
		t.Fatal(err)
	}
	var err error
	if client, err = n.OpenTap(id, mac.Client); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	if provider, err = n.OpenTap(id, mac.Provider); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { provider.Close() })
	deadline := time.Now().Add(5 * time.Second)
	for !received(t, client, "warm-up", 100*time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("a frame with the provider's own MAC never reaches the client's tap")
		}
		sendFrame(t, provider, id.MAC(mac.Provider), "warm-up")
	}
	return client, provider
}

// sendUnicast writes a frame from src to dst into a tap.
func sendUnicast(t *testing.T, tap *os.File, dst, src net.HardwareAddr, payload string) {
	t.Helper()
	f := make([]byte, vnetHdrLen, vnetHdrLen+64)
	f = append(f, dst...)
	f = append(f, src...)
	f = append(f, 0x88, 0xb5)
	f = append(f, payload...)
	for len(f) < vnetHdrLen+60 {
		f = append(f, 0)
	}
	if _, err := tap.Write(f); err != nil {
		t.Fatalf("write to tap: %v", err)
	}
}
