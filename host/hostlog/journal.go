package hostlog

import (
	"context"
	"log/slog"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/coreos/go-systemd/v22/journal"
)

// The journal fields of spectrumd's entries (docs/DESIGN.md, "Logs").
const (
	// Identifier is every entry's SYSLOG_IDENTIFIER, followed by "/" and
	// the VM's name in the entries about a VM (so `journalctl -u spectrumd`
	// shows whose line each is).
	Identifier = "spectrumd"
	// FieldPrefix starts the name of the field each attribute of a record
	// becomes: "vm" is SPECTRUM_VM, "source" SPECTRUM_SOURCE, "err"
	// SPECTRUM_ERR, a group's "g.key" SPECTRUM_G_KEY.
	FieldPrefix = "SPECTRUM_"
	// SourceSpectrumd is SPECTRUM_SOURCE of a record without a source
	// attribute: spectrumd's own words. A guest's serial line has
	// source "serial" (vmlog), a line of QEMU's stderr "qemu-stderr" (vmm).
	SourceSpectrumd = "spectrumd"
)

// The attributes the fields above are made of.
const (
	vmKey     = "vm"
	sourceKey = "source"
)

// maxFieldName is journald's limit on a field's name.
const maxFieldName = 64

// JournalHandler writes each record as one entry of the systemd journal,
// through its native protocol: MESSAGE is the record's message followed by
// its attributes as key=value (but the VM and the source, which are in the
// identifier and a field), PRIORITY is Priority(level), and every attribute
// is also a field of its own. The protocol carries any bytes in a value (a
// newline included) as that value: a guest's line can be no more than one
// MESSAGE of its VM.
//
// A record the journal refuses (journald restarting, say) goes to fallback,
// with the journal's error.
type JournalHandler struct {
	level    slog.Leveler
	send     func(msg string, p journal.Priority, vars map[string]string) error
	fallback slog.Handler
	attrs    []field // from WithAttrs, group-qualified
	group    string  // WithGroup's groups, each followed by "."
}

// field is an attribute's group-qualified key and its value as text.
type field struct{ key, val string }

// NewJournalHandler returns a handler of records at level and above (nil:
// Info), which writes to the journal's native socket
// (/run/systemd/journal/socket) and, for the records the journal refuses,
// to fallback.
func NewJournalHandler(level slog.Leveler, fallback slog.Handler) *JournalHandler {
	if level == nil {
		level = slog.LevelInfo
	}
	return &JournalHandler{level: level, send: journal.Send, fallback: fallback}
}

// Enabled implements slog.Handler.
func (h *JournalHandler) Enabled(_ context.Context, l slog.Level) bool {
	return l >= h.level.Level()
}

// Handle implements slog.Handler.
func (h *JournalHandler) Handle(ctx context.Context, r slog.Record) error {
	fs := make([]field, len(h.attrs), len(h.attrs)+r.NumAttrs())
	copy(fs, h.attrs)
	r.Attrs(func(a slog.Attr) bool {
		fs = appendField(fs, h.group, a)
		return true
	})
	vars := make(map[string]string, len(fs)+2)
	vars["SYSLOG_IDENTIFIER"] = Identifier
	vars[FieldPrefix+"SOURCE"] = SourceSpectrumd
	var msg strings.Builder
	msg.WriteString(r.Message)
	for _, f := range fs {
		switch f.key {
		case vmKey:
			vars["SYSLOG_IDENTIFIER"] = Identifier + "/" + f.val
		case sourceKey:
		default:
			msg.WriteByte(' ')
			msg.WriteString(f.key)
			msg.WriteByte('=')
			msg.WriteString(quote(f.val))
		}
		vars[FieldName(f.key)] = f.val
	}
	if err := h.send(msg.String(), Priority(r.Level), vars); err != nil {
		r = r.Clone()
		r.AddAttrs(slog.String("journal_err", err.Error()))
		return h.fallback.Handle(ctx, r)
	}
	return nil
}

// WithAttrs implements slog.Handler.
func (h *JournalHandler) WithAttrs(as []slog.Attr) slog.Handler {
	h2 := *h
	h2.attrs = h.attrs[:len(h.attrs):len(h.attrs)]
	for _, a := range as {
		h2.attrs = appendField(h2.attrs, h.group, a)
	}
	h2.fallback = h.fallback.WithAttrs(as)
	return &h2
}

// WithGroup implements slog.Handler.
func (h *JournalHandler) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	h2 := *h
	h2.group += name + "."
	h2.fallback = h.fallback.WithGroup(name)
	return &h2
}

// appendField appends a, or a group's attributes, to fs as slog's text
// handler would write them.
func appendField(fs []field, group string, a slog.Attr) []field {
	a.Value = a.Value.Resolve()
	if a.Equal(slog.Attr{}) {
		return fs
	}
	switch a.Value.Kind() {
	case slog.KindGroup:
		if a.Key != "" {
			group += a.Key + "."
		}
		for _, g := range a.Value.Group() {
			fs = appendField(fs, group, g)
		}
		return fs
	case slog.KindTime:
		return append(fs, field{group + a.Key, a.Value.Time().Format(time.RFC3339Nano)})
	default:
		return append(fs, field{group + a.Key, a.Value.String()})
	}
}

// FieldName is the journal field of the attribute key (group-qualified,
// "g.key"): FieldPrefix and the key in upper case, each byte that may not
// be in a field's name (A-Z, 0-9, _) made "_", cut at journald's limit of 64.
func FieldName(key string) string {
	b := make([]byte, 0, len(FieldPrefix)+len(key))
	b = append(b, FieldPrefix...)
	for i := 0; i < len(key) && len(b) < maxFieldName; i++ {
		c := key[i]
		switch {
		case c >= 'a' && c <= 'z':
			c -= 'a' - 'A'
		case c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '_':
		default:
			c = '_'
		}
		b = append(b, c)
	}
	return string(b)
}

// quote quotes s as slog's text handler would: when it is empty or has a
// space, a quote, an "=", or a byte that is not printable.
func quote(s string) string {
	if s == "" {
		return `""`
	}
	for _, r := range s {
		if r <= ' ' || r == '=' || r == '"' || r == 0x7f || r == utf8.RuneError || !strconv.IsPrint(r) {
			return strconv.Quote(s)
		}
	}
	return s
}
