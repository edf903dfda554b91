package alloc

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// FuzzState feeds arbitrary bytes to Open as the state file: Open must not
// fail or panic, every id it keeps must be valid and unique, and after a Sync
// the file it writes must read back as exactly what it holds.
func FuzzState(f *testing.F) {
	f.Add([]byte(`{"version":1,"links":[
{"client":"appvm-lynx","provider":"netvm","id":"a5:46"}
]}`))
	f.Add([]byte(`{"version":1,"links":[{"client":"a","provider":"b","id":"00:01"},{"client":"a","provider":"b","id":"00:02"},{"client":"c","provider":"d","id":"00:01"}]}`))
	f.Add([]byte(`{"version":1,"links":[{"client":"a\u0000","provider":"\"","id":"FF:fe"}]}`))
	f.Add([]byte(`{"version":2}`))
	f.Add([]byte(``))
	f.Fuzz(func(t *testing.T, b []byte) {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, StateFile), b, 0o600); err != nil {
			t.Fatal(err)
		}
		a, err := Open(dir, nil)
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		links := a.Links()
		var held []Link
		seen := map[Pair]bool{}
		for _, l := range links {
			if err := l.ID.Valid(); err != nil || checkPair(l.Pair) != nil || seen[l.Pair] {
				t.Fatalf("kept %+v", l)
			}
			seen[l.Pair] = true
			held = append(held, l)
		}
		got, err := a.Sync([]Pair{{"new", "netvm"}}, held)
		if err != nil {
			t.Fatalf("Sync keeping what Open read: %v", err)
		}
		back, err := Open(dir, nil)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(got, back.Links()); diff != "" {
			t.Errorf("state read back (-wrote +read):\n%s", diff)
		}
	})
}
