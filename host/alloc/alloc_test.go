package alloc

import (
	"bytes"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"

	"spectrum-os.org/netcfg/host/config"
	"spectrum-os.org/netcfg/internal/mac"
)

func open(t testing.TB, dir string) *Allocator {
	t.Helper()
	a, err := Open(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func sync1(t testing.TB, a *Allocator, pairs []Pair, held []Link) map[Pair]mac.LinkID {
	t.Helper()
	links, err := a.Sync(pairs, held)
	if err != nil {
		t.Fatal(err)
	}
	m := map[Pair]mac.LinkID{}
	seen := map[mac.LinkID]bool{}
	for _, l := range links {
		if err := l.ID.Valid(); err != nil {
			t.Fatalf("%v: %v", l, err)
		}
		if seen[l.ID] {
			t.Fatalf("id %v assigned twice", l.ID)
		}
		seen[l.ID] = true
		m[l.Pair] = l.ID
	}
	return m
}

func pairs(n int, prefix string) []Pair {
	out := make([]Pair, n)
	for i := range out {
		out[i] = Pair{Client: fmt.Sprintf("%sapp%d", prefix, i), Provider: "netvm"}
	}
	return out
}

// files lists dir, to see that no temporary file is left.
func files(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}

func TestStable(t *testing.T) {
	dir := t.TempDir()
	a := open(t, dir)
	lynx := Pair{"appvm-lynx", "netvm"}
	first := sync1(t, a, append(pairs(50, "a"), lynx), nil)

	// Other VMs come and go; lynx keeps its id.
	for i := range 20 {
		got := sync1(t, a, append(pairs(30+i*10, fmt.Sprint("r", i)), lynx), nil)
		if got[lynx] != first[lynx] {
			t.Fatalf("reload %d: lynx moved from %v to %v", i, first[lynx], got[lynx])
		}
	}
	// A spectrumd restart: a new allocator on the same state.
	all := append(pairs(50, "a"), lynx)
	before := sync1(t, a, all, nil)
	b := open(t, dir)
	if got := b.Links(); len(got) != len(before) {
		t.Fatalf("after restart %d links, want %d", len(got), len(before))
	}
	after := sync1(t, b, all, nil)
	if diff := cmp.Diff(before, after); diff != "" {
		t.Errorf("ids after restart (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{StateFile}, files(t, dir)); diff != "" {
		t.Errorf("state directory (-want +got):\n%s", diff)
	}
}

func TestSameIDsWhateverTheOrder(t *testing.T) {
	ps := pairs(2000, "")
	a := sync1(t, open(t, ""), ps, nil)
	rev := make([]Pair, len(ps))
	for i, p := range ps {
		rev[len(ps)-1-i] = p
	}
	b := sync1(t, open(t, ""), rev, nil)
	if diff := cmp.Diff(a, b); diff != "" {
		t.Errorf("ids differ with the order (-want +got):\n%s", diff)
	}
}

func TestLostStateGivesMostIDsBack(t *testing.T) {
	// One allocator with a history of churn, then its state is lost: a
	// fresh allocator, given the same pairs, gives almost all the same ids,
	// because a pair's search starts at a hash of its names.
	ps := pairs(1000, "")
	a := open(t, "")
	sync1(t, a, ps[500:], nil)
	sync1(t, a, pairs(3000, "other"), nil)
	sync1(t, a, append(pairs(1000, "other"), ps[:700]...), nil)
	old := sync1(t, a, ps, nil)
	fresh := sync1(t, open(t, ""), ps, nil)
	same := 0
	for p, id := range old {
		if fresh[p] == id {
			same++
		}
	}
	if same < len(ps)*95/100 {
		t.Errorf("only %d of %d pairs got their id back from empty state", same, len(ps))
	}
	t.Logf("%d of %d pairs got their id back from empty state", same, len(ps))
}

func TestReleaseAfterStop(t *testing.T) {
	dir := t.TempDir()
	a := open(t, dir)
	gone := Pair{"old", "netvm"}
	got := sync1(t, a, []Pair{gone, {"app", "netvm"}}, nil)
	id := got[gone]

	// Removed from the configuration but still running: kept.
	held := []Link{{Pair: gone, ID: id}}
	got = sync1(t, a, []Pair{{"app", "netvm"}}, held)
	if got[gone] != id {
		t.Fatalf("held link lost its id: %v", got)
	}
	if b := open(t, dir); func() bool { _, ok := b.Lookup(gone); return !ok }() {
		t.Fatalf("held link not persisted")
	}
	// Stopped: released, and the id is free for others at once.
	got = sync1(t, a, []Pair{{"app", "netvm"}}, nil)
	if _, ok := got[gone]; ok {
		t.Fatalf("stopped, removed link kept: %v", got)
	}
	if _, ok := a.Lookup(gone); ok {
		t.Fatalf("Lookup still finds the released link")
	}
	// Reusable: a held link of another pair may claim it.
	other := Pair{"new", "netvm"}
	got = sync1(t, a, []Pair{{"app", "netvm"}, other}, []Link{{Pair: other, ID: id}})
	if got[other] != id {
		t.Errorf("released id %v not reusable: %v", id, got)
	}
	// The same pair back again gets its hash home back, which is id when
	// nothing collided.
	b := sync1(t, open(t, ""), []Pair{gone}, nil)
	if b[gone] != id {
		t.Logf("note: %v came back as %v (collision)", id, b[gone])
	}
}

func TestHeldWinsOverState(t *testing.T) {
	dir := t.TempDir()
	a := open(t, dir)
	p1, p2 := Pair{"a", "net"}, Pair{"b", "net"}
	got := sync1(t, a, []Pair{p1}, nil)
	// The state was lost while b ran with p1's id; b keeps it, p1 moves.
	got2 := sync1(t, a, []Pair{p1, p2}, []Link{{Pair: p2, ID: got[p1]}})
	if got2[p2] != got[p1] || got2[p1] == got[p1] {
		t.Errorf("held link did not win: before %v, after %v", got, got2)
	}
}

func TestSyncErrorsChangeNothing(t *testing.T) {
	p := Pair{"a", "net"}
	for _, tt := range []struct {
		name  string
		pairs []Pair
		held  []Link
		msg   string
	}{
		{name: "held id 0", held: []Link{{Pair: p, ID: 0}}, msg: "never assigned"},
		{name: "held id ffff", held: []Link{{Pair: p, ID: 0xffff}}, msg: "never assigned"},
		{name: "held pair with two ids", held: []Link{{Pair: p, ID: 1}, {Pair: p, ID: 2}}, msg: "two ids"},
		{name: "held id for two pairs", held: []Link{{Pair: p, ID: 1}, {Pair: Pair{"b", "net"}, ID: 1}}, msg: "two pairs"},
		{name: "self link", pairs: []Pair{{"a", "a"}}, msg: "two named VMs"},
		{name: "empty name", pairs: []Pair{{"", "a"}}, msg: "two named VMs"},
		{name: "NUL in a name", pairs: []Pair{{"a\x00", "b"}}, msg: "NUL"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			a := open(t, dir)
			before := sync1(t, a, []Pair{{"x", "y"}}, nil)
			if _, err := a.Sync(tt.pairs, tt.held); err == nil || !strings.Contains(err.Error(), tt.msg) {
				t.Fatalf("Sync error %v, want one saying %q", err, tt.msg)
			}
			if _, err := a.Plan(tt.pairs, tt.held); err == nil {
				t.Fatalf("Plan accepted what Sync refused")
			}
			if got := sync1(t, open(t, dir), []Pair{{"x", "y"}}, nil); !cmp.Equal(before, got) {
				t.Errorf("state changed: %v, then %v", before, got)
			}
		})
	}
}

func TestState(t *testing.T) {
	p := func(c string) string { return `{"client":"` + c + `","provider":"net","id":"00:05"}` }
	for _, tt := range []struct {
		name  string
		state *string // nil: no file
		want  map[Pair]mac.LinkID
		log   string
	}{
		{name: "missing", log: "no link id state yet"},
		{name: "empty", state: ptr(""), log: "state is empty"},
		{name: "blank", state: ptr(" \n"), log: "state is empty"},
		{name: "garbage", state: ptr("\x00\x01garbage"), log: "corrupt"},
		{name: "truncated", state: ptr(`{"version":1,"links":[` + p("a")), log: "corrupt"},
		{name: "wrong type", state: ptr(`[1,2]`), log: "corrupt"},
		{name: "unknown version", state: ptr(`{"version":7,"links":[]}`), log: "unknown version"},
		{name: "good", state: ptr(`{"version":1,"links":[` + p("a") + `]}`), want: map[Pair]mac.LinkID{{"a", "net"}: 5}},
		{
			name:  "bad entries dropped, the rest kept",
			state: ptr(`{"version":1,"links":[` + p("a") + `,` + p("b") + `,{"client":"c","provider":"net","id":"00:00"},{"client":"d","provider":"net","id":"zz"},{"client":"e","provider":"e","id":"00:09"}]}`),
			want:  map[Pair]mac.LinkID{{"a", "net"}: 5},
			log:   "dropping an entry",
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			if tt.state != nil {
				if err := os.WriteFile(filepath.Join(dir, StateFile), []byte(*tt.state), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			var logs bytes.Buffer
			a, err := Open(dir, slog.New(slog.NewTextHandler(&logs, nil)))
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(logs.String(), tt.log) {
				t.Errorf("log %q does not say %q", logs.String(), tt.log)
			}
			got := map[Pair]mac.LinkID{}
			for _, l := range a.Links() {
				got[l.Pair] = l.ID
			}
			if tt.want == nil {
				tt.want = map[Pair]mac.LinkID{}
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("links (-want +got):\n%s", diff)
			}
			// Rebuilding keeps what running VMs hold and writes a good file.
			held := []Link{{Pair: Pair{"running", "net"}, ID: 0x1234}}
			want := sync1(t, a, []Pair{{"a", "net"}, {"z", "net"}}, held)
			if want[Pair{"running", "net"}] != 0x1234 {
				t.Errorf("held id lost on rebuild: %v", want)
			}
			logs.Reset()
			b, err := Open(dir, slog.New(slog.NewTextHandler(&logs, nil)))
			if err != nil {
				t.Fatal(err)
			}
			if logs.Len() != 0 {
				t.Errorf("rewritten state still logs: %s", logs.String())
			}
			if got := sync1(t, b, []Pair{{"a", "net"}, {"z", "net"}}, held); !cmp.Equal(want, got) {
				t.Errorf("rewritten state: %v, want %v", got, want)
			}
		})
	}
}

func ptr(s string) *string { return &s }

func TestStateFileUnreadable(t *testing.T) {
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, StateFile), 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(dir, nil); err == nil {
		t.Fatal("Open succeeded with a directory as the state file")
	}
}

func TestSaveFailureChangesNothing(t *testing.T) {
	dir := t.TempDir()
	a := open(t, dir)
	before := sync1(t, a, []Pair{{"x", "y"}}, nil)
	// Make the state file's directory unusable: replace it with a file.
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dir, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Sync([]Pair{{"x", "y"}, {"new", "y"}}, nil); err == nil {
		t.Fatal("Sync succeeded without a state directory")
	}
	if _, ok := a.Lookup(Pair{"new", "y"}); ok {
		t.Error("an id that was never persisted was kept")
	}
	if got, _ := a.Lookup(Pair{"x", "y"}); got != before[Pair{"x", "y"}] {
		t.Error("existing id changed")
	}
}

func TestPlanWritesNothing(t *testing.T) {
	dir := t.TempDir()
	state := filepath.Join(dir, "state")
	a := open(t, state)
	links, err := a.Plan([]Pair{{"a", "b"}}, nil)
	if err != nil || len(links) != 1 {
		t.Fatalf("Plan = %v, %v", links, err)
	}
	if _, err := os.Stat(state); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Plan created the state directory: %v", err)
	}
	if len(a.Links()) != 0 {
		t.Errorf("Plan changed the assignments")
	}
	// What Plan shows is what Sync then assigns.
	got, err := a.Sync([]Pair{{"a", "b"}}, nil)
	if err != nil || !cmp.Equal(links, got) {
		t.Errorf("Sync = %v, %v; Plan said %v", got, err, links)
	}
}

func TestFullPool(t *testing.T) {
	dir := t.TempDir()
	a := open(t, dir)
	all := pairs(mac.NumLinkIDs, "")
	got := sync1(t, a, all, nil) // also checks every id is valid and unique
	if len(got) != mac.NumLinkIDs {
		t.Fatalf("%d links, want %d", len(got), mac.NumLinkIDs)
	}
	_, err := a.Sync(append(all, Pair{"one", "more"}), nil)
	if !errors.Is(err, ErrPoolFull) {
		t.Fatalf("Sync of one link too many: %v, want ErrPoolFull", err)
	}
	if _, ok := a.Lookup(Pair{"one", "more"}); ok || len(a.Links()) != mac.NumLinkIDs {
		t.Fatal("a failed Sync changed the assignments")
	}
	// A full pool survives a restart.
	b := open(t, dir)
	if diff := cmp.Diff(got, sync1(t, b, all, nil)); diff != "" {
		t.Errorf("after restart (-want +got):\n%s", diff)
	}
	// Swap one pair for another: the freed id is reused at once.
	swapped := append(append([]Pair{}, all[1:]...), Pair{"one", "more"})
	got2 := sync1(t, b, swapped, nil)
	if got2[Pair{"one", "more"}] != got[all[0]] {
		t.Errorf("the one free id %v went unused: %v", got[all[0]], got2[Pair{"one", "more"}])
	}
}

func TestChurnNeverExhausts(t *testing.T) {
	a := open(t, "")
	// 100 rounds of 1,000 new pairs each: 100,000 pairs over time, more
	// than the pool, with 1,000 live at once.
	for i := range 100 {
		got := sync1(t, a, pairs(1000, fmt.Sprint("round", i, "-")), nil)
		if len(got) != 1000 {
			t.Fatalf("round %d: %d links", i, len(got))
		}
	}
}

func TestConcurrentSync(t *testing.T) {
	dir := t.TempDir()
	a := open(t, dir)
	stable := Pair{"appvm-lynx", "netvm"}
	first := sync1(t, a, []Pair{stable}, nil)[stable]
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 30 {
				ps := append(pairs(20+g+i, fmt.Sprint("g", g, "-")), stable)
				links, err := a.Sync(ps, nil)
				if err != nil {
					t.Error(err)
					return
				}
				if _, err := a.Plan(ps, nil); err != nil {
					t.Error(err)
				}
				if id, ok := a.Lookup(stable); !ok || id != first {
					t.Errorf("lynx moved to %v", id)
				}
				seen := map[mac.LinkID]bool{}
				for _, l := range links {
					if seen[l.ID] {
						t.Errorf("duplicate id %v", l.ID)
					}
					seen[l.ID] = true
				}
			}
		})
	}
	wg.Wait()
	if diff := cmp.Diff([]string{StateFile}, files(t, dir)); diff != "" {
		t.Errorf("state directory after concurrent syncs (-want +got):\n%s", diff)
	}
}

func TestStateFileFormat(t *testing.T) {
	dir := t.TempDir()
	a := open(t, dir)
	held := []Link{{Pair: Pair{"appvm-lynx", "netvm"}, ID: 0xa546}, {Pair: Pair{`q"u\o`, "n\u00e9t"}, ID: 0x0001}}
	sync1(t, a, nil, held)
	b, err := os.ReadFile(filepath.Join(dir, StateFile))
	if err != nil {
		t.Fatal(err)
	}
	want := `{"version":1,"links":[
{"client":"q\"u\\o","provider":"nét","id":"00:01"},
{"client":"appvm-lynx","provider":"netvm","id":"a5:46"}
]}
`
	if diff := cmp.Diff(want, string(b)); diff != "" {
		t.Errorf("state file (-want +got):\n%s", diff)
	}
	if got := open(t, dir).Links(); !cmp.Equal(got, []Link{held[1], held[0]}) {
		t.Errorf("read back %v", got)
	}
}

func TestPairs(t *testing.T) {
	cfg := &config.Config{
		VMs: map[string]*config.VM{
			"netvm":      {Name: "netvm"},
			"vpn":        {Name: "vpn", Providers: []string{"netvm"}},
			"appvm-lynx": {Name: "appvm-lynx", Providers: []string{"netvm", "vpn"}},
		},
		Order: []string{"netvm", "vpn", "appvm-lynx"},
	}
	want := []Pair{{"vpn", "netvm"}, {"appvm-lynx", "netvm"}, {"appvm-lynx", "vpn"}}
	if diff := cmp.Diff(want, Pairs(cfg)); diff != "" {
		t.Errorf("Pairs (-want +got):\n%s", diff)
	}
}

func TestPoolFirstFreeWraps(t *testing.T) {
	var p pool
	p.set(mac.MaxLinkID)
	if got := p.firstFree(mac.MaxLinkID); got != mac.MinLinkID {
		t.Errorf("firstFree(max) = %v, want wrap to %v", got, mac.MinLinkID)
	}
	if got := p.firstFree(0); got != mac.MinLinkID {
		t.Errorf("firstFree(0) = %v", got)
	}
	for id := mac.MinLinkID; id < mac.MaxLinkID; id++ {
		p.set(id)
	}
	if p.n != mac.NumLinkIDs {
		t.Errorf("n = %d", p.n)
	}
}

func TestHomeIsFNV1a(t *testing.T) {
	// The hash is written out by hand; it must stay FNV-1a of
	// client NUL provider, or ids would move after an upgrade that lost
	// the state.
	p := Pair{"appvm-lynx", "netvm"}
	h := fnv.New64a()
	h.Write([]byte(p.Client + "\x00" + p.Provider))
	if want := mac.MinLinkID + mac.LinkID(h.Sum64()%uint64(mac.NumLinkIDs)); home(p) != want {
		t.Errorf("home(%v) = %v, want %v", p, home(p), want)
	}
}

func TestSortsAgreeAtAnySize(t *testing.T) {
	// sorted and byHome switch algorithm at smallSort; both must give the
	// same order either side of it.
	for _, n := range []int{smallSort - 1, smallSort, smallSort + 1} {
		ps := pairs(n, "s")
		ps = append(ps, ps[:10]...) // duplicates
		got := byHome(slices.Clone(ps))
		if len(got) != n {
			t.Fatalf("n=%d: byHome kept %d pairs", n, len(got))
		}
		for i := 1; i < len(got); i++ {
			a, b := got[i-1], got[i]
			if home(a) > home(b) || home(a) == home(b) && comparePairs(a, b) >= 0 {
				t.Fatalf("n=%d: byHome out of order at %d: %v %v", n, i, a, b)
			}
		}
		ids := map[Pair]mac.LinkID{}
		for i, p := range got {
			ids[p] = mac.LinkID(n - i)
		}
		links := sorted(ids)
		for i := 1; i < len(links); i++ {
			if links[i-1].ID >= links[i].ID {
				t.Fatalf("n=%d: sorted out of order at %d", n, i)
			}
		}
	}
}

func TestSaveRemovesCrashLeftovers(t *testing.T) {
	dir := t.TempDir()
	// What a crash between writing the temporary file and renaming it
	// leaves behind.
	if err := os.WriteFile(filepath.Join(dir, "."+StateFile+".tmp-123"), []byte("half"), 0o600); err != nil {
		t.Fatal(err)
	}
	a := open(t, dir)
	sync1(t, a, []Pair{{"a", "b"}}, nil)
	if diff := cmp.Diff([]string{StateFile}, files(t, dir)); diff != "" {
		t.Errorf("state directory (-want +got):\n%s", diff)
	}
}

func TestCorruptStateKeptAside(t *testing.T) {
	dir := t.TempDir()
	bad := []byte("{garbage")
	if err := os.WriteFile(filepath.Join(dir, StateFile), bad, 0o600); err != nil {
		t.Fatal(err)
	}
	a := open(t, dir)
	sync1(t, a, []Pair{{"a", "b"}}, nil)
	sync1(t, a, []Pair{{"a", "c"}}, nil) // a second save keeps the same copy
	if got, err := os.ReadFile(filepath.Join(dir, StateFile+".corrupt")); err != nil || !bytes.Equal(got, bad) {
		t.Errorf("corrupt copy %q, %v; want %q", got, err, bad)
	}
	if diff := cmp.Diff([]string{StateFile, StateFile + ".corrupt"}, files(t, dir)); diff != "" {
		t.Errorf("state directory (-want +got):\n%s", diff)
	}
}
