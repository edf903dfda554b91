package config

import (
	"fmt"
	"path/filepath"
	"testing"
)

// BenchmarkLoad1000 loads and validates 1,000 VM directories: one network
// VM, 999 clients of it, each with a kernel, two images and a cmdline.
func BenchmarkLoad1000(b *testing.B) {
	dir := filepath.Join(b.TempDir(), "data")
	tr := tree{}.vm("netvm")
	for i := range 999 {
		name := fmt.Sprintf("appvm-%03d", i)
		tr.vm(name, "netvm")
		tr[name+"/blk/home.img"] = "x"
		tr[name+"/cmdline"] = "console=ttyS0\n"
	}
	tr.build(b, dir)
	reportCPU(b)
	for b.Loop() {
		cfg := Load(dir)
		if len(cfg.Errors) != 0 || len(cfg.Order) != 1000 {
			b.Fatalf("%d VMs, errors %v", len(cfg.Order), cfg.Errors)
		}
	}
}
