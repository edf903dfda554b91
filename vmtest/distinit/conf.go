package distinit

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
)

// ListConf writes an initramfs-tools configuration directory (for
// mkinitramfs -d) into dir: the host's /etc/initramfs-tools/initramfs.conf
// with MODULES=list, and a modules file naming modules, so the image holds
// only those drivers and what hooks add (small and quick to boot under TCG).
func ListConf(dir string, modules ...string) error {
	b, err := os.ReadFile("/etc/initramfs-tools/initramfs.conf")
	if err != nil {
		return err
	}
	conf := regexp.MustCompile(`(?m)^MODULES=.*$`).ReplaceAll(b, []byte("MODULES=list"))
	if err := os.WriteFile(filepath.Join(dir, "initramfs.conf"), conf, 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "modules"), []byte(strings.Join(modules, "\n")+"\n"), 0o644)
}
