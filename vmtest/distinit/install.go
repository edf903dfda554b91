package distinit

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
)

// Install runs the repository's `make install` into destdir with the
// binaries already built in bin (`-o build`: the target's own build step,
// which writes into the shared bin/, is skipped), with vars such as
// "PREFIX=/usr" added.
func Install(root, bin, destdir string, vars ...string) ([]byte, error) {
	args := append([]string{"--no-print-directory", "-o", "build", "install", "DESTDIR=" + destdir, "BIN=" + bin}, vars...)
	cmd := exec.Command("make", args...)
	cmd.Dir = root
	out, err := cmd.CombinedOutput()
	if err != nil {
		return out, fmt.Errorf("make %v: %w\n%s", args, err, out)
	}
	return out, nil
}

// BuildBins builds into dir what `make build` builds into bin/ and `make
// install` installs: the static spectrum-netcfg and spectrum-router,
// spectrumd and spectrum-initramfs-append.
func BuildBins(root, dir string) error {
	if _, err := BuildAgent(root, dir); err != nil {
		return err
	}
	if _, err := BuildStatic(root, filepath.Join(dir, "spectrum-router"), "./cmd/spectrum-router"); err != nil {
		return err
	}
	for _, name := range []string{"spectrumd", "spectrum-initramfs-append"} {
		cmd := exec.Command("go", "build", "-o", filepath.Join(dir, name), "./cmd/"+name)
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("go build %s: %w\n%s", name, err, out)
		}
	}
	return nil
}

// Installed returns the overlays that make a `make install DESTDIR=destdir`
// tree (default PREFIX) look installed to the generators: the binaries, the
// initramfs-tools hooks, the dracut module and /etc/default/spectrum-netcfg.
// A directory that is missing on either side is left out.
func Installed(destdir string) []Overlay {
	var out []Overlay
	for _, d := range []string{"/usr/local/bin", "/usr/share/initramfs-tools", "/usr/lib/dracut/modules.d", "/etc/default"} {
		lower := filepath.Join(destdir, d)
		if isDir(lower) && isDir(d) {
			out = append(out, Overlay{Dir: d, Lower: lower})
		}
	}
	return out
}

func isDir(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.IsDir()
}
