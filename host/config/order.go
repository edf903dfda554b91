package config

import (
	"fmt"
	"path/filepath"
	"strings"
)

type visit uint8

const (
	unvisited visit = iota
	visiting        // on the depth-first stack: meeting it again closes a cycle
	done
)

// linker checks the provider edges between VMs whose own directories are
// valid and puts the survivors in start order. It is a depth-first search
// from each VM to its providers, in name order: a VM is appended to the order
// once all its providers are, which makes the order topological and
// deterministic. Meeting a VM that is still on the stack closes a cycle;
// every VM on it is rejected with the cycle named from its own point of view
// ("b -> a -> b"), and every VM that needs one of them is rejected because
// its provider is invalid.
type linker struct {
	dataDir string
	names   []string            // every VM directory, valid or not, sorted
	exists  map[string]bool     // names as a set
	vms     map[string]*VM      // VMs whose own directory is valid
	errs    map[string]*VMError // rejected VMs; the first fault found wins
	state   map[string]visit
	stack   []string
	order   []string
}

func (l *linker) link() {
	for _, name := range l.names {
		if l.vms[name] != nil && l.state[name] == unvisited {
			l.visit(name)
		}
	}
}

func (l *linker) providerPath(client, provider string) string {
	return filepath.Join(l.dataDir, client, "providers", "net", provider)
}

func (l *linker) reject(name, path string, err error) {
	if l.errs[name] == nil {
		l.errs[name] = &VMError{VM: name, Path: path, Err: err}
	}
}

func (l *linker) visit(name string) {
	l.state[name] = visiting
	l.stack = append(l.stack, name)
	for _, p := range l.vms[name].Providers {
		if l.errs[name] != nil {
			break // rejected already, perhaps as part of a cycle found deeper
		}
		switch {
		case p == name:
			l.reject(name, l.providerPath(name, p), ErrSelfProvider)
			continue
		case !l.exists[p]:
			l.reject(name, l.providerPath(name, p), fmt.Errorf("%w named %q in %s", ErrNoProvider, p, l.dataDir))
			continue
		case l.state[p] == visiting:
			l.cycle(p)
			continue
		case l.vms[p] != nil && l.state[p] == unvisited:
			l.visit(p)
		}
		if l.errs[p] != nil {
			l.reject(name, l.providerPath(name, p), fmt.Errorf("%w: %s", ErrProviderInvalid, p))
		}
	}
	l.stack = l.stack[:len(l.stack)-1]
	l.state[name] = done
	if l.errs[name] == nil {
		l.order = append(l.order, name)
	}
}

// cycle rejects every VM on the stack from start to its top: the top names
// start as a provider, which closes the cycle.
func (l *linker) cycle(start string) {
	i := len(l.stack) - 1
	for l.stack[i] != start {
		i--
	}
	ring := l.stack[i:]
	for k, name := range ring {
		names := make([]string, 0, len(ring)+1)
		names = append(names, ring[k:]...)
		names = append(names, ring[:k]...)
		names = append(names, name)
		next := names[1]
		l.reject(name, l.providerPath(name, next), fmt.Errorf("%w: %s", ErrCycle, strings.Join(names, " -> ")))
	}
}
