// Package alloc assigns every (client, provider) pair a stable link id and
// persists the assignments in the state directory. It knows nothing of QEMU
// or netlink and nothing of the MAC layout beyond mac.LinkID.
//
// An id, once assigned, stays with its pair for as long as the pair is in the
// configuration or held by a running VM, across reloads and spectrumd
// restarts (the state file). A new pair starts probing at an id derived from
// a hash of its two names and takes the first free id from there, wrapping
// around: the ids are spread over the pool, a pair whose id was released
// usually gets the same id back, and if the state file is lost most pairs get
// their old ids again. The search is over a bitmap of the whole pool, so
// churn never exhausts it: a released id is free at once.
package alloc

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"maps"
	"os"
	"slices"
	"strings"
	"sync"
	"unicode/utf8"

	"spectrum-os.org/netcfg/host/config"
	"spectrum-os.org/netcfg/internal/mac"
)

// Pair is one network link: Client gets networking from Provider.
type Pair struct {
	Client   string
	Provider string
}

// Link is a pair with its assigned id. The client NIC's MAC is
// ID.MAC(mac.Client), the provider's ID.MAC(mac.Provider).
type Link struct {
	Pair
	ID mac.LinkID
}

// ErrPoolFull is returned (wrapped) when the pairs need more than the
// mac.NumLinkIDs ids there are.
var ErrPoolFull = errors.New("link id pool is full")

// Allocator keeps the link ids of a host. It is safe for concurrent use.
type Allocator struct {
	path string       // the state file; "" keeps the ids in memory only
	log  *slog.Logger // never nil

	mu      sync.Mutex
	ids     map[Pair]mac.LinkID // every assigned link; ids are unique
	corrupt bool                // the state file could not be read: keep it aside before the first save
}

// Pairs returns every (client, provider) pair of the valid VMs of cfg, in
// start order of the clients and then by provider name.
func Pairs(cfg *config.Config) []Pair {
	var out []Pair
	for _, name := range cfg.Order {
		for _, p := range cfg.VMs[name].Providers {
			out = append(out, Pair{Client: name, Provider: p})
		}
	}
	return out
}

// Sync makes the assignments cover exactly pairs and held, persists them if
// they changed, and returns every link it keeps, sorted by id.
//
// held are the links of running VMs: each keeps exactly its id, whether or
// not its pair is still in pairs and whatever the state file said (it may
// have been lost). A pair in pairs keeps the id it had; a new one gets a free
// id. An id whose pair is in neither is released: pass a removed VM's links
// in held until the VM has stopped.
//
// Nothing changes when Sync fails: held contradicts itself (two ids for one
// pair, one id for two pairs, an id that can never be assigned), a pair is
// malformed, the pool is full (ErrPoolFull), or the state file cannot be
// written. A new id is on disk before Sync returns it, so no VM can use an id
// that a restart would forget.
func (a *Allocator) Sync(pairs []Pair, held []Link) ([]Link, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	next, err := a.plan(pairs, held)
	if err != nil {
		return nil, err
	}
	if maps.Equal(next, a.ids) {
		return sorted(next), nil
	}
	if a.path != "" {
		if a.corrupt {
			// Kept for whoever wants to know what went wrong.
			if err := os.Rename(a.path, a.path+".corrupt"); err != nil && !errors.Is(err, fs.ErrNotExist) {
				a.log.Warn("cannot keep the corrupt link id state aside", "err", err)
			}
			a.corrupt = false
		}
		if err := save(a.path, next); err != nil {
			return nil, err
		}
	}
	a.logChanges(next)
	a.ids = next
	return sorted(next), nil
}

// Plan returns what Sync would return for the same arguments, without
// changing the assignments or writing anything: a dry run.
func (a *Allocator) Plan(pairs []Pair, held []Link) ([]Link, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	next, err := a.plan(pairs, held)
	if err != nil {
		return nil, err
	}
	return sorted(next), nil
}

// Lookup returns the id assigned to p.
func (a *Allocator) Lookup(p Pair) (mac.LinkID, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	id, ok := a.ids[p]
	return id, ok
}

// Links returns every assigned link, sorted by id.
func (a *Allocator) Links() []Link {
	a.mu.Lock()
	defer a.mu.Unlock()
	return sorted(a.ids)
}

func (a *Allocator) plan(pairs []Pair, held []Link) (map[Pair]mac.LinkID, error) {
	next := make(map[Pair]mac.LinkID, len(pairs)+len(held))
	var used pool
	for _, l := range held {
		if err := checkPair(l.Pair); err != nil {
			return nil, err
		}
		if err := l.ID.Valid(); err != nil {
			return nil, fmt.Errorf("held link %s -> %s: id %v: %w", l.Client, l.Provider, l.ID, err)
		}
		if id, ok := next[l.Pair]; ok {
			if id != l.ID {
				return nil, fmt.Errorf("held link %s -> %s has two ids, %v and %v", l.Client, l.Provider, id, l.ID)
			}
			continue
		}
		if used.has(l.ID) {
			return nil, fmt.Errorf("held link id %v is held by two pairs, one of them %s -> %s", l.ID, l.Client, l.Provider)
		}
		next[l.Pair] = l.ID
		used.set(l.ID)
	}
	// Pairs keep their ids first, so that no new pair can take one.
	fresh := make([]Pair, 0, len(pairs))
	for _, p := range pairs {
		if _, ok := next[p]; ok {
			continue
		}
		if err := checkPair(p); err != nil {
			return nil, err
		}
		if id, ok := a.ids[p]; ok && !used.has(id) {
			next[p] = id
			used.set(id)
			continue
		}
		fresh = append(fresh, p)
	}
	// In a fixed order, so that the same pairs get the same ids whatever
	// order the caller listed them in.
	fresh = byHome(fresh)
	if free := mac.NumLinkIDs - used.n; len(fresh) > free {
		return nil, fmt.Errorf("%w: %d new links, %d ids free of %d", ErrPoolFull, len(fresh), free, mac.NumLinkIDs)
	}
	for _, p := range fresh {
		id := used.firstFree(home(p))
		next[p] = id
		used.set(id)
	}
	return next, nil
}

func checkPair(p Pair) error {
	switch {
	case p.Client == "" || p.Provider == "" || p.Client == p.Provider:
		return fmt.Errorf("link %q -> %q: a link joins two named VMs", p.Client, p.Provider)
	case !utf8.ValidString(p.Client+p.Provider) || strings.ContainsRune(p.Client+p.Provider, 0):
		return fmt.Errorf("link %q -> %q: names must be UTF-8 without NUL", p.Client, p.Provider)
	}
	return nil
}

// home is where the search for p's id starts: a hash of the pair, so ids are
// spread over the pool and a pair finds its old id again when it is free.
func home(p Pair) mac.LinkID {
	// FNV-1a, 64 bits, of client NUL provider: names never hold NUL, so
	// "ab"+"c" and "a"+"bc" differ. Written out to hash without allocating.
	const offset, prime = 14695981039346656037, 1099511628211
	h := uint64(offset)
	for i := 0; i < len(p.Client); i++ {
		h = (h ^ uint64(p.Client[i])) * prime
	}
	h *= prime // ^ 0
	for i := 0; i < len(p.Provider); i++ {
		h = (h ^ uint64(p.Provider[i])) * prime
	}
	return mac.MinLinkID + mac.LinkID(h%uint64(mac.NumLinkIDs))
}

// logChanges logs every id released and assigned by a Sync from a.ids to
// next, in pair order.
func (a *Allocator) logChanges(next map[Pair]mac.LinkID) {
	ctx := context.Background()
	if !a.log.Enabled(ctx, slog.LevelInfo) {
		return
	}
	var released, assigned []Link
	for p, id := range a.ids {
		if n, ok := next[p]; !ok || n != id {
			released = append(released, Link{Pair: p, ID: id})
		}
	}
	for p, id := range next {
		if o, ok := a.ids[p]; !ok || o != id {
			assigned = append(assigned, Link{Pair: p, ID: id})
		}
	}
	byPair := func(a, b Link) int { return comparePairs(a.Pair, b.Pair) }
	slices.SortFunc(released, byPair)
	slices.SortFunc(assigned, byPair) // the log reads best by VM
	for _, l := range released {
		a.log.Info("link id released", "client", l.Client, "provider", l.Provider, "id", l.ID.String())
	}
	for _, l := range assigned {
		a.log.Info("link id assigned", "client", l.Client, "provider", l.Provider, "id", l.ID.String(),
			"client_mac", l.ID.MAC(mac.Client).String(), "provider_mac", l.ID.MAC(mac.Provider).String())
	}
}
