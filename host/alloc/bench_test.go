package alloc

import (
	"testing"

	"spectrum-os.org/netcfg/internal/benchcpu"
	"spectrum-os.org/netcfg/internal/mac"
)

// BenchmarkFullPool assigns all 65,534 ids to new pairs from empty, in
// memory (the time to plan and commit, not to write the state).
func BenchmarkFullPool(b *testing.B) {
	all := pairs(mac.NumLinkIDs, "")
	benchcpu.Report(b)
	for b.Loop() {
		a := open(b, "")
		if _, err := a.Sync(all, nil); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkFullPoolPersisted is BenchmarkFullPool plus writing the 65,534
// links to the state file (fsync included).
func BenchmarkFullPoolPersisted(b *testing.B) {
	all := pairs(mac.NumLinkIDs, "")
	benchcpu.Report(b)
	for b.Loop() {
		a := open(b, b.TempDir())
		if _, err := a.Sync(all, nil); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkReloadOneChanged is one reload of a host with 1,000 VMs (one
// network VM and 999 clients) where one VM changed its provider: the new
// assignment, computed and persisted (fsync included).
func BenchmarkReloadOneChanged(b *testing.B) {
	a := open(b, b.TempDir())
	ps := pairs(999, "")
	ps = append(ps, Pair{"vpn", "netvm"})
	if _, err := a.Sync(ps, nil); err != nil {
		b.Fatal(err)
	}
	i := 0
	benchcpu.Report(b)
	for b.Loop() {
		// appvm 0 alternates between netvm and vpn as its provider.
		if i++; i%2 == 1 {
			ps[0].Provider = "vpn"
		} else {
			ps[0].Provider = "netvm"
		}
		if _, err := a.Sync(ps, nil); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkReloadUnchanged(b *testing.B) {
	a := open(b, b.TempDir())
	ps := pairs(1000, "")
	if _, err := a.Sync(ps, nil); err != nil {
		b.Fatal(err)
	}
	benchcpu.Report(b)
	for b.Loop() {
		if _, err := a.Sync(ps, nil); err != nil {
			b.Fatal(err)
		}
	}
}
