package dist

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"spectrum-os.org/netcfg/vmtest/distinit"
)

// mkinitcpio is not packaged in Debian, so its hooks are tested at the
// shell level: the install hook's build() runs under bash with stand-ins for
// mkinitcpio's add_binary, add_module, add_runscript and error, which record
// their calls; the runtime hook's run_hook() runs under busybox ash (the
// shell of mkinitcpio's init) against a stand-in agent. What mkinitcpio
// itself does with the calls is not tested here.

const installHook = "mkinitcpio/install/spectrum-netcfg"
const runtimeHook = "mkinitcpio/hooks/spectrum-netcfg"

// runBuild runs the install hook's build() with the settings file defaults
// and returns its status, the recorded calls and the build root.
func runBuild(t *testing.T, defaults string) (status int, calls []string, buildroot string) {
	t.Helper()
	dir := t.TempDir()
	buildroot = filepath.Join(dir, "root")
	callsFile := filepath.Join(dir, "calls")
	script := `
add_binary() { echo "add_binary $*" >>"$CALLS"; }
add_module() { echo "add_module $*" >>"$CALLS"; }
add_runscript() { echo "add_runscript" >>"$CALLS"; }
error() { echo "error $*" >>"$CALLS"; }
. "$1"
build
`
	cmd := exec.Command("bash", "-c", script, "bash", installHook)
	cmd.Env = append(os.Environ(), "CALLS="+callsFile, "BUILDROOT="+buildroot, "SPECTRUM_NETCFG_DEFAULTS="+defaults)
	out, err := cmd.CombinedOutput()
	if ee, ok := err.(*exec.ExitError); ok {
		status = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	if len(out) > 0 {
		t.Errorf("build() wrote %q, want nothing (messages go through error)", out)
	}
	b, _ := os.ReadFile(callsFile)
	return status, strings.Split(strings.TrimSpace(string(b)), "\n"), buildroot
}

func writeDefaults(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "spectrum-netcfg")
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestMkinitcpioInstallHook(t *testing.T) {
	if out, err := exec.Command("bash", "-n", installHook).CombinedOutput(); err != nil {
		t.Fatalf("bash -n %s: %v\n%s", installHook, err, out)
	}
	agent := filepath.Join(bins(t), "spectrum-netcfg")
	for _, tt := range []struct {
		name, defaults, conf string
	}{
		{"watch", "BINARY=" + agent + "\nWATCH=yes\n", "SPECTRUM_NETCFG_WATCH=yes\n"},
		{"no watch", "BINARY=" + agent + "\nWATCH=no\n", "SPECTRUM_NETCFG_WATCH=no\n"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			status, calls, root := runBuild(t, writeDefaults(t, tt.defaults))
			want := []string{"add_binary " + agent + " /usr/bin/spectrum-netcfg", "add_module virtio_net?", "add_runscript"}
			if status != 0 || !slices.Equal(calls, want) {
				t.Errorf("build() status %d, calls %q; want 0, %q", status, calls, want)
			}
			if got := readFile(t, filepath.Join(root, "etc/spectrum-netcfg.conf")); got != tt.conf {
				t.Errorf("etc/spectrum-netcfg.conf = %q, want %q", got, tt.conf)
			}
		})
	}
	t.Run("no agent", func(t *testing.T) {
		status, calls, _ := runBuild(t, writeDefaults(t, "BINARY=/nonexistent/spectrum-netcfg\n"))
		if status == 0 || len(calls) != 1 || !strings.HasPrefix(calls[0], "error spectrum-netcfg: no agent binary (/nonexistent/spectrum-netcfg)") {
			t.Errorf("build() status %d, calls %q; want a failure through error naming the binary", status, calls)
		}
	})
	out, err := exec.Command("bash", "-c", `. "$1"; help`, "bash", installHook).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "after\n'udev' in HOOKS") {
		t.Errorf("help(): %v\n%s", err, out)
	}
}

// TestMkinitcpioRuntimeHook runs run_hook() under busybox ash with a
// stand-in agent and udevadm (overlaid on /usr/bin in a private mount
// namespace) and modprobe that record how they were called.
func TestMkinitcpioRuntimeHook(t *testing.T) {
	distinit.Require(t, false, "busybox")
	if out, err := exec.Command("busybox", "ash", "-n", runtimeHook).CombinedOutput(); err != nil {
		t.Fatalf("busybox ash -n %s: %v\n%s", runtimeHook, err, out)
	}
	hook, err := filepath.Abs(runtimeHook)
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name, conf string
		want       []string
	}{
		{"watch", "SPECTRUM_NETCFG_WATCH=yes\n", []string{
			"modprobe -q virtio_net", "udevadm settle --timeout=10",
			"agent args= stdin=/dev/null",
			"msg :: spectrum-netcfg: exit status 1 (see its lines on ttyS0)",
			"agent args=-watch stdin=/dev/null stdout=/dev/null",
			"msg :: spectrum-netcfg: -watch running, pid N"}},
		{"no watch", "", []string{
			"modprobe -q virtio_net", "udevadm settle --timeout=10",
			"agent args= stdin=/dev/null",
			"msg :: spectrum-netcfg: exit status 1 (see its lines on ttyS0)"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			calls := filepath.Join(dir, "calls")
			fake := func(path, body string) {
				if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(path, []byte("#!/bin/sh\n"+body), 0o755); err != nil {
					t.Fatal(err)
				}
			}
			// The agent fails its first run, so the hook's message about
			// it shows; -watch records where its output goes.
			fake(dir+"/usr/bin/spectrum-netcfg", `if [ "$1" = -watch ]; then
	echo "agent args=$* stdin=$(readlink /proc/$$/fd/0) stdout=$(readlink /proc/$$/fd/1)" >>`+calls+`
	exit 0
fi
echo "agent args=$* stdin=$(readlink /proc/$$/fd/0)" >>`+calls+`
exit 1
`)
			fake(dir+"/usr/bin/udevadm", `echo "udevadm $*" >>`+calls+"\n")
			overlays := []distinit.Overlay{{Dir: "/usr/bin", Lower: dir + "/usr/bin"}}
			if tt.conf != "" {
				if err := os.MkdirAll(dir+"/etc", 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(dir+"/etc/spectrum-netcfg.conf", []byte(tt.conf), 0o644); err != nil {
					t.Fatal(err)
				}
				overlays = append(overlays, distinit.Overlay{Dir: "/etc", Lower: dir + "/etc"})
			}
			// modprobe is a function: busybox ash would run its own
			// applet (on this host's kernel) before anything on PATH.
			script := `msg() { echo "msg $*" >>"$CALLS"; }; modprobe() { echo "modprobe $*" >>"$CALLS"; }; . "$1"; run_hook; wait`
			out, err := distinit.Run(t.Context(), distinit.Kernel{}, overlays, []string{"CALLS=" + calls, "PATH=/usr/sbin:/usr/bin:/sbin:/bin"},
				"busybox", "ash", "-c", script, "ash", hook)
			if err != nil {
				t.Fatalf("%v\n%s", err, out)
			}
			b, err := os.ReadFile(calls)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
				if p, ok := strings.CutPrefix(l, "msg :: spectrum-netcfg: -watch running, pid "); ok && p != "" {
					l = "msg :: spectrum-netcfg: -watch running, pid N"
				}
				got = append(got, l)
			}
			// The -watch instance runs in the background: its line and the
			// message after starting it come in either order.
			slices.Sort(got)
			want := slices.Sorted(slices.Values(tt.want))
			if !slices.Equal(got, want) {
				t.Errorf("calls (sorted):\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
			}
		})
	}
}
