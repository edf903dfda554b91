package alloc

import (
	"slices"
	"strings"

	"spectrum-os.org/netcfg/internal/mac"
)

// The orders the allocator works in: pairs by name, links by id, new pairs
// by home. They depend only on the sets ordered, never on the order a caller
// listed things in.

func comparePairs(a, b Pair) int {
	if c := strings.Compare(a.Client, b.Client); c != 0 {
		return c
	}
	return strings.Compare(a.Provider, b.Provider)
}

// smallSort is the size below which a comparison sort beats clearing the
// counting sorts' 256 KiB tables.
const smallSort = 4096

// sorted returns the links in ids sorted by id. Ids are unique and small, so
// a counting sort does it in linear time: sorting a full pool by pair takes
// longer than assigning it.
func sorted(ids map[Pair]mac.LinkID) []Link {
	if len(ids) < smallSort {
		out := make([]Link, 0, len(ids))
		for p, id := range ids {
			out = append(out, Link{Pair: p, ID: id})
		}
		slices.SortFunc(out, func(a, b Link) int { return int(a.ID) - int(b.ID) })
		return out
	}
	var at [1 << 16]int32 // index+1 of the link with each id
	tmp := make([]Link, 0, len(ids))
	for p, id := range ids {
		tmp = append(tmp, Link{Pair: p, ID: id})
		at[id] = int32(len(tmp))
	}
	out := make([]Link, 0, len(ids))
	for _, i := range at {
		if i != 0 {
			out = append(out, tmp[i-1])
		}
	}
	return out
}

// byHome returns ps without duplicates, ordered by home and then by pair: an
// order that depends only on the set of pairs, reached with a counting sort.
func byHome(ps []Pair) []Pair {
	if len(ps) < smallSort {
		slices.SortFunc(ps, func(a, b Pair) int {
			if c := int(home(a)) - int(home(b)); c != 0 {
				return c
			}
			return comparePairs(a, b)
		})
		return slices.Compact(ps)
	}
	var start [1<<16 + 1]int32
	homes := make([]mac.LinkID, len(ps))
	for i, p := range ps {
		homes[i] = home(p)
		start[homes[i]+1]++
	}
	for i := 1; i < len(start); i++ {
		start[i] += start[i-1]
	}
	out := make([]Pair, len(ps))
	next := start
	for i, p := range ps {
		out[next[homes[i]]] = p
		next[homes[i]]++
	}
	for h := range 1 << 16 {
		if run := out[start[h]:start[h+1]]; len(run) > 1 {
			slices.SortFunc(run, comparePairs)
		}
	}
	return slices.Compact(out)
}
