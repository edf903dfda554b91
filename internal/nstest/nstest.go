// Package nstest gives privileged tests a network namespace of their own.
//
// Every test that touches the kernel's network state calls New, which
// creates a fresh, uniquely named namespace and deletes it when the test ends,
// so tests never see each other's links or the machine's own interfaces.
// State is read back with iproute2 (an independent tool), not with the code
// under test.
package nstest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os/exec"
	"strings"
	"testing"

	"spectrum-os.org/netcfg/internal/testenv"
)

// RequirePrivileged stops the test unless it can create network namespaces:
// skipped without root on a developer's machine, failed under CI
// (internal/testenv).
func RequirePrivileged(t testing.TB) {
	t.Helper()
	testenv.Root(t, "to create network namespaces")
	testenv.Tool(t, "ip", "make deps installs iproute2")
}

// NS is a network namespace owned by one test.
type NS struct {
	Name string
	t    testing.TB
}

// New creates a fresh namespace, brings its loopback up, and removes the
// namespace (and every link in it) when the test ends.
func New(t testing.TB) *NS {
	t.Helper()
	RequirePrivileged(t)
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	ns := &NS{Name: "spt-" + hex.EncodeToString(b[:]), t: t}
	if out, err := exec.Command("ip", "netns", "add", ns.Name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v\n%s", ns.Name, err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", ns.Name).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v\n%s", ns.Name, err, out)
		}
	})
	ns.IP("link", "set", "lo", "up")
	return ns
}

// Path is the namespace's bind mount, for setns(2) and netns.GetFromPath.
func (ns *NS) Path() string { return "/run/netns/" + ns.Name }

// IP runs `ip -n NAME args...` and returns its standard output; a failure
// fails the test.
func (ns *NS) IP(args ...string) []byte {
	ns.t.Helper()
	out, err := ns.TryIP(args...)
	if err != nil {
		ns.t.Fatalf("ip -n %s %s: %v", ns.Name, strings.Join(args, " "), err)
	}
	return out
}

// TryIP is IP without failing the test; the error includes ip's stderr.
func (ns *NS) TryIP(args ...string) ([]byte, error) {
	var stdout, stderr bytes.Buffer
	cmd := exec.Command("ip", append([]string{"-n", ns.Name}, args...)...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.Bytes(), fmt.Errorf("%w: %s", err, bytes.TrimSpace(stderr.Bytes()))
	}
	return stdout.Bytes(), nil
}

// Command returns a command that runs name inside the namespace
// (`ip netns exec`).
func (ns *NS) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", ns.Name, name}, args...)...)
}

// AddTap creates a tap with the given MAC and no process behind it: the
// stand-in NIC on kernels without the dummy driver (admin state can go up;
// it never has carrier).
func (ns *NS) AddTap(name, mac string) {
	ns.t.Helper()
	ns.IP("tuntap", "add", "mode", "tap", "name", name)
	if mac != "" {
		ns.IP("link", "set", name, "address", mac)
	}
}

// Sysctl reads a sysctl inside the namespace, e.g. "net.ipv4.conf.eth0.rp_filter".
func (ns *NS) Sysctl(key string) string {
	ns.t.Helper()
	out, err := ns.Command(context.Background(), "sysctl", "-n", key).CombinedOutput()
	if err != nil {
		ns.t.Fatalf("sysctl -n %s in %s: %v\n%s", key, ns.Name, err, out)
	}
	return strings.TrimSpace(string(out))
}
