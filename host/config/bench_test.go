package config

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"spectrum-os.org/netcfg/internal/benchcpu"
)

// bench1000 builds 1,000 VM directories: one network VM, 999 clients of it,
// each with a kernel, two images and a cmdline.
func bench1000(b *testing.B) string {
	dir := filepath.Join(b.TempDir(), "data")
	tr := tree{}.vm("netvm")
	for i := range 999 {
		name := fmt.Sprintf("appvm-%03d", i)
		tr.vm(name, "netvm")
		tr[name+"/blk/home.img"] = "x"
		tr[name+"/cmdline"] = "console=ttyS0\n"
	}
	tr.build(b, dir)
	return dir
}

func checkBench(b *testing.B, cfg *Config) {
	if len(cfg.Errors) != 0 || len(cfg.Order) != 1000 {
		b.Fatalf("%d VMs, errors %v", len(cfg.Order), cfg.Errors)
	}
}

// BenchmarkLoad1000 loads and validates 1,000 VM directories.
func BenchmarkLoad1000(b *testing.B) {
	dir := bench1000(b)
	benchcpu.Report(b)
	for b.Loop() {
		checkBench(b, Load(dir))
	}
}

// BenchmarkReloadUnchanged1000 reloads 1,000 VM directories through a Loader
// when none changed: a listing of the data directory and a status of each
// path the VMs' validation looked at (5 per VM here).
func BenchmarkReloadUnchanged1000(b *testing.B) {
	dir := bench1000(b)
	l := NewLoader(dir)
	l.window = 0 // the tree was just written: trust it at once
	l.Load()
	benchcpu.Report(b)
	for b.Loop() {
		checkBench(b, l.Load())
	}
	if l.validated != 0 {
		b.Fatalf("the last reload read %d VM directories again", l.validated)
	}
}

// BenchmarkReloadOneChanged1000 reloads 1,000 VM directories through a
// Loader after one VM's cmdline changed. The Loader is as spectrumd uses it
// (racyWindow included): the VM changed is read again, and so is any other
// VM changed within racyWindow, which here is the same one.
func BenchmarkReloadOneChanged1000(b *testing.B) {
	dir := bench1000(b)
	l := NewLoader(dir)
	l.window = 0 // the tree was just written: trust it at once
	l.Load()
	l.window = racyWindow
	cmdline := filepath.Join(dir, "appvm-500", "cmdline")
	i := 0
	benchcpu.Report(b)
	for b.Loop() {
		b.StopTimer()
		i++
		if err := os.WriteFile(cmdline, fmt.Appendf(nil, "console=ttyS0 quiet loglevel=%d\n", i%8), 0o644); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		cfg := l.Load()
		checkBench(b, cfg)
		if l.validated != 1 {
			b.Fatalf("reload read %d VM directories again, want 1", l.validated)
		}
		if want := fmt.Sprintf("console=ttyS0 quiet loglevel=%d", i%8); cfg.VMs["appvm-500"].Cmdline != want {
			b.Fatalf("cmdline %q, want %q", cfg.VMs["appvm-500"].Cmdline, want)
		}
	}
}
