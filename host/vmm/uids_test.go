package vmm

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestParseUIDRange(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want UIDRange
		err  string
	}{
		{in: DefaultUIDs, want: UIDRange{0x70000000, 0x7000ffff}},
		{in: "1000-1000", want: UIDRange{1000, 1000}},
		{in: "65535-70000", want: UIDRange{65535, 70000}},
		{in: "", err: "want FIRST-LAST"},
		{in: "1000", err: "want FIRST-LAST"},
		{in: "-5-10", err: "want FIRST-LAST"},
		{in: "2000-1000", err: "first above last"},
		{in: "0-100", err: "root"},
		{in: "60000-65534", err: "nobody"},
		{in: "4294967200-4294967295", err: "not a valid id"},
		{in: "1-4294967296", err: "want FIRST-LAST"},
	} {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseUIDRange(tt.in)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("ParseUIDRange(%q) = %v, %v; want an error with %q", tt.in, got, err, tt.err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("ParseUIDRange(%q) = %v, %v; want %v", tt.in, got, err, tt.want)
			}
		})
	}
}

// TestUIDs: each VM gets a uid of its own in the range, the same one on
// every launch and after spectrumd restarts (the state file); a range that
// changes gives the VMs outside it new uids; a full range gives a new VM
// the uid of the VM launched longest ago that is not running, and fails
// only when every uid runs.
func TestUIDs(t *testing.T) {
	state := t.TempDir()
	r := UIDRange{500000, 500003}
	clock := time.Unix(1000, 0)
	open := func(r UIDRange) *UIDs {
		u, err := OpenUIDs(state, r, nil)
		if err != nil {
			t.Fatal(err)
		}
		u.now = func() time.Time { clock = clock.Add(time.Second); return clock }
		return u
	}
	u := open(r)
	got := map[string]uint32{}
	for _, vm := range []string{"a", "b", "c"} {
		uid, err := u.Acquire(vm)
		if err != nil {
			t.Fatal(err)
		}
		if uid < r.First || uid > r.Last {
			t.Errorf("%s: uid %d outside %v", vm, uid, r)
		}
		for other, o := range got {
			if o == uid {
				t.Errorf("%s and %s share uid %d", vm, other, uid)
			}
		}
		got[vm] = uid
		u.Release(vm)
	}
	again, _ := u.Acquire("a")
	u.Release("a")
	if again != got["a"] {
		t.Errorf("a's second launch: uid %d, want %d", again, got["a"])
	}

	// spectrumd restarts; the VMs start again in this order, so b is
	// launched before c.
	u = open(r)
	for _, vm := range []string{"a", "b", "c"} {
		if uid, err := u.Acquire(vm); err != nil || uid != got[vm] {
			t.Errorf("%s after a restart: uid %d, %v; want %d", vm, uid, err, got[vm])
		}
	}
	// a, b, c run; d takes the last free uid.
	d, err := u.Acquire("d")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := u.Acquire("e"); err == nil || !strings.Contains(err.Error(), "taken by running VMs") {
		t.Errorf("a fifth VM in a range of four running = %v, want an error", err)
	}
	// b stops, and c too but later: e gets b's uid (launched longest ago).
	u.Release("b")
	u.Release("c")
	e, err := u.Acquire("e")
	if err != nil || e != got["b"] {
		t.Errorf("e in a full range = %d, %v; want b's %d", e, err, got["b"])
	}
	if b, err := u.Acquire("b"); err != nil || b == e || b == d || b == got["a"] {
		t.Errorf("b back again = %d, %v; want the uid c left (%d)", b, err, got["c"])
	}

	// The range moves: every VM gets a uid in the new one.
	r2 := UIDRange{600000, 600009}
	u = open(r2)
	for _, vm := range []string{"a", "b", "d", "e"} {
		if uid, err := u.Acquire(vm); err != nil || uid < r2.First || uid > r2.Last {
			t.Errorf("%s in the new range: uid %d, %v", vm, uid, err)
		}
	}
}

// TestUIDsState: the state file is written atomically (no temporary file
// left), a corrupt one is set aside and rebuilt, and a state directory that
// cannot be written fails the launch that needs a new uid, naming the file.
func TestUIDsState(t *testing.T) {
	state := t.TempDir()
	u, _ := OpenUIDs(state, UIDRange{500000, 500099}, nil)
	uid, err := u.Acquire("app")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(filepath.Join(state, UIDFile))
	if !strings.Contains(string(b), fmt.Sprintf(`"app":{"uid":%d,`, uid)) {
		t.Errorf("state file %s lacks app's uid %d", b, uid)
	}
	if m, _ := filepath.Glob(filepath.Join(state, ".*")); len(m) != 0 {
		t.Errorf("temporary files left: %v", m)
	}

	os.WriteFile(filepath.Join(state, UIDFile), []byte(`{"version":1,"vms":{"app":`), 0o600)
	u, err = OpenUIDs(state, UIDRange{500000, 500099}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(state, UIDFile+".corrupt")); err != nil {
		t.Errorf("corrupt state not set aside: %v", err)
	}
	if again, err := u.Acquire("app"); err != nil || again != uid {
		t.Errorf("app after a corrupt state: uid %d, %v; want %d again (derived from its name)", again, err, uid)
	}

	ro := filepath.Join(t.TempDir(), "gone")
	u, _ = OpenUIDs(ro, UIDRange{500000, 500099}, nil) // the directory does not exist
	_, err = u.Acquire("app")
	if err == nil || !strings.Contains(err.Error(), filepath.Join(ro, UIDFile)) || !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Acquire with no state directory = %v, want an error naming %s", err, filepath.Join(ro, UIDFile))
	}
	if diff := cmp.Diff(map[string]int{}, u.running); diff != "" {
		t.Errorf("a failed Acquire counts as running (-want +got):\n%s", diff)
	}
}
