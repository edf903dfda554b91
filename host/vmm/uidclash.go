package vmm

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// UIDDatabases are the files CheckUIDRange reads, beneath the root it is
// given: who else holds uids and gids on the host. Each line's fields are
// separated by ':'; what a field holds is named by uidFields.
var UIDDatabases = []string{"etc/passwd", "etc/group", "etc/subuid", "etc/subgid"}

// CheckUIDRange refuses a VM uid range that anyone on the host may already
// hold: a user's uid or primary gid (/etc/passwd), a group's gid
// (/etc/group), or a user's subordinate uids or gids (/etc/subuid,
// /etc/subgid, which Debian's useradd hands out in blocks of 65,536 from
// 100000). A VM's QEMU runs as a uid and gid of the same number, so a
// user who held it, or a user namespace mapped onto it, could signal,
// trace or read that QEMU. Every clash is named with its file, line and
// owner. A file that is missing holds nothing; one that cannot be read,
// or a line that cannot be parsed, is an error (fail closed: a clash it
// hides cannot be ruled out). Only these files are read: users of other
// NSS sources (LDAP, systemd-homed, DynamicUser=) are not seen, which the
// default range keeps clear of by convention (DefaultUIDs).
func CheckUIDRange(root string, r UIDRange) error {
	var errs []error
	for _, db := range UIDDatabases {
		errs = append(errs, checkUIDFile(filepath.Join(root, db), db, r)...)
	}
	return errors.Join(errs...)
}

// checkUIDFile checks one database file, named db (its path beneath the
// root, for the messages), against r.
func checkUIDFile(path, db string, r UIDRange) []error {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return []error{fmt.Errorf("%s: %w", path, err)}
	}
	defer f.Close()
	var errs []error
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		// Blank lines, comments, and NIS compat entries (+name, -name),
		// which hold no number of their own.
		if t := strings.TrimSpace(line); t == "" || t[0] == '#' || t[0] == '+' || t[0] == '-' {
			continue
		}
		fields := strings.Split(line, ":")
		where := fmt.Sprintf("/%s:%d", db, n)
		clash, err := lineClash(db, fields, r)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", where, err))
		} else if clash != "" {
			errs = append(errs, fmt.Errorf("uid range %s overlaps %s: %s", r, where, clash))
		}
	}
	if err := sc.Err(); err != nil {
		errs = append(errs, fmt.Errorf("%s: %w", path, err))
	}
	return errs
}

// lineClash says what of one line falls in r ("" for nothing).
func lineClash(db string, f []string, r UIDRange) (string, error) {
	id := func(i int, what string) (uint32, error) {
		if len(f) <= i {
			return 0, fmt.Errorf("%d fields, want a %s in field %d", len(f), what, i+1)
		}
		v, err := strconv.ParseUint(f[i], 10, 32)
		if err != nil {
			return 0, fmt.Errorf("%s %q: not a number", what, f[i])
		}
		return uint32(v), nil
	}
	in := func(v uint32) bool { return r.First <= v && v <= r.Last }
	switch db {
	case "etc/passwd":
		uid, err := id(2, "uid")
		if err != nil {
			return "", err
		}
		gid, err := id(3, "gid")
		if err != nil {
			return "", err
		}
		switch {
		case in(uid):
			return fmt.Sprintf("user %s has uid %d", f[0], uid), nil
		case in(gid):
			return fmt.Sprintf("user %s has primary gid %d", f[0], gid), nil
		}
	case "etc/group":
		gid, err := id(2, "gid")
		if err != nil {
			return "", err
		}
		if in(gid) {
			return fmt.Sprintf("group %s has gid %d", f[0], gid), nil
		}
	default: // subuid, subgid: owner:first:count
		first, err := id(1, "first id")
		if err != nil {
			return "", err
		}
		count, err := id(2, "count")
		if err != nil {
			return "", err
		}
		if count == 0 {
			return "", nil
		}
		last := uint64(first) + uint64(count) - 1
		if uint64(r.First) <= last && first <= r.Last {
			kind := "uids"
			if db == "etc/subgid" {
				kind = "gids"
			}
			return fmt.Sprintf("%s's subordinate %s %d-%d", f[0], kind, first, last), nil
		}
	}
	return "", nil
}
