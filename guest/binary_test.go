package guest_test

import (
	"debug/elf"
	"os"
	"testing"
)

// maxBinarySize is the init hook's size budget: 2.25 MiB, stripped. Every
// guest carries it; the router is a program of its own so that it does not.
const maxBinarySize = 2_359_296

// maxRouterSize is spectrum-router's guide, 4 MiB stripped: only providers
// carry it, in their root or initramfs.
const maxRouterSize = 4 << 20

// TestBinaryStaticAndSmall checks the binaries TestMain built with the
// guest's flags: they must run in an initramfs with no dynamic loader or
// libraries, and fit their size budgets.
func TestBinaryStaticAndSmall(t *testing.T) {
	t.Run("spectrum-netcfg", func(t *testing.T) { checkStaticAndSmall(t, agentBin, maxBinarySize) })
	t.Run("spectrum-router", func(t *testing.T) { checkStaticAndSmall(t, routerBin, maxRouterSize) })
}

func checkStaticAndSmall(t *testing.T, bin string, budget int64) {
	fi, err := os.Stat(bin)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s: %d bytes (budget %d, %d to spare)", bin, fi.Size(), budget, budget-fi.Size())
	if fi.Size() > budget {
		t.Errorf("binary is %d bytes, over the %d-byte budget", fi.Size(), budget)
	}
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Error("binary has a PT_INTERP program header: it is dynamically linked")
		}
		if p.Type == elf.PT_DYNAMIC {
			t.Error("binary has a PT_DYNAMIC program header")
		}
	}
	libs, err := f.ImportedLibraries()
	if err != nil {
		t.Fatal(err)
	}
	if len(libs) != 0 {
		t.Errorf("binary needs shared libraries (DT_NEEDED): %v", libs)
	}
	if f.Section(".symtab") != nil {
		t.Error("binary has a symbol table: it was not built with -ldflags=-s")
	}
}

// BenchmarkBinarySize reports the size of the hook TestMain built with the
// Makefile's flags, so make bench's document shows it; the budget is
// TestBinaryStaticAndSmall's.
func BenchmarkBinarySize(b *testing.B) { reportSize(b, agentBin, maxBinarySize) }

// BenchmarkRouterBinarySize is BenchmarkBinarySize for spectrum-router.
func BenchmarkRouterBinarySize(b *testing.B) { reportSize(b, routerBin, maxRouterSize) }

func reportSize(b *testing.B, bin string, budget int64) {
	fi, err := os.Stat(bin)
	if err != nil {
		b.Fatal(err)
	}
	for range b.N {
	}
	b.ReportMetric(float64(fi.Size()), "bytes")
	b.ReportMetric(float64(budget-fi.Size()), "bytes-to-spare")
}
