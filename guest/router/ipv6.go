package router

import (
	"errors"
	"strconv"

	"golang.org/x/sys/unix"
)

// quietIPv6 makes the provider NIC at index take nothing from IPv6 router
// advertisements: accept_ra 0 (no default route, no prefix route, no
// MTU or hop limit from a client) and autoconf 0 (no SLAAC address), in
// /proc/sys/net/ipv6/conf/NIC/, since rtnetlink cannot set them. The
// ruleset drops RAs and redirects from provider links too; these are for
// a packet that gets past it (a table removed by another program) and say
// so where an administrator looks. It returns a line for the NIC's log
// when it changed anything. A kernel without IPv6 has nothing to set.
func quietIPv6(index uint32) (string, error) {
	if _, err := readFileString("/proc/sys/net/ipv6/conf/all/accept_ra"); errors.Is(err, unix.ENOENT) {
		return "", nil
	}
	var err error
	// A NIC renamed between the name's look-up and the write (udev)
	// is looked up again.
	for range 3 {
		var name string
		if name, err = ifName(index); err != nil {
			return "", wrap("IPv6 settings: name of NIC "+strconv.FormatUint(uint64(index), 10), err)
		}
		var msg string
		if msg, err = quietIPv6Name(name); !errors.Is(err, unix.ENOENT) {
			return msg, err
		}
	}
	return "", err
}

func quietIPv6Name(name string) (string, error) {
	dir := "/proc/sys/net/ipv6/conf/" + name + "/"
	var was [2]string
	changed := false
	for i, key := range [...]string{"accept_ra", "autoconf"} {
		v, err := readFileString(dir + key)
		if err != nil {
			return "", err
		}
		was[i] = v
		if v == "0" {
			continue
		}
		if err := writeFileString(dir+key, "0"); err != nil {
			return "", wrap("set "+dir+key+" 0", err)
		}
		changed = true
	}
	if !changed {
		return "", nil
	}
	return "set IPv6 accept_ra 0, autoconf 0 (were " + was[0] + ", " + was[1] + ")", nil
}

// ifName is the name of the NIC at index now.
func ifName(index uint32) (string, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return "", err
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("")
	if err != nil {
		return "", err
	}
	ifr.SetUint32(index)
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFNAME, ifr); err != nil {
		return "", err
	}
	return ifr.Name(), nil
}

// ifIndex is the ifindex of the NIC called name now.
func ifIndex(name string) (uint32, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return 0, err
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		return 0, err
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFINDEX, ifr); err != nil {
		return 0, err
	}
	return ifr.Uint32(), nil
}

// readFileString is a small file's first line.
func readFileString(path string) (string, error) {
	var b [64]byte
	n, err := readFile(path, b[:])
	if err != nil {
		return "", err
	}
	s := string(b[:n])
	for i := range len(s) {
		if s[i] == '\n' {
			return s[:i], nil
		}
	}
	return s, nil
}

func writeFileString(path, s string) error {
	fd, err := unix.Open(path, unix.O_WRONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	_, err = unix.Write(fd, []byte(s+"\n"))
	if cerr := unix.Close(fd); err == nil {
		err = cerr
	}
	return err
}
