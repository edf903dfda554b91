// Package distinit builds guest initramfs images with the distributions' own
// generators, Debian's mkinitramfs (initramfs-tools) and dracut, carrying
// spectrum-netcfg through the integrations in dist/, and lists what is in
// them. The tests of dist/ and vmtest use it.
//
// The generators read the kernel's modules from /lib/modules/VERSION and its
// configuration from /boot/config-VERSION. The test kernel is not installed
// on the host: each run happens in a private mount namespace (unshare -m)
// where a tmpfs on /lib/modules holds an overlay of the cached Debian
// package's module tree (so depmod's output never lands in the cache) and a
// tmpfs on /boot holds its config. Nothing outside the namespace changes,
// except that an empty /lib/modules is created if the host has none, to
// have a mount point.
package distinit

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"

	"spectrum-os.org/netcfg/vmtest/kernel"
)

// Kernel is what the generators need of a Debian kernel package.
type Kernel struct {
	Version string // e.g. 6.1.0-56-cloud-amd64
	Modules string // the package's lib/modules/VERSION tree
	Config  string // the package's boot/config-VERSION
}

// Debian returns the Debian kernel package behind k: the test kernel
// `make kernel` caches, whose module tree is
// .cache/kernel/<package>/root/lib/modules/VERSION.
func Debian(k kernel.Kernel) (Kernel, error) {
	if k.Modules == "" {
		return Kernel{}, errors.New("the initramfs generators need a kernel with modules (a Debian kernel package); this one has its drivers built in")
	}
	mods, err := filepath.EvalSymlinks(k.Modules)
	if err != nil {
		return Kernel{}, err
	}
	ver := filepath.Base(mods)
	root := filepath.Dir(filepath.Dir(filepath.Dir(mods)))
	dk := Kernel{Version: ver, Modules: mods, Config: filepath.Join(root, "boot", "config-"+ver)}
	if _, err := os.Stat(dk.Config); err != nil {
		return Kernel{}, fmt.Errorf("kernel %s: no config next to its modules (an extracted Debian package is needed): %w", ver, err)
	}
	return dk, nil
}

// nsScript runs its arguments with the kernel's modules at
// /lib/modules/$VER (an overlay: upper layer in $SCRATCH) and its config at
// /boot/config-$VER (unless $VER is empty), after the overlays in $OVERLAYS ("DIR LOWER" lines).
// unshare -m makes every mount private to the command.
const nsScript = `set -e
if [ -n "$VER" ]; then
	mount -t tmpfs -o mode=0755 spectrum-modules /lib/modules
	mkdir /lib/modules/"$VER" "$SCRATCH"/upper "$SCRATCH"/work
	mount -t overlay overlay -o lowerdir="$MODS",upperdir="$SCRATCH"/upper,workdir="$SCRATCH"/work /lib/modules/"$VER"
	[ -e /lib/modules/"$VER"/modules.dep ] || depmod "$VER"
	mount -t tmpfs -o mode=0755 spectrum-boot /boot
	cp "$CONFIG" /boot/config-"$VER"
fi
printf '%s\n' "$OVERLAYS" | while read -r dir lower; do
	[ -n "$dir" ] || continue
	mount -t overlay overlay -o lowerdir="$lower":"$dir" "$dir"
done
exec "$@"
`

// Overlay shows the files of Lower on top of the host's directory Dir
// (read-only), e.g. a `make install DESTDIR=` tree's usr/share/initramfs-tools
// over /usr/share/initramfs-tools: the generator sees them installed.
type Overlay struct{ Dir, Lower string }

// Run runs the command args with k installed as far as the generators can
// tell (see the package doc; a zero Kernel installs none) and the overlays
// mounted, with env added to the environment, and returns its combined
// output.
func Run(ctx context.Context, k Kernel, overlays []Overlay, env []string, args ...string) ([]byte, error) {
	if k.Version != "" {
		if err := os.MkdirAll("/lib/modules", 0o755); err != nil {
			return nil, err
		}
	}
	scratch, err := os.MkdirTemp("", "distinit-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(scratch)
	var ovl strings.Builder
	for _, o := range overlays {
		if strings.ContainsAny(o.Dir+o.Lower, " :,\n") {
			return nil, fmt.Errorf("overlay %s on %s: a path with a space, colon, comma or newline", o.Lower, o.Dir)
		}
		ovl.WriteString(o.Dir + " " + o.Lower + "\n")
	}
	cmd := exec.CommandContext(ctx, "unshare", append([]string{"-m", "--propagation", "private", "sh", "-c", nsScript, "sh"}, args...)...)
	cmd.Env = append(os.Environ(), "VER="+k.Version, "MODS="+k.Modules, "CONFIG="+k.Config,
		"SCRATCH="+scratch, "OVERLAYS="+ovl.String())
	cmd.Env = append(cmd.Env, env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return out, fmt.Errorf("%s: %w", strings.Join(args, " "), err)
	}
	return out, nil
}

// BuildAgent builds the static spectrum-netcfg the way the Makefile does,
// from the repository at root, into dir.
func BuildAgent(root, dir string) (string, error) {
	return BuildStatic(root, filepath.Join(dir, "spectrum-netcfg"), "./cmd/spectrum-netcfg")
}

// BuildStatic builds the package pkg of the repository at root as a static
// binary out.
func BuildStatic(root, out, pkg string) (string, error) {
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", out, pkg)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build %s: %w\n%s", pkg, err, b)
	}
	return out, nil
}

// Entry is one file in an initramfs listing.
type Entry struct {
	Mode string // as ls -l shows it: "-rwxr-xr-x"
	Size int64
}

// Executable reports whether e is a regular file everyone may execute.
func (e Entry) Executable() bool {
	return len(e.Mode) == 10 && e.Mode[0] == '-' && e.Mode[3] == 'x' && e.Mode[6] == 'x' && e.Mode[9] == 'x'
}

// List lists an initramfs with the generator's own lister, lsinitramfs
// (initramfs-tools) or lsinitrd (dracut); both print cpio's `ls -l` style
// lines, which are read here. Other lines are ignored.
func List(ctx context.Context, lister, image string) (map[string]Entry, error) {
	var args []string
	switch lister {
	case "lsinitramfs":
		args = []string{"-l", image}
	case "lsinitrd":
		args = []string{image}
	default:
		return nil, fmt.Errorf("unknown lister %q", lister)
	}
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, lister, args...)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w: %s", lister, image, err, stderr.Bytes())
	}
	return parseListing(out), nil
}

// parseListing reads `ls -l` style lines: mode, links, owner, group, size,
// three date fields, name (a symlink's "-> target" is dropped).
func parseListing(out []byte) map[string]Entry {
	m := map[string]Entry{}
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) < 9 || len(f[0]) != 10 || !strings.ContainsRune("-dlcbps", rune(f[0][0])) {
			continue
		}
		size, err := strconv.ParseInt(f[4], 10, 64)
		if err != nil {
			continue
		}
		m[strings.TrimPrefix(f[8], "./")] = Entry{Mode: f[0], Size: size}
	}
	return m
}
