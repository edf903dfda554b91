package qemu

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
)

// AccelHost is what DetectAccel looks at. HostAccel is the real machine;
// tests substitute their own.
type AccelHost struct {
	// OpenKVM opens the KVM device read-write (os.OpenFile("/dev/kvm", O_RDWR)).
	OpenKVM func() error
	// CPUInfo returns the contents of /proc/cpuinfo.
	CPUInfo func() ([]byte, error)
}

// HostAccel probes this machine's /dev/kvm and /proc/cpuinfo.
var HostAccel = AccelHost{
	OpenKVM: func() error {
		f, err := os.OpenFile("/dev/kvm", os.O_RDWR, 0)
		if err != nil {
			return err
		}
		return f.Close()
	},
	CPUInfo: func() ([]byte, error) { return os.ReadFile("/proc/cpuinfo") },
}

// DetectAccel resolves pref ("auto", "kvm" or "tcg") to the accelerator
// QEMU gets. "kvm" and "tcg" are returned as they are (an explicit choice is
// the user's). "auto" is "kvm" only when /dev/kvm opens read-write AND the CPU
// advertises hardware virtualisation (vmx or svm in /proc/cpuinfo's flags);
// otherwise "tcg". A /dev/kvm that exists is not enough: in a VM without
// nested virtualisation the device can be present while the (virtual) CPU
// lacks vmx/svm and KVM guests never run. The second result says why, for the
// log.
func (h AccelHost) DetectAccel(pref string) (accel, why string, err error) {
	switch pref {
	case "kvm", "tcg":
		return pref, "requested", nil
	case "auto", "":
	default:
		return "", "", fmt.Errorf("accel %q: want auto, kvm or tcg", pref)
	}
	if err := h.OpenKVM(); err != nil {
		return "tcg", fmt.Sprintf("no usable /dev/kvm: %v", err), nil
	}
	info, err := h.CPUInfo()
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return "tcg", "no /proc/cpuinfo", nil
		}
		return "", "", fmt.Errorf("read cpuinfo: %w", err)
	}
	if f := virtFlag(info); f != "" {
		return "kvm", "/dev/kvm opens and the CPU has " + f, nil
	}
	return "tcg", "/dev/kvm opens but the CPU advertises neither vmx nor svm (no nested virtualisation)", nil
}

// DetectAccel is HostAccel.DetectAccel.
func DetectAccel(pref string) (accel, why string, err error) {
	return HostAccel.DetectAccel(pref)
}

// virtFlag returns "vmx" or "svm" if the first "flags" line of cpuinfo
// lists it.
func virtFlag(cpuinfo []byte) string {
	sc := bufio.NewScanner(bytes.NewReader(cpuinfo))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		key, val, ok := strings.Cut(sc.Text(), ":")
		if !ok || strings.TrimSpace(key) != "flags" {
			continue
		}
		for _, f := range strings.Fields(val) {
			if f == "vmx" || f == "svm" {
				return f
			}
		}
		return ""
	}
	return ""
}
