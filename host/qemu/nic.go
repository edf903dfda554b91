package qemu

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"

	"spectrum-os.org/netcfg/host/qmp"
)

// NIC is a virtio-net device backed by an open tap.
type NIC struct {
	// ID names the netdev and the device in QEMU (qmp.CheckID), the same
	// name Process.UnplugNIC takes.
	ID  string
	MAC net.HardwareAddr
	// Tap is the open tap (link.Net.OpenTap); Start passes it to QEMU.
	// Args does not look at it.
	Tap *os.File
	// Vhost, under KVM, is an open /dev/vhost-net for this NIC: the
	// kernel moves its packets between the tap and the guest's queues
	// (vhost=on,vhostfd=N), instead of QEMU's own userspace backend.
	// spectrumd opens it, so QEMU needs no access to the device. nil
	// keeps QEMU's backend, the only one under TCG (vhost needs KVM's
	// eventfds).
	Vhost *os.File
}

// opt is one option of a QEMU device or netdev, in the order QEMU gets
// them. The same options become a -device/-netdev argument at start-up and
// a device_add/netdev_add command for hot-plug, so a hot-plugged NIC is
// exactly what a cold-plugged one is.
type opt struct {
	key string
	val any // string, or bool (on/off)
}

// nicNetdev is the tap netdev of NIC id whose tap descriptor is fd, and
// whose vhost-net descriptor is vhostfd ("" for none): numbers on the
// command line, getfd names over QMP.
func nicNetdev(id, fd, vhostfd string) []opt {
	o := []opt{{"type", "tap"}, {"id", id}, {"fd", fd}}
	if vhostfd != "" {
		o = append(o, opt{"vhost", true}, opt{"vhostfd", vhostfd})
	}
	return o
}

// nicDevice is the virtio-net device of n on bus; addr < 0 lets QEMU pick
// the bus's first free slot.
func nicDevice(n NIC, bus string, addr int) []opt {
	o := []opt{{"driver", "virtio-net-pci"}, {"netdev", n.ID}, {"id", n.ID}, {"mac", n.MAC.String()},
		// No iPXE option ROM: the guest never network-boots.
		{"romfile", ""}, {"bus", bus}}
	if addr >= 0 {
		o = append(o, opt{"addr", fmt.Sprintf("%#x", addr)})
	}
	return o
}

// cli renders options for the command line: the first one's value alone
// (the driver or type), then key=value, commas escaped.
func cli(o []opt) string {
	var b strings.Builder
	for i, x := range o {
		if i > 0 {
			b.WriteString("," + x.key + "=")
		}
		switch v := x.val.(type) {
		case bool:
			b.WriteString(map[bool]string{true: "on", false: "off"}[v])
		case string:
			b.WriteString(esc(v))
		}
	}
	return b.String()
}

// qmpArgs renders options as a QMP command's arguments.
func qmpArgs(o []opt) map[string]any {
	m := make(map[string]any, len(o))
	for _, x := range o {
		m[x.key] = x.val
	}
	return m
}

// slots tracks how full each of a VM's NIC bridges is.
type slots struct {
	mu     sync.Mutex
	used   []int          // NICs on each bridge
	bridge map[string]int // NIC id -> its bridge
}

func newSlots(c Config) *slots {
	s := &slots{used: make([]int, c.nicBridges()), bridge: map[string]int{}}
	for i, n := range c.NICs {
		s.used[i/BridgeSlots]++
		s.bridge[n.ID] = i / BridgeSlots
	}
	return s
}

// take reserves a slot for id on the first bridge that has one.
func (s *slots) take(id string) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.bridge[id]; ok {
		return 0, fmt.Errorf("hotplug %s: a NIC of that id is plugged", id)
	}
	for b, n := range s.used {
		if n < BridgeSlots {
			s.used[b]++
			s.bridge[id] = b
			return b, nil
		}
	}
	return 0, fmt.Errorf("hotplug %s: every one of the VM's %d NIC slots is taken (a NIC the guest never released keeps its slot until the VM restarts)",
		id, len(s.used)*BridgeSlots)
}

// give frees id's slot.
func (s *slots) give(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if b, ok := s.bridge[id]; ok {
		s.used[b]--
		delete(s.bridge, id)
	}
}

// HotplugNIC gives the running VM the NIC n in a free slot of one of its
// bridges: its tap goes to QEMU with getfd (the caller still owns and
// closes n.Tap), then netdev_add and device_add with the options a
// cold-plugged NIC has. When QEMU refuses, nothing is left behind in QEMU.
// When the session ends on the way (ctx ended before QEMU answered), what
// QEMU made of it is unknown: the NIC keeps its slot, and its id must not
// be used again in this QEMU (host/daemon notes it as stuck).
func (p *Process) HotplugNIC(ctx context.Context, n NIC) error {
	if len(n.MAC) != 6 || n.Tap == nil {
		return fmt.Errorf("hotplug %s: want a 6-octet MAC and a tap", n.ID)
	}
	if n.Vhost != nil && p.accel != "kvm" {
		return fmt.Errorf("hotplug %s: vhost-net needs KVM", n.ID)
	}
	if err := qmp.CheckID(n.ID); err != nil {
		return err
	}
	q, err := p.session(ctx)
	if err != nil {
		return fmt.Errorf("hotplug %s: %w", n.ID, err)
	}
	b, err := p.slots.take(n.ID)
	if err != nil {
		return err
	}
	if err := hotplug(ctx, q, n, bridgeID(b)); err != nil {
		if errors.Is(err, qmp.ErrClosed) {
			p.lost.add(n.ID)
		} else {
			p.slots.give(n.ID)
		}
		return fmt.Errorf("hotplug %s: %w", n.ID, err)
	}
	return nil
}

func hotplug(ctx context.Context, q *qmp.Client, n NIC, bus string) error {
	fdname, vhostname := "tap-"+n.ID, ""
	names := []string{fdname}
	// A successful netdev_add takes the named descriptors out of the
	// monitor's table; after a failure they may still be there.
	closeFDs := func() {
		for _, name := range names {
			q.Run(ctx, "closefd", map[string]string{"fdname": name}, nil)
		}
	}
	if err := q.GetFD(ctx, fdname, n.Tap); err != nil {
		return err
	}
	if n.Vhost != nil {
		vhostname = "vhost-" + n.ID
		if err := q.GetFD(ctx, vhostname, n.Vhost); err != nil {
			closeFDs()
			return err
		}
		names = append(names, vhostname)
	}
	if err := q.Run(ctx, "netdev_add", qmpArgs(nicNetdev(n.ID, fdname, vhostname)), nil); err != nil {
		closeFDs()
		return err
	}
	if err := q.Run(ctx, "device_add", qmpArgs(nicDevice(n, bus, -1)), nil); err != nil {
		return errors.Join(err, q.Run(ctx, "netdev_del", map[string]string{"id": n.ID}, nil))
	}
	return nil
}

// UnplugNIC removes the NIC id, hot- or cold-plugged (qmp.Client.UnplugNIC:
// device_del, DEVICE_DELETED, netdev_del). Its slot is free again only once
// the guest has released the device.
func (p *Process) UnplugNIC(ctx context.Context, id string) error {
	q, err := p.session(ctx)
	if err != nil {
		return fmt.Errorf("unplug %s: %w", id, err)
	}
	if err := q.UnplugNIC(ctx, id); err != nil {
		if errors.Is(err, qmp.ErrClosed) {
			p.lost.add(id)
		}
		return err
	}
	p.slots.give(id)
	return nil
}

// session is QMP, first tidied up after the NICs whose hot-plug or unplug
// ended with an earlier session.
func (p *Process) session(ctx context.Context) (*qmp.Client, error) {
	q, err := p.QMP(ctx)
	if err != nil {
		return nil, err
	}
	p.lost.tidy(ctx, q)
	return q, nil
}

// lostNICs are the NICs whose hot-plug or unplug ended with its session
// (its context ended before QEMU answered). What QEMU made of it is
// unknown: a QEMU that was frozen may run what was sent once it runs
// again, so it may hold the NIC's tap under a getfd name or in a netdev,
// and the guest may have the device.
type lostNICs struct {
	mu  sync.Mutex
	ids map[string]bool
}

func (l *lostNICs) add(id string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.ids == nil {
		l.ids = map[string]bool{}
	}
	l.ids[id] = true
}

// tidy has QEMU let go of the taps of the lost NICs: closefd of the names
// a hot-plug gives their descriptors and netdev_del, each refused by QEMU
// when there is nothing to undo. A device the guest has keeps its slot and
// its id, which is never used again in this QEMU (host/daemon notes it as
// stuck). A NIC whose tidying is cut short by the session ending again
// stays lost.
func (l *lostNICs) tidy(ctx context.Context, q *qmp.Client) {
	l.mu.Lock()
	ids := l.ids
	l.ids = nil
	l.mu.Unlock()
	for id := range ids {
		for _, c := range []struct {
			cmd  string
			args map[string]string
		}{
			{"closefd", map[string]string{"fdname": "tap-" + id}},
			{"closefd", map[string]string{"fdname": "vhost-" + id}},
			{"netdev_del", map[string]string{"id": id}},
		} {
			if err := q.Run(ctx, c.cmd, c.args, nil); errors.Is(err, qmp.ErrClosed) || ctx.Err() != nil {
				for id := range ids {
					l.add(id)
				}
				return
			}
		}
		delete(ids, id)
	}
}
