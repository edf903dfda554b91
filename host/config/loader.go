package config

import (
	"errors"
	"io/fs"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// racyWindow is how long before a load began a status must be for the
// loader to trust it: long enough for the coarsest file system clock in use
// (FAT keeps times to 2 s; ext4 with small inodes to 1 s; others to a clock
// tick) to have moved on, so that any later change gets another ctime.
const racyWindow = 3 * time.Second

// A Loader loads one data directory again and again, as Load does, but
// re-reads only the VM directories that changed since its last Load: it keeps
// each VM directory's result with a fingerprint of everything validating it
// looked at (see fingerprint.go), and on the next Load validates again only
// the VMs whose fingerprint no longer holds, whose entry in the data
// directory is new or changed type, or whose result it did not keep. What
// spans VMs (a directory shared by two names, providers that exist, provider
// cycles, the start order) is worked out afresh every time, from memory.
//
// A Loader's result is what Load would return at that moment: every change
// made through the file system to what a VM's validation read changes a
// status or a symlink's resolution. What the file system does not record is
// not seen until the VM's files change: a security module's policy that
// starts refusing a read of a file kept as valid. (A failure seen while
// reading is never kept: that VM is read again every time.) As with Load, a
// change made while a Load runs may show only at the next.
//
// Load is safe for concurrent use; calls run one at a time. The *VM values
// of a VM that did not change are shared between the Configs returned:
// treat them as read-only.
type Loader struct {
	dataDir string
	keep    bool          // keep results and fingerprints: false in a one-shot Load
	window  time.Duration // racyWindow, or what a test sets

	mu        sync.Mutex
	abs       string             // dataDir's real path when cache was filled
	cache     map[string]*cached // by VM name
	validated int                // VM directories the last Load read, for tests
}

// cached is one VM directory's own result (before the checks that span
// VMs) and what it depends on.
type cached struct {
	typ  fs.FileMode // the entry's type in the data directory: a directory or a symlink
	vm   *VM
	err  *VMError
	deps []dep
	held bool // deps still held when checkCached last looked
}

// NewLoader returns a Loader of dataDir (as Load takes it) that has loaded
// nothing yet.
func NewLoader(dataDir string) *Loader {
	return &Loader{dataDir: dataDir, keep: true, window: racyWindow}
}

// Load loads the data directory, as the package-level Load does.
func (l *Loader) Load() *Config {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.load()
}

// cacheable tells whether a VM's own result may be kept: a valid VM, or one
// rejected for what its files are, which only a change to them undoes. A
// failure of the system (out of file descriptors, an I/O error, a permission
// a security module took away) is not kept: the VM is read again next time.
func cacheable(err *VMError) bool {
	if err == nil {
		return true
	}
	for _, why := range []error{ErrName, ErrPath, ErrNotELF, ErrNotRegular, ErrNotDir,
		ErrNoImages, ErrEscape, ErrCmdline, ErrIface, ErrMAC, ErrMACInUse, fs.ErrNotExist} {
		if errors.Is(err, why) {
			return true
		}
	}
	return false
}

// checkCached starts taking again the fingerprint of every VM in l.cache,
// in parallel (the work is system calls), and returns a function that waits
// for the end; then each entry's held says whether its result still holds.
// The statuses are taken relative to the data directory, whose real path
// must be abs: a cache of another one is dropped.
func (l *Loader) checkCached(abs string) (wait func()) {
	if abs != l.abs {
		l.cache = nil
	}
	if len(l.cache) == 0 {
		return func() {}
	}
	fd, err := open(abs, true)
	if err != nil {
		l.cache = nil
		return func() {}
	}
	list := make([]*cached, 0, len(l.cache))
	for _, c := range l.cache {
		list = append(list, c)
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(runtime.GOMAXPROCS(0), len(list)) {
		wg.Go(func() {
			for i := int(next.Add(1) - 1); i < len(list); i = int(next.Add(1) - 1) {
				list[i].held = unchanged(list[i].deps, fd)
			}
		})
	}
	return func() {
		wg.Wait()
		unix.Close(fd)
	}
}
