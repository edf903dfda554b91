package vm

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestArgs(t *testing.T) {
	data, run := t.TempDir(), "/run/t"
	dir := filepath.Join(data, "appvm-lynx")
	for _, f := range []string{"vmlinux", "initramfs", "blk/root.img", "blk/notes.txt"} {
		os.MkdirAll(filepath.Dir(filepath.Join(dir, f)), 0o755)
		if err := os.WriteFile(filepath.Join(dir, f), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	os.WriteFile(filepath.Join(dir, "cmdline"), []byte("console=ttyS0 spectrum.test=serve\n"), 0o644)
	got, err := Args(dir, run, []NIC{{Tap: "spc-a546", MAC: "0a:b3:ec:00:a5:46"}})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{QEMU,
		"-M", "pc", "-accel", "tcg", "-m", "256", "-smp", "1",
		"-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
		"-kernel", dir + "/vmlinux",
		"-append", "console=ttyS0 spectrum.test=serve",
		"-chardev", "file,id=serial0,path=/dev/stdout",
		"-serial", "chardev:serial0",
		"-device", "virtio-serial-pci,id=virtio-serial0",
		"-chardev", "socket,id=hvc0,path=/run/t/appvm-lynx.console,server=on,wait=off",
		"-device", "virtconsole,chardev=hvc0",
		"-qmp", "unix:/run/t/appvm-lynx.qmp,server=on,wait=off",
		"-initrd", dir + "/initramfs",
		"-drive", "file=" + dir + "/blk/root.img,format=raw,if=none,id=blk0",
		"-device", "virtio-blk-pci,drive=blk0",
		"-netdev", "tap,id=net0,ifname=spc-a546,script=no,downscript=no",
		"-device", "virtio-net-pci,netdev=net0,mac=0a:b3:ec:00:a5:46,romfile=",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Args (-want +got):\n%s", diff)
	}

	os.Remove(filepath.Join(dir, "blk/root.img"))
	if _, err := Args(dir, run, nil); err == nil || !strings.Contains(err.Error(), "blk/*.img") {
		t.Errorf("Args without a disk image: %v, want an error naming blk/*.img", err)
	}
}
