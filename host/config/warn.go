package config

import (
	"io/fs"
	"path/filepath"
	"slices"
	"strings"

	"spectrum-os.org/netcfg/internal/printable"
)

// Warning is an entry of a VM's directory that spectrumd does not use: one
// it does not know (often a typo of one it does: provider/net for
// providers/net, and the VM would start with no network), or a file in
// blk/ that is not a *.img disk image. The VM is loaded all the same: the
// reference documentation allows other files.
type Warning struct {
	Path string // the entry, under the data directory as given to Load
	Msg  string // why it is not used, and the nearest known name when one is near
}

// String is the warning as it is shown, the path escaped (printable.String):
// a file's name is anyone's to choose.
func (w Warning) String() string {
	return printable.String(w.Path) + ": " + printable.String(w.Msg)
}

// layout is what spectrumd reads of a VM's directory: each entry of its
// top level and, for a directory whose entries have fixed names, those.
// (The entries of blk/, providers/net/, uplinks/net/ and uplinks/pci/ are
// named by the user; their loaders check them.)
var layout = []struct {
	name string
	sub  []string
}{
	{"vmlinux", nil},
	{"blk", nil},
	{"initramfs", nil},
	{"cmdline", nil},
	{"providers", []string{"net"}},
	{"uplinks", []string{"net", "pci"}},
}

// knownPaths are every name layout gives, as paths: vmlinux, blk,
// providers, providers/net, ...
func knownPaths() []string {
	var out []string
	for _, e := range layout {
		out = append(out, e.name)
		for _, s := range e.sub {
			out = append(out, e.name+"/"+s)
		}
	}
	return out
}

// unknownEntries warns about each entry of the VM's directory (root, listed
// as ents) and of its providers/ and uplinks/ that layout does not name,
// unless the VM uses it: a symlink's target inside the directory (vmlinux
// -> real/kernel) is used. vm is the VM as loaded, or nil when it is
// invalid (then only the targets of the top-level symlinks count). An
// unknown directory is listed too, so that provider/net is matched with
// providers/net as a whole. What cannot be listed is left to the loaders,
// which say why. rec records each directory listed, so that an entry added
// later is seen at the next reload.
func unknownEntries(root string, ents map[string]fs.FileMode, vm *VM, rec *deps, warn func(rel, msg string)) {
	used := map[string]bool{}
	mark := func(real string) {
		if rel, err := filepath.Rel(root, real); err == nil && filepath.IsLocal(rel) {
			first, _, _ := strings.Cut(rel, string(filepath.Separator))
			used[first] = true
		}
	}
	if vm != nil {
		mark(vm.Kernel)
		mark(vm.Initramfs)
		for _, img := range vm.Images {
			mark(img)
		}
	}
	for _, n := range sortedKeys(ents) {
		if ents[n]&fs.ModeSymlink != 0 && layoutIndex(n) >= 0 {
			if real, _, err := follow(root, filepath.Join(root, n), ents[n], rec); err == nil {
				mark(real)
			}
		}
	}
	for _, n := range sortedKeys(ents) {
		i := layoutIndex(n)
		if i < 0 {
			if !used[n] {
				unknownTop(root, n, ents[n], rec, warn)
			}
			continue
		}
		sub := layout[i].sub
		if sub == nil {
			continue
		}
		dir, mode, err := follow(root, filepath.Join(root, n), ents[n], rec)
		if err != nil || !mode.IsDir() {
			continue
		}
		rec.stat(dir)
		kids, err := readDir(dir)
		if err != nil {
			continue
		}
		for _, k := range sortedKeys(kids) {
			if !slices.Contains(sub, k) {
				rel := n + "/" + k
				warn(rel, unknownMsg(rel, knownPaths()))
			}
		}
	}
}

// unknownTop warns about the unknown top-level entry n. A directory (not a
// symlink: its target is not looked at) is matched by its entries too.
func unknownTop(root, n string, typ fs.FileMode, rec *deps, warn func(rel, msg string)) {
	if typ.IsDir() {
		p := filepath.Join(root, n)
		rec.stat(p)
		if kids, err := readDir(p); err == nil {
			// The entry of the directory nearest to a known path, if one is
			// near: provider/net is a typo of providers/net.
			best, bestRel, bestD := "", "", -1
			for _, k := range sortedKeys(kids) {
				rel := n + "/" + k
				if near, d := nearest(rel, knownPaths()); near != "" && (bestD < 0 || d < bestD) {
					best, bestRel, bestD = near, rel, d
				}
			}
			if best != "" {
				warn(bestRel, "unknown entry, not used: did you mean "+best+"?")
				return
			}
		}
	}
	warn(n, unknownMsg(n, knownPaths()))
}

func unknownMsg(rel string, known []string) string {
	if near, _ := nearest(rel, known); near != "" {
		return "unknown entry, not used: did you mean " + near + "?"
	}
	return "unknown entry, not used (spectrumd reads " + strings.Join(known, ", ") + ")"
}

func layoutIndex(n string) int {
	for i, e := range layout {
		if e.name == n {
			return i
		}
	}
	return -1
}

// nearest returns the name of known nearest to s by edit distance, ignoring
// case, and the distance; "" when none is near enough to be a typo of s (at
// most 2 edits, or a third of the name's length).
func nearest(s string, known []string) (string, int) {
	best, bestD := "", -1
	ls := strings.ToLower(s)
	for _, k := range known {
		d := editDistance(ls, strings.ToLower(k))
		if d <= max(2, len(k)/3) && (bestD < 0 || d < bestD) {
			best, bestD = k, d
		}
	}
	return best, bestD
}

// editDistance is the Levenshtein distance of a and b, in bytes. Names
// longer than maxEdit bytes are too far from any known name to compare.
func editDistance(a, b string) int {
	const maxEdit = 64
	if len(a) > maxEdit || len(b) > maxEdit {
		return maxEdit
	}
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			sub := prev[j-1]
			if a[i-1] != b[j-1] {
				sub++
			}
			cur[j] = min(sub, prev[j]+1, cur[j-1]+1)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
