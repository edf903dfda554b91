package cli

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"spectrum-os.org/netcfg/host/alloc"
	"spectrum-os.org/netcfg/host/config"
	"spectrum-os.org/netcfg/internal/benchcpu"
)

// BenchmarkReloadOneChanged is a whole reload as the daemon does it at
// every start (serve's configSource: a config.Loader that re-reads only the
// VM directories that changed, then Allocator.Sync with the state written)
// of a data directory of 100 or 1,000 VMs in which one VM changed provider
// since the last. The allocator's share alone is host/alloc's
// BenchmarkReloadOneChanged; the loader's, host/config's.
func BenchmarkReloadOneChanged(b *testing.B) {
	for _, n := range []int{100, 1000} {
		b.Run(fmt.Sprintf("vms=%d", n), func(b *testing.B) { benchmarkReload(b, n) })
	}
}

func benchmarkReload(b *testing.B, n int) {
	dir := b.TempDir()
	data := filepath.Join(dir, "data")
	writeVMs(b, data, n)
	a, err := alloc.Open(filepath.Join(dir, "state"), nil)
	if err != nil {
		b.Fatal(err)
	}
	src := &configSource{loader: config.NewLoader(data), alloc: a}
	// The loader does not keep what changed in the last few seconds (the
	// file system's clock may not have ticked): let the tree settle first.
	time.Sleep(3500 * time.Millisecond)
	if _, _, err := src.Load(nil); err != nil {
		b.Fatal(err)
	}
	net := filepath.Join(data, "appvm-000", "providers", "net")
	i := 0
	benchcpu.Report(b)
	for b.Loop() {
		// appvm-000 alternates between netvm and vpn as its provider.
		b.StopTimer()
		from, to := "netvm", "vpn"
		if i++; i%2 == 0 {
			from, to = to, from
		}
		if err := os.Rename(filepath.Join(net, from), filepath.Join(net, to)); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		cfg, _, err := src.Load(nil)
		if err != nil {
			b.Fatal(err)
		}
		if len(cfg.Errors) != 0 {
			b.Fatal(cfg.Errors)
		}
	}
}

// writeVMs writes n VMs: netvm, vpn (a client of netvm) and n-2 clients of
// netvm named appvm-000 on.
func writeVMs(b *testing.B, data string, n int) {
	for i := range n {
		name, providers := fmt.Sprintf("appvm-%03d", i), []string{"netvm"}
		switch i {
		case n - 1:
			name, providers = "netvm", nil
		case n - 2:
			name = "vpn"
		}
		for f, body := range map[string][]byte{"vmlinux": elfHeader(), "blk/root.img": []byte("x")} {
			p := filepath.Join(data, name, f)
			os.MkdirAll(filepath.Dir(p), 0o755)
			if err := os.WriteFile(p, body, 0o644); err != nil {
				b.Fatal(err)
			}
		}
		for _, p := range providers {
			os.MkdirAll(filepath.Join(data, name, "providers", "net"), 0o755)
			if err := os.WriteFile(filepath.Join(data, name, "providers", "net", p), nil, 0o644); err != nil {
				b.Fatal(err)
			}
		}
	}
}
