package link

import (
	"bytes"
	"encoding/json"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"spectrum-os.org/netcfg/internal/mac"
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
		MAC string `json:"mac"`
	}
	if err := json.Unmarshal(out, &fdb); err != nil {
		t.Fatal(err)
	}
	for _, e := range fdb {
		if strings.HasPrefix(e.MAC, "0a:b3:ec:") && e.MAC != own.String() || e.MAC == "02:00:00:00:00:01" {
			t.Errorf("forged MAC %s entered the bridge's forwarding table", e.MAC)
		}
	}
}
