package vmm

import (
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// UIDFile is the name of the uid state file in the state directory:
//
//	{"version":1,"vms":{"appvm-lynx":{"uid":331234,"used":1767225600}}}
//
// used is when the VM was last launched (Unix seconds): when the range is
// full, the uid of the VM launched longest ago that is not running goes to
// the new one.
const UIDFile = "vm-uids.json"

const uidVersion = 1

// DefaultUIDs is the range QEMU's uids come from unless -vm-uids says
// otherwise: 65,536 ids at 0x70000000, in the block systemd's
// UIDS-GIDS.md leaves unassigned (1879048192-2147483647), and before its
// foreign range (0x7FFE0000). No convention hands these out: below are
// systemd's container ranges (524288-1879048191), which nspawn -U and
// nsresourced pick from, and Debian's subordinate ids (/etc/subuid and
// /etc/subgid: 100000 + 65536*n, up to 600100000, SUB_UID_MAX), which
// the block 65536-524287 the old default took from overlaps; above is
// 2^31, where uids meet signed 32-bit code. No user database entry is
// needed for any of them, and CheckUIDRange refuses a range someone
// holds anyway.
const DefaultUIDs = "1879048192-1879113727"

// UIDRange is an inclusive range of uids (and the gids of the same
// numbers) for VMs.
type UIDRange struct{ First, Last uint32 }

// ParseUIDRange parses "FIRST-LAST". The range must not hold 0 (root), the
// nobody id 65534, or the invalid id 4294967295, and must be ascending.
func ParseUIDRange(s string) (UIDRange, error) {
	a, b, ok := strings.Cut(s, "-")
	first, err1 := strconv.ParseUint(a, 10, 32)
	last, err2 := strconv.ParseUint(b, 10, 32)
	if !ok || err1 != nil || err2 != nil {
		return UIDRange{}, fmt.Errorf("uid range %q: want FIRST-LAST, e.g. %s", s, DefaultUIDs)
	}
	r := UIDRange{uint32(first), uint32(last)}
	switch {
	case r.First > r.Last:
		return UIDRange{}, fmt.Errorf("uid range %q: first above last", s)
	case r.First == 0:
		return UIDRange{}, fmt.Errorf("uid range %q: holds 0 (root)", s)
	case r.First <= 65534 && 65534 <= r.Last:
		return UIDRange{}, fmt.Errorf("uid range %q: holds 65534 (nobody, the id unmapped files show)", s)
	case r.Last == 1<<32-1:
		return UIDRange{}, fmt.Errorf("uid range %q: holds 4294967295 (not a valid id)", s)
	}
	return r, nil
}

func (r UIDRange) String() string { return fmt.Sprintf("%d-%d", r.First, r.Last) }

func (r UIDRange) size() uint64 { return uint64(r.Last-r.First) + 1 }

// UIDs gives every VM a uid of its own from a range, the same one across
// launches and spectrumd restarts (persisted atomically in the state
// directory), like the per-VM users of the reference system but with no
// /etc/passwd entry. Two VMs never share a uid. It is safe for concurrent
// use.
type UIDs struct {
	r    UIDRange
	path string // "" keeps the assignments in memory only
	log  *slog.Logger
	now  func() time.Time

	mu      sync.Mutex
	vms     map[string]uidEntry
	byUID   map[uint32]string
	running map[string]int // launched and not exited yet, by VM name
}

type uidEntry struct {
	UID  uint32 `json:"uid"`
	Used int64  `json:"used"`
}

type uidState struct {
	Version int                 `json:"version"`
	VMs     map[string]uidEntry `json:"vms"`
}

// OpenUIDs returns the allocator of r with the assignments kept in
// stateDir ("" for none). Entries outside r (the range changed) are
// dropped and their VMs get new uids. A corrupt or unknown file is logged
// and set aside as UIDFile.corrupt; it fails only when the file exists
// and cannot be read. log may be nil.
func OpenUIDs(stateDir string, r UIDRange, log *slog.Logger) (*UIDs, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	u := &UIDs{r: r, log: log, now: time.Now, vms: map[string]uidEntry{}, byUID: map[uint32]string{}, running: map[string]int{}}
	if stateDir == "" {
		return u, nil
	}
	u.path = filepath.Join(stateDir, UIDFile)
	b, err := os.ReadFile(u.path)
	if errors.Is(err, fs.ErrNotExist) {
		return u, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read VM uid state: %w", err)
	}
	var st uidState
	if err := json.Unmarshal(b, &st); err != nil || st.Version != uidVersion {
		log.Warn("VM uid state is corrupt or of another version; VMs get new uids (the file is kept as "+UIDFile+".corrupt)",
			"path", u.path, "err", err, "version", st.Version)
		if err := os.Rename(u.path, u.path+".corrupt"); err != nil {
			return nil, fmt.Errorf("set aside corrupt VM uid state: %w", err)
		}
		return u, nil
	}
	for name, e := range st.VMs {
		if e.UID < r.First || e.UID > r.Last || u.byUID[e.UID] != "" {
			log.Info("VM uid outside the range or taken twice; the VM gets a new one", "vm", name, "uid", e.UID, "range", r.String())
			continue
		}
		u.vms[name], u.byUID[e.UID] = e, name
	}
	return u, nil
}

// Acquire returns vm's uid, assigning and saving one the first time, and
// counts vm as running until Release. A full range reassigns the uid of
// the VM launched longest ago that is not running; if every uid is
// running, it fails.
func (u *UIDs) Acquire(vm string) (uint32, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	e, ok := u.vms[vm]
	if !ok {
		uid, err := u.freeLocked(vm)
		if err != nil {
			return 0, err
		}
		e.UID = uid
		u.log.Info("VM uid assigned", "vm", vm, "uid", uid)
	}
	old := u.vms[vm]
	e.Used = u.now().Unix()
	u.vms[vm], u.byUID[e.UID] = e, vm
	if err := u.saveLocked(); err != nil {
		if ok {
			u.vms[vm] = old
		} else {
			delete(u.vms, vm)
			delete(u.byUID, e.UID)
		}
		return 0, err
	}
	u.running[vm]++
	return e.UID, nil
}

// Release says that vm's QEMU has exited.
func (u *UIDs) Release(vm string) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.running[vm]--; u.running[vm] <= 0 {
		delete(u.running, vm)
	}
}

// freeLocked finds a uid for vm: the first free one from a point derived
// from its name (so a lost state file gives most VMs their old uids back),
// else the one of the VM launched longest ago that is not running.
func (u *UIDs) freeLocked(vm string) (uint32, error) {
	h := fnv.New64a()
	h.Write([]byte(vm))
	n := u.r.size()
	start := h.Sum64() % n
	if uint64(len(u.byUID)) < n {
		for i := range n {
			uid := u.r.First + uint32((start+i)%n)
			if u.byUID[uid] == "" {
				return uid, nil
			}
		}
	}
	victim, oldest := "", int64(0)
	for name, e := range u.vms {
		if u.running[name] == 0 && (victim == "" || e.Used < oldest || e.Used == oldest && name < victim) {
			victim, oldest = name, e.Used
		}
	}
	if victim == "" {
		return 0, fmt.Errorf("no uid for VM %s: all %d of -vm-uids %s are taken by running VMs", vm, n, u.r)
	}
	uid := u.vms[victim].UID
	u.log.Warn("VM uid range full; the uid of the VM launched longest ago goes to another", "from", victim, "to", vm, "uid", uid)
	delete(u.vms, victim)
	delete(u.byUID, uid)
	return uid, nil
}

// saveLocked writes the state atomically: a temporary file in the same
// directory, synced, renamed over the old one, the directory synced.
func (u *UIDs) saveLocked() (err error) {
	if u.path == "" {
		return nil
	}
	b, err := json.Marshal(uidState{Version: uidVersion, VMs: u.vms})
	if err != nil {
		return err
	}
	dir := filepath.Dir(u.path)
	f, err := os.CreateTemp(dir, "."+UIDFile+".tmp-*")
	if err != nil {
		return fmt.Errorf("save VM uid state to %s: %w", u.path, err)
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
			err = fmt.Errorf("save VM uid state to %s: %w", u.path, err)
		}
	}()
	if _, err := f.Write(append(b, '\n')); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(f.Name(), u.path); err != nil {
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
