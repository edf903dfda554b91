package qmp

import (
	"context"
	"os"
)

// GetFD hands f to QEMU under name (getfd: the descriptor travels with the
// command as SCM_RIGHTS), for a later command that names a descriptor, such
// as netdev_add's fd or vhostfd. The caller still owns and closes f. A name
// no command has taken stays in QEMU until closefd.
func (c *Client) GetFD(ctx context.Context, name string, f *os.File) error {
	return c.run(ctx, "getfd", map[string]string{"fdname": name}, f, nil)
}
