// Package leakcheck measures, for tests, what a long-running component
// could leak: goroutines, open files, heap and disk. Tests take a figure
// before a run of cycles and compare after; the functions that wait give
// work that is still winding down time to end, so only a real leak fails.
package leakcheck

import (
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"
)

// OpenFDs counts this process's open file descriptors.
func OpenFDs(t testing.TB) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// SettleGoroutines waits up to within for the process to run at most base
// goroutines and returns the count it saw last.
func SettleGoroutines(base int, within time.Duration) int {
	deadline := time.Now().Add(within)
	n := runtime.NumGoroutine()
	for n > base && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
		n = runtime.NumGoroutine()
	}
	return n
}

// HeapInuse is the heap in use after a garbage collection, in bytes.
func HeapInuse() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse
}

// DirSize is the total size of the regular files under dir, in bytes.
func DirSize(t testing.TB, dir string) int64 {
	t.Helper()
	var total int64
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() {
			info, err := d.Info()
			if err != nil {
				return err
			}
			total += info.Size()
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return total
}

// SettleFDs waits up to within for the process to hold at most base open
// file descriptors and returns the count it saw last.
func SettleFDs(t testing.TB, base int, within time.Duration) int {
	t.Helper()
	deadline := time.Now().Add(within)
	n := OpenFDs(t)
	for n > base && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
		n = OpenFDs(t)
	}
	return n
}
