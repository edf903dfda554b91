package vmm

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// debianSubIDs is /etc/subuid (or subgid) as Debian's useradd writes it
// for n users from uid 1000: 65,536 ids each from 100000.
func debianSubIDs(n int) string {
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, "user%d:%d:65536\n", i+1, 100000+65536*i)
	}
	return b.String()
}

// TestCheckUIDRange: a range that a user, a group or a user's subordinate
// ids hold is refused, naming each clash's file, line and owner; missing
// files hold nothing; a line that does not parse is an error naming it.
func TestCheckUIDRange(t *testing.T) {
	passwd := "root:x:0:0:root:/root:/bin/bash\n# a comment\n\n+nisuser::::::\nalice:x:1000:1000::/home/alice:/bin/bash\nsvc:x:500000:100::/:/usr/sbin/nologin\nbob:x:1001:600000::/home/bob:/bin/bash\n"
	group := "root:x:0:\nusers:x:100:\nvmgroup:x:700000:alice\n"
	for _, tt := range []struct {
		name  string
		files map[string]string
		r     UIDRange
		want  []string // the errors, one a line
	}{
		{name: "no files", r: UIDRange{1000, 2000}},
		{name: "clear of all", files: map[string]string{"passwd": passwd, "group": group, "subuid": debianSubIDs(3), "subgid": debianSubIDs(3)},
			r: UIDRange{800000, 865535}},
		{name: "a user's uid", files: map[string]string{"passwd": passwd}, r: UIDRange{499000, 500000},
			want: []string{"uid range 499000-500000 overlaps /etc/passwd:6: user svc has uid 500000"}},
		{name: "a user's primary gid", files: map[string]string{"passwd": passwd}, r: UIDRange{600000, 600000},
			want: []string{"uid range 600000-600000 overlaps /etc/passwd:7: user bob has primary gid 600000"}},
		{name: "a group", files: map[string]string{"group": group}, r: UIDRange{700000, 765535},
			want: []string{"uid range 700000-765535 overlaps /etc/group:3: group vmgroup has gid 700000"}},
		{name: "subuid, the last id", files: map[string]string{"subuid": "alice:100000:65536\n"}, r: UIDRange{165535, 200000},
			want: []string{"uid range 165535-200000 overlaps /etc/subuid:1: alice's subordinate uids 100000-165535"}},
		{name: "subuid, one past", files: map[string]string{"subuid": "alice:100000:65536\n"}, r: UIDRange{165536, 200000}},
		{name: "subgid, the first id", files: map[string]string{"subgid": "alice:100000:65536\n"}, r: UIDRange{90000, 100000},
			want: []string{"uid range 90000-100000 overlaps /etc/subgid:1: alice's subordinate gids 100000-165535"}},
		{name: "subuid, count 0", files: map[string]string{"subuid": "alice:100000:0\n"}, r: UIDRange{100000, 100000}},
		{name: "subuid at the top of the id space", files: map[string]string{"subuid": "alice:4294900000:67295\n"}, r: UIDRange{4294967290, 4294967294},
			want: []string{"uid range 4294967290-4294967294 overlaps /etc/subuid:1: alice's subordinate uids 4294900000-4294967294"}},
		// The finding: the old default and the 4th and 5th users Debian's
		// useradd creates.
		{name: "the old default", files: map[string]string{"subuid": debianSubIDs(5), "subgid": debianSubIDs(5)}, r: UIDRange{327680, 393215},
			want: []string{
				"uid range 327680-393215 overlaps /etc/subuid:4: user4's subordinate uids 296608-362143",
				"uid range 327680-393215 overlaps /etc/subuid:5: user5's subordinate uids 362144-427679",
				"uid range 327680-393215 overlaps /etc/subgid:4: user4's subordinate gids 296608-362143",
				"uid range 327680-393215 overlaps /etc/subgid:5: user5's subordinate gids 362144-427679",
			}},
		{name: "bad uid", files: map[string]string{"passwd": "eve:x:many:0::/:/bin/sh\n"}, r: UIDRange{1000, 2000},
			want: []string{`/etc/passwd:1: uid "many": not a number`}},
		{name: "short line", files: map[string]string{"subgid": "alice:100000\n"}, r: UIDRange{1000, 2000},
			want: []string{"/etc/subgid:1: 2 fields, want a count in field 3"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			root := t.TempDir()
			os.Mkdir(filepath.Join(root, "etc"), 0o755)
			for name, data := range tt.files {
				if err := os.WriteFile(filepath.Join(root, "etc", name), []byte(data), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			var got []string
			if err := CheckUIDRange(root, tt.r); err != nil {
				got = strings.Split(err.Error(), "\n")
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("CheckUIDRange(%s) (-want +got):\n%s", tt.r, diff)
			}
		})
	}
}

// TestDefaultUIDsClear: the default range is clear of every subordinate
// range Debian's useradd can hand out (up to SUB_UID_MAX, 600100000), of
// systemd's container ranges (524288-1879048191) and of 2^31.
func TestDefaultUIDsClear(t *testing.T) {
	r, err := ParseUIDRange(DefaultUIDs)
	if err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	os.Mkdir(filepath.Join(root, "etc"), 0o755)
	users := (600100000 - 100000) / 65536
	for _, f := range []string{"subuid", "subgid"} {
		if err := os.WriteFile(filepath.Join(root, "etc", f), []byte(debianSubIDs(users)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := CheckUIDRange(root, r); err != nil {
		t.Errorf("DefaultUIDs %s against Debian's %d subordinate ranges: %v", r, users, err)
	}
	if r.First <= 1879048191 || r.Last >= 1<<31 {
		t.Errorf("DefaultUIDs %s: want it within 1879048192-2147483647, systemd's unassigned block", r)
	}
}
