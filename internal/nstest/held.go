package nstest

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
)

// HeldNetns returns the path (/proc/PID/fd/N) of a network namespace that
// process pid holds by a descriptor and does not run in, such as
// spectrumd's links' namespace, or "" when it holds none. An anonymous
// namespace has no other name to reach it by.
func HeldNetns(pid int) (string, error) {
	proc := "/proc/" + strconv.Itoa(pid)
	own, err := os.Readlink(proc + "/ns/net")
	if err != nil {
		return "", err
	}
	fds, err := filepath.Glob(proc + "/fd/*")
	if err != nil {
		return "", err
	}
	for _, fd := range fds {
		if l, err := os.Readlink(fd); err == nil && strings.HasPrefix(l, "net:[") && l != own {
			return fd, nil
		}
	}
	return "", nil
}

// IPAt runs `ip args...` inside the network namespace at path (with
// nsenter, from util-linux) and returns its standard output; the error
// includes ip's stderr.
func IPAt(path string, args ...string) ([]byte, error) {
	var stdout, stderr bytes.Buffer
	cmd := exec.Command("nsenter", append([]string{"--net=" + path, "--", "ip"}, args...)...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.Bytes(), fmt.Errorf("ip %s in %s: %w: %s", strings.Join(args, " "), path, err, bytes.TrimSpace(stderr.Bytes()))
	}
	return stdout.Bytes(), nil
}
