package initramfs

import (
	"bufio"
	"bytes"
	"debug/elf"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// BusyboxPath is Debian's static busybox (busybox-static).
const BusyboxPath = "/bin/busybox"

// Busybox returns the host's static busybox as /bin/busybox and a
// symbolic link to it for each of its applets (/bin/sh, /bin/ls, ...),
// where its own list puts them.
func Busybox() ([]File, error) {
	if err := isStatic(BusyboxPath); err != nil {
		return nil, fmt.Errorf("%w (scripts/deps.sh installs busybox-static)", err)
	}
	out, err := exec.Command(BusyboxPath, "--list-full").Output()
	if err != nil {
		return nil, fmt.Errorf("%s --list-full: %w", BusyboxPath, err)
	}
	files := []File{{Path: "bin/busybox", Mode: 0o755, Src: BusyboxPath}}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		p := strings.TrimSpace(sc.Text())
		// The test init is /init, and spectrum-netcfg is not an
		// applet: neither can be shadowed.
		if p == "" || p == "init" || p == "linuxrc" || p == "bin/busybox" {
			continue
		}
		files = append(files, File{Path: p, Link: "/bin/busybox"})
	}
	return files, sc.Err()
}

// isStatic fails unless path is an ELF executable without a program
// interpreter: a static binary, which runs in a guest without the host's
// libraries.
func isStatic(path string) error {
	f, err := elf.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return fmt.Errorf("%s is not a static binary", path)
		}
	}
	return nil
}

// LynxPath is Debian's lynx (package lynx).
const LynxPath = "/usr/bin/lynx"

// Terminfo are the terminal types whose descriptions go with lynx (Debian's
// ncurses-base, /lib/terminfo): what the terminal running `spectrumd
// console` is likely to be.
var Terminfo = []string{"dumb", "linux", "vt100", "vt102", "vt220", "xterm", "xterm-color", "xterm-256color",
	"screen", "screen-256color", "tmux", "tmux-256color", "rxvt-unicode", "rxvt-unicode-256color"}

// Lynx returns Debian's lynx with what it needs to run in a guest that has
// none of the host's files: its shared libraries and the dynamic loader
// (ldd's closure, at the paths the loader searches), its configuration
// (/etc/lynx) and the terminal descriptions of Terminfo.
func Lynx() ([]File, error) {
	if _, err := os.Stat(LynxPath); err != nil {
		return nil, fmt.Errorf("%w (scripts/deps.sh installs Debian's lynx)", err)
	}
	files, err := ELFClosure(LynxPath)
	if err != nil {
		return nil, err
	}
	for _, f := range []string{"/etc/lynx/lynx.cfg", "/etc/lynx/lynx.lss"} {
		if _, err := os.Stat(f); err != nil {
			return nil, fmt.Errorf("lynx: %w (Debian's lynx-common)", err)
		}
		files = append(files, File{Path: f, Src: f})
	}
	for _, t := range Terminfo {
		p := filepath.Join("/lib/terminfo", t[:1], t)
		if _, err := os.Stat(p); err != nil {
			continue // ncurses-term is not installed: fewer types
		}
		real, err := filepath.EvalSymlinks(p)
		if err != nil {
			return nil, err
		}
		files = append(files, File{Path: p, Src: real})
	}
	return files, nil
}

// ELFClosure returns the dynamically linked binary bin and every shared
// object it loads (ldd), each at the path ldd names, with the contents of
// the file that path leads to (Debian's /lib64 and /lib are symbolic links
// on the host, plain directories in the archive).
func ELFClosure(bin string) ([]File, error) {
	var stderr bytes.Buffer
	cmd := exec.Command("ldd", bin)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("ldd %s: %w: %s", bin, err, bytes.TrimSpace(stderr.Bytes()))
	}
	files := []File{{Path: bin, Mode: 0o755, Src: bin}}
	seen := map[string]bool{bin: true}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		// "libz.so.1 => /lib/x86_64-linux-gnu/libz.so.1 (0x...)",
		// "/lib64/ld-linux-x86-64.so.2 (0x...)", "linux-vdso.so.1 (0x...)"
		f := strings.Fields(sc.Text())
		var p string
		switch {
		case len(f) >= 3 && f[1] == "=>":
			if f[2] == "not" {
				return nil, fmt.Errorf("ldd %s: %s", bin, sc.Text())
			}
			p = f[2]
		case len(f) == 2 && strings.HasPrefix(f[0], "/"):
			p = f[0]
		default:
			continue // the vDSO, which the kernel provides
		}
		if seen[p] {
			continue
		}
		seen[p] = true
		real, err := filepath.EvalSymlinks(p)
		if err != nil {
			return nil, err
		}
		files = append(files, File{Path: p, Mode: 0o755, Src: real})
	}
	if len(files) == 1 {
		return nil, errors.New("ldd " + bin + ": no shared objects (a static binary needs no closure)")
	}
	return files, sc.Err()
}
