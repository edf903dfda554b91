package alloc

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"

	"spectrum-os.org/netcfg/internal/mac"
)

// StateFile is the name of the state file in the state directory.
//
// It is JSON, one link per line, sorted by id:
//
//	{"version":1,"links":[
//	{"client":"appvm-lynx","provider":"netvm","id":"a5:46"}
//	]}
const StateFile = "links.json"

const stateVersion = 1

type stateJSON struct {
	Version int        `json:"version"`
	Links   []linkJSON `json:"links"`
}

type linkJSON struct {
	Client   string `json:"client"`
	Provider string `json:"provider"`
	ID       string `json:"id"`
}

// Open returns an allocator whose assignments are those in stateDir's state
// file. A missing, empty or corrupt state file is not an error: Open logs why
// it starts from nothing (or drops the entries that make no sense) and the
// next Sync writes a new file. Open fails only when the file exists and
// cannot be read. Open never writes; with stateDir "" the allocator keeps its
// ids in memory only. log may be nil.
func Open(stateDir string, log *slog.Logger) (*Allocator, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	a := &Allocator{log: log, ids: map[Pair]mac.LinkID{}}
	if stateDir == "" {
		return a, nil
	}
	a.path = filepath.Join(stateDir, StateFile)
	b, err := os.ReadFile(a.path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		log.Info("no link id state yet; starting empty", "path", a.path)
		return a, nil
	case err != nil:
		return nil, fmt.Errorf("read link id state: %w", err)
	case len(bytes.TrimSpace(b)) == 0:
		log.Warn("link id state is empty; rebuilding it (ids of running VMs are kept)", "path", a.path)
		return a, nil
	}
	var st stateJSON
	if err := json.Unmarshal(b, &st); err != nil {
		log.Warn("link id state is corrupt; rebuilding it (ids of running VMs are kept; the file is kept as "+StateFile+".corrupt)", "path", a.path, "err", err)
		a.corrupt = true
		return a, nil
	}
	if st.Version != stateVersion {
		log.Warn("link id state has an unknown version; rebuilding it (ids of running VMs are kept; the file is kept as "+StateFile+".corrupt)", "path", a.path, "version", st.Version)
		a.corrupt = true
		return a, nil
	}
	var used pool
	for _, l := range st.Links {
		p := Pair{Client: l.Client, Provider: l.Provider}
		id, err := mac.ParseLinkID(l.ID)
		if err == nil {
			err = id.Valid()
		}
		if err == nil {
			err = checkPair(p)
		}
		if _, dup := a.ids[p]; err == nil && dup {
			err = errors.New("a second id for the pair")
		}
		if err == nil && used.has(id) {
			err = errors.New("id already used by another pair")
		}
		if err != nil {
			log.Warn("link id state: dropping an entry", "path", a.path, "client", l.Client, "provider", l.Provider, "id", l.ID, "err", err)
			continue
		}
		a.ids[p] = id
		used.set(id)
	}
	return a, nil
}

// save writes ids to path atomically: a temporary file in the same
// directory, synced, renamed over path, and the directory synced, so a crash
// leaves either the old state or the new one, never a mix.
func save(path string, ids map[Pair]mac.LinkID) (err error) {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("save link id state to %s: %w", path, err)
	}
	f, err := os.CreateTemp(dir, "."+StateFile+".tmp-*")
	if err != nil {
		return fmt.Errorf("save link id state to %s: %w", path, err)
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
			err = fmt.Errorf("save link id state to %s: %w", path, err)
		}
	}()
	if _, err := f.Write(encode(ids)); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return err
	}
	// A crash between CreateTemp and Rename leaves a temporary file behind;
	// the state is now whole, so any other one is such a leftover.
	stale, _ := filepath.Glob(filepath.Join(dir, "."+StateFile+".tmp-*"))
	for _, p := range stale {
		os.Remove(p)
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// encode writes the state by hand rather than with encoding/json: it is a
// fixed shape, and a full pool (65,534 links) encodes ten times faster.
func encode(ids map[Pair]mac.LinkID) []byte {
	b := make([]byte, 0, 32+len(ids)*64)
	b = fmt.Appendf(b, "{\"version\":%d,\"links\":[\n", stateVersion)
	for i, l := range sorted(ids) {
		if i > 0 {
			b = append(b, ",\n"...)
		}
		b = append(b, `{"client":`...)
		b = appendString(b, l.Client)
		b = append(b, `,"provider":`...)
		b = appendString(b, l.Provider)
		b = append(b, `,"id":"`...)
		b = append(b, l.ID.String()...)
		b = append(b, `"}`...)
	}
	return append(b, "\n]}\n"...)
}

// appendString appends s as a JSON string. Pair names are UTF-8 (checkPair
// sees to it), so only quotes,
// backslashes and control characters need escaping.
func appendString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '"' || c == '\\':
			b = append(b, '\\', c)
		case c < 0x20:
			b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
		default:
			b = append(b, c)
		}
	}
	return append(b, '"')
}
