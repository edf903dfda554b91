package lan

import (
	"fmt"
	"net"
	"runtime"

	"github.com/vishvananda/netns"
)

// Do runs f on an OS thread that has entered the network namespace at path
// (e.g. /run/netns/NAME). Sockets f creates belong to that namespace for
// their whole life, wherever they are used afterwards. The thread goes back
// to its own namespace afterwards; if it cannot, it stays locked, so it
// ends with its goroutine instead of going back to the scheduler's pool
// inside the namespace.
func Do(path string, f func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			errc <- fmt.Errorf("own network namespace: %w", err)
			return
		}
		defer orig.Close()
		ns, err := netns.GetFromPath(path)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("open network namespace %s: %w", path, err)
			return
		}
		defer ns.Close()
		if err := netns.Set(ns); err != nil {
			errc <- fmt.Errorf("enter network namespace %s: %w", path, err)
			return
		}
		err = f()
		// The goroutine may run on the process's main thread, which
		// never ends: it must not stay in the namespace (where `ip
		// netns pids` would count the whole process).
		if netns.Set(orig) == nil {
			runtime.UnlockOSThread()
		}
		errc <- err
	}()
	return <-errc
}

// NSPath is the bind mount `ip netns add NAME` creates.
func NSPath(name string) string { return "/run/netns/" + name }

// Listen listens on addr in the network namespace at path.
func Listen(path, network, addr string) (ln net.Listener, err error) {
	err = Do(path, func() error {
		ln, err = net.Listen(network, addr)
		return err
	})
	return ln, err
}

// ListenPacket is Listen for datagram sockets.
func ListenPacket(path, network, addr string) (c net.PacketConn, err error) {
	err = Do(path, func() error {
		c, err = net.ListenPacket(network, addr)
		return err
	})
	return c, err
}

// Dial connects to addr from the network namespace at path.
func Dial(path, network, addr string) (c net.Conn, err error) {
	err = Do(path, func() error {
		c, err = net.Dial(network, addr)
		return err
	})
	return c, err
}
