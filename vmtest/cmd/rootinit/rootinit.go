// Binary rootinit is the /sbin/init of the root file system that the
// initramfs generator VM test (vmtest/mkinitramfs_test.go) boots: it proves
// the guest reached its real root after a distribution's initramfs ran
// spectrum-netcfg, and shows what the agent left behind.
//
// It reports on its standard output (the kernel console, the serial port),
// one "SPECTRUM-TEST: <event> [fields]" line per fact:
//
//	root init pid=1             it runs, as the root's init
//	root agent pid=N exe=PATH args=A,B  a spectrum-netcfg process still running
//	                            (the -watch instance kept across switch_root)
//	root addr NIC mac=MAC addr=A/N      an IPv4 address of a NIC
//	root done                   every expected NIC had an address, or the
//	                            wait timed out (missing=MAC,...)
//
// then powers the VM off.
//
// Kernel command line:
//
//	spectrum.expect=MAC[,MAC...]  wait until these NICs have an IPv4 address
//	                              (a NIC hot-plugged after boot included)
//	spectrum.timeout=SECONDS      how long to wait for them (default 60)
package main

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

const prefix = "SPECTRUM-TEST: "

func report(format string, args ...any) {
	fmt.Printf(prefix+format+"\n", args...)
}

func main() {
	// The kernel writes its messages to the same console, and one can land
	// in the middle of a report line (a hot-plugged NIC's PCI lines did,
	// cutting "root agent ... args=-watch" in two). From here on only
	// errors and worse go to the console (console_loglevel 4); the rest
	// stay in dmesg.
	if err := os.WriteFile("/proc/sys/kernel/printk", []byte("4"), 0); err != nil {
		report("root error quieting the kernel console: %v", err)
	}
	report("root init pid=%d", os.Getpid())
	cmdline, _ := os.ReadFile("/proc/cmdline")
	var expect []string
	timeout := 60 * time.Second
	for _, f := range strings.Fields(string(cmdline)) {
		if v, ok := strings.CutPrefix(f, "spectrum.expect="); ok {
			expect = strings.Split(strings.ToLower(v), ",")
		}
		if v, ok := strings.CutPrefix(f, "spectrum.timeout="); ok {
			if n, err := strconv.Atoi(v); err == nil {
				timeout = time.Duration(n) * time.Second
			}
		}
	}
	agents()
	seen := map[string]bool{}
	deadline := time.Now().Add(timeout)
	for {
		missing := addrs(expect, seen)
		if len(missing) == 0 {
			report("root done")
			break
		}
		if time.Now().After(deadline) {
			report("root done missing=%s", strings.Join(missing, ","))
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	unix.Sync()
	unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
	select {}
}

// agents reports every running spectrum-netcfg, found through /proc (which
// the initramfs moved onto the root).
func agents() {
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	for _, d := range dirs {
		b, err := os.ReadFile(d + "/cmdline")
		if err != nil || len(b) == 0 {
			continue
		}
		args := strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
		if filepath.Base(args[0]) != "spectrum-netcfg" {
			continue
		}
		exe, _ := os.Readlink(d + "/exe")
		report("root agent pid=%s exe=%s args=%s", filepath.Base(d), strings.ReplaceAll(exe, " ", "_"), strings.Join(args[1:], ","))
	}
}

// addrs reports the IPv4 addresses not reported yet and returns the
// expected MACs that have none.
func addrs(expect []string, seen map[string]bool) (missing []string) {
	have := map[string]bool{}
	ifs, err := net.Interfaces()
	if err != nil {
		report("root error %v", err)
	}
	for _, ifc := range ifs {
		as, _ := ifc.Addrs()
		for _, a := range as {
			ipn, ok := a.(*net.IPNet)
			if !ok || ipn.IP.To4() == nil {
				continue
			}
			have[ifc.HardwareAddr.String()] = true
			key := ifc.Name + " " + ipn.String()
			if !seen[key] {
				seen[key] = true
				report("root addr %s mac=%s addr=%s", ifc.Name, ifc.HardwareAddr, ipn)
			}
		}
	}
	for _, m := range expect {
		if !have[m] {
			missing = append(missing, m)
		}
	}
	return missing
}
