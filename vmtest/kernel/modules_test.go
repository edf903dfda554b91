package kernel

import (
	"os"
	"testing"

	"spectrum-os.org/netcfg/internal/testenv"
)

// TestModulesOfTestKernel orders the guest modules of the real test kernel
// when its module tree is available.
func TestModulesOfTestKernel(t *testing.T) {
	k, err := Find()
	testenv.NoErr(t, err, "make kernel fetches the test kernel")
	mods, err := Modules(k.Modules, GuestModules...)
	if err != nil {
		t.Fatal(err)
	}
	pos := map[string]int{}
	for i, m := range mods {
		pos[m.Name] = i
		t.Logf("%d %s %s", i, m.Name, m.Path)
	}
	for _, m := range mods {
		deps, err := depends(m.Path)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range deps {
			if dp, ok := pos[d]; ok && dp > pos[m.Name] {
				t.Errorf("%s loads before its dependency %s", m.Name, d)
			}
		}
	}
}

// TestCheckTestKernel checks that the test kernel is a bootable ELF with a
// PVH entry point, and that a truncated image is refused.
func TestCheckTestKernel(t *testing.T) {
	k, err := Find()
	testenv.NoErr(t, err, "make kernel fetches the test kernel")
	b, err := os.ReadFile(k.Vmlinux)
	if err != nil {
		t.Fatal(err)
	}
	if err := Check(b); err != nil {
		t.Errorf("Check(%s): %v", k.Vmlinux, err)
	}
	if err := Check(b[:len(b)/2]); err == nil {
		t.Errorf("Check accepted a truncated image")
	}
}
