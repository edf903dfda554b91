package qmp

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// CheckID reports whether id can name a QEMU device or netdev: a letter,
// then letters, digits, '-', '.' or '_' (QEMU's id_wellformed), at most 64
// bytes so that derived names stay readable.
func CheckID(id string) error {
	if id == "" || len(id) > 64 {
		return fmt.Errorf("qemu id %q: want 1 to 64 bytes", id)
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		letter := 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z'
		if i == 0 && !letter {
			return fmt.Errorf("qemu id %q: must start with a letter", id)
		}
		if !letter && !('0' <= c && c <= '9') && c != '-' && c != '.' && c != '_' {
			return fmt.Errorf("qemu id %q: byte %q not allowed (letters, digits, '-', '.', '_')", id, c)
		}
	}
	return nil
}

// UnplugNIC removes the NIC named id (hot- or cold-plugged). device_del only
// asks the guest to release the device (ACPI hot-unplug); UnplugNIC waits for
// QEMU's DEVICE_DELETED event, then deletes the netdev, which closes QEMU's
// tap fd.
//
// UnplugNIC returns by ctx's deadline, also when the guest never releases
// the device: it waits for the guest until a quarter of the time left (at
// most netdevDelTimeout) remains, and keeps that for netdev_del, so the
// host side can be torn down. The error then wraps
// context.DeadlineExceeded: the guest keeps a NIC with no backend until it
// acts on the request. A ctx with no deadline gets netdevDelTimeout for
// netdev_del after it is cancelled.
func (c *Client) UnplugNIC(ctx context.Context, id string) error {
	if err := CheckID(id); err != nil {
		return err
	}
	sub, cancel := c.subscribe(1, func(ev Event) bool {
		d, _ := ev.Data["device"].(string)
		return ev.Event == "DEVICE_DELETED" && d == id
	})
	defer cancel()

	waitCtx, delCtx := ctx, ctx
	if deadline, ok := ctx.Deadline(); ok {
		reserve := min(time.Until(deadline)/4, netdevDelTimeout)
		var wcancel context.CancelFunc
		waitCtx, wcancel = context.WithDeadline(ctx, deadline.Add(-reserve))
		defer wcancel()
	} else {
		var dcancel context.CancelFunc
		delCtx, dcancel = context.WithTimeout(context.WithoutCancel(ctx), netdevDelTimeout)
		defer dcancel()
	}

	var errs []error
	if err := c.Run(waitCtx, "device_del", map[string]string{"id": id}, nil); err != nil {
		errs = append(errs, err)
	} else {
		select {
		case <-sub.ch:
		case <-waitCtx.Done():
			errs = append(errs, fmt.Errorf("guest did not release device: %w", waitCtx.Err()))
		case <-c.done:
			errs = append(errs, fmt.Errorf("waiting for DEVICE_DELETED: %w", c.Err()))
		}
	}
	// The netdev goes even when the guest kept the device.
	if err := c.Run(delCtx, "netdev_del", map[string]string{"id": id}, nil); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("unplug %s: %w", id, err)
	}
	return nil
}

// netdevDelTimeout is the most UnplugNIC keeps for netdev_del: QEMU answers
// it at once unless its monitor is wedged.
const netdevDelTimeout = 5 * time.Second
