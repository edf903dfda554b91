package vm

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/digitalocean/go-qemu/qmp"
)

// PlugNIC hot-plugs nic into the running VM through QMP (netdev_add of its
// tap, then device_add of a virtio-net-pci with its MAC), the way spectrumd
// plugs a provider's NIC when a client starts after its provider. id names
// the netdev and the device in QEMU.
func (p *Proc) PlugNIC(t testing.TB, id string, nic NIC) {
	t.Helper()
	mon := p.monitor(t)
	defer mon.Disconnect()
	for _, cmd := range []map[string]any{
		{"execute": "netdev_add", "arguments": map[string]any{
			"type": "tap", "id": id, "ifname": nic.Tap, "script": "no", "downscript": "no"}},
		{"execute": "device_add", "arguments": map[string]any{
			"driver": "virtio-net-pci", "id": "dev-" + id, "netdev": id, "mac": nic.MAC, "romfile": ""}},
	} {
		b, _ := json.Marshal(cmd)
		if _, err := mon.Run(b); err != nil {
			t.Fatalf("%s: QMP %s: %v", p.Name, b, err)
		}
		t.Logf("%s: QMP %s", p.Name, b)
	}
}

// monitor connects to the VM's QMP socket. QEMU creates it shortly after
// it starts, so connecting is retried for a while.
func (p *Proc) monitor(t testing.TB) *qmp.SocketMonitor {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		mon, err := qmp.NewSocketMonitor("unix", p.qmp, 5*time.Second)
		if err == nil {
			if err = mon.Connect(); err == nil {
				return mon
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: QMP %s: %v", p.Name, p.qmp, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
