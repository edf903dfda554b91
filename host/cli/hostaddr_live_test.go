package cli

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"spectrum-os.org/netcfg/internal/nstest"
	"spectrum-os.org/netcfg/internal/testenv"
)

// helperCheck is `spectrumd check` with the arguments in SPECTRUM_CHECK_ARGS
// (one per line), run where the test puts it (a namespace of its own).
const helperCheck = "check"

func checkHelper() int {
	err := Check(strings.Split(os.Getenv("SPECTRUM_CHECK_ARGS"), "\n"), os.Stdout, os.Stdout)
	fmt.Printf("exit: %v\n", err)
	return 0
}

// TestCheckWarnsOfHostAddress: check, run in the namespace of the user's
// bridges as spectrumd would be, warns of an uplink on a bridge with the
// host's addresses, naming the file, the bridge and each address; an
// uplink on a bridge with none, or on one that is not there, is not
// warned of; the VM stays valid.
func TestCheckWarnsOfHostAddress(t *testing.T) {
	ns := nstest.New(t)
	for _, br := range []string{"br-lan", "br-quiet"} {
		ns.IP("link", "add", br, "type", "bridge")
	}
	ns.Command(t.Context(), "sysctl", "-qw", "net.ipv6.conf.br-quiet.disable_ipv6=1").Run()
	ns.IP("addr", "add", "198.51.100.1/24", "dev", "br-lan")
	ns.IP("addr", "add", "2001:db8:5::1/64", "dev", "br-lan", "nodad")

	dir := t.TempDir()
	data, state := filepath.Join(dir, "data"), filepath.Join(dir, "state")
	writeVM(t, data, "netvm")
	for _, br := range []string{"br-lan", "br-quiet", "br-gone"} {
		p := filepath.Join(data, "netvm", "uplinks", "net", br)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cmd := ns.Command(t.Context(), os.Args[0])
	cmd.Env = testenv.HelperEnv(helperCheck, "SPECTRUM_CHECK_ARGS=-data\n"+data+"\n-state\n"+state)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	t.Logf("check in the namespace:\n%s", out)
	var warnings []string
	for _, l := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(l, "  warning") {
			warnings = append(warnings, l)
		}
	}
	file := filepath.Join(data, "netvm", "uplinks", "net", "br-lan")
	if len(warnings) != 1 || !strings.Contains(warnings[0], file+": host bridge br-lan has the host's address ") ||
		!strings.Contains(warnings[0], "198.51.100.1/24") || !strings.Contains(warnings[0], "2001:db8:5::1/64") {
		t.Errorf("warnings %q, want one naming %s and br-lan's two addresses\n%s", warnings, file, out)
	}
	if !strings.Contains(string(out), "exit: <nil>") {
		t.Errorf("check failed:\n%s", out)
	}
}
