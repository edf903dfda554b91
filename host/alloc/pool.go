package alloc

import (
	"math/bits"

	"spectrum-os.org/netcfg/internal/mac"
)

// pool is a bitmap of the 65,536 ids of which the ids outside
// [mac.MinLinkID, mac.MaxLinkID] count as taken. The zero value is an empty
// pool.
type pool struct {
	w [1 << 16 / 64]uint64
	n int // ids taken
}

func (p *pool) has(id mac.LinkID) bool {
	if id.Valid() != nil {
		return true
	}
	return p.w[id/64]&(1<<(id%64)) != 0
}

func (p *pool) set(id mac.LinkID) {
	if !p.has(id) {
		p.w[id/64] |= 1 << (id % 64)
		p.n++
	}
}

// firstFree returns the first free id at or after from, wrapping around.
// The caller has made sure one is free.
func (p *pool) firstFree(from mac.LinkID) mac.LinkID {
	// The reserved ids never count as free.
	masked := func(i int) uint64 {
		w := p.w[i]
		if i == 0 {
			w |= 1 << (mac.MinLinkID - 1)
		}
		if i == len(p.w)-1 {
			w |= 1 << 63
		}
		return w
	}
	i := int(from / 64)
	free := ^masked(i) &^ (1<<(from%64) - 1)
	for range len(p.w) + 1 {
		if free != 0 {
			return mac.LinkID(i*64 + bits.TrailingZeros64(free))
		}
		i = (i + 1) % len(p.w)
		free = ^masked(i)
	}
	panic("alloc: no free link id; the caller checks the count first")
}
