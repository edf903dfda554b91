package guest_test

import (
	"debug/elf"
	"os"
	"testing"
)

// maxBinarySize is the guest agent's size budget: 2.5 MiB, stripped (the
// router, guest/router, and google/nftables included).
const maxBinarySize = 2_621_440

// TestBinaryStaticAndSmall checks the binary TestMain built with the guest's
// flags: it must run in an initramfs with no dynamic loader or libraries,
// and fit its size budget.
func TestBinaryStaticAndSmall(t *testing.T) {
	fi, err := os.Stat(agentBin)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s: %d bytes (budget %d, %d to spare)", agentBin, fi.Size(), maxBinarySize, maxBinarySize-fi.Size())
	if fi.Size() > maxBinarySize {
		t.Errorf("binary is %d bytes, over the %d-byte budget", fi.Size(), maxBinarySize)
	}
	f, err := elf.Open(agentBin)
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

// BenchmarkBinarySize reports the size of the agent TestMain built with the
// Makefile's flags, so make bench's document shows it; the budget is
// TestBinaryStaticAndSmall's.
func BenchmarkBinarySize(b *testing.B) {
	fi, err := os.Stat(agentBin)
	if err != nil {
		b.Fatal(err)
	}
	for range b.N {
	}
	b.ReportMetric(float64(fi.Size()), "bytes")
	b.ReportMetric(float64(maxBinarySize-fi.Size()), "bytes-to-spare")
}
