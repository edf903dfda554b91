package main

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"time"
)

// Input event constants from linux/input-event-codes.h.
const (
	evKey    = 0x01
	keyPower = 116
	// inputEventSize is sizeof(struct input_event) on 64-bit kernels: a
	// struct timeval (16 bytes), type, code (2 bytes each) and value (4).
	inputEventSize = 24
)

// powerButton powers the VM off when the ACPI power button is pressed
// (QEMU's system_powerdown, which spectrumd sends to stop a VM), so a stop
// is graceful and quick instead of waiting out spectrumd's stop timeout.
// The kernel's button driver turns the ACPI event into KEY_POWER on an
// input device, read here through evdev; both are modules on Debian's
// kernel (kernel.PowerModules). The input devices appear while the modules
// probe, so they are looked for during a few seconds.
func powerButton() {
	seen := map[string]bool{}
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		devs, _ := filepath.Glob("/dev/input/event*")
		for _, d := range devs {
			if !seen[d] {
				seen[d] = true
				go watchPowerKey(d)
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	if len(seen) == 0 {
		report("power button none (stop waits for spectrumd's timeout)")
	}
}

func watchPowerKey(dev string) {
	f, err := os.Open(dev)
	if err != nil {
		return
	}
	defer f.Close()
	buf := make([]byte, inputEventSize*16)
	for {
		n, err := f.Read(buf)
		if err != nil {
			return
		}
		for off := 0; off+inputEventSize <= n; off += inputEventSize {
			ev := buf[off : off+inputEventSize]
			typ := binary.NativeEndian.Uint16(ev[16:])
			code := binary.NativeEndian.Uint16(ev[18:])
			value := int32(binary.NativeEndian.Uint32(ev[20:]))
			if typ == evKey && code == keyPower && value == 1 {
				report("power button pressed dev=%s", dev)
				poweroff()
			}
		}
	}
}
