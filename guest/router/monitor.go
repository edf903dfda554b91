package router

import (
	"bytes"
	"errors"
	"slices"
	"strings"
	"time"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// tableWatch follows nftables' own notifications (the NFNLGRP_NFTABLES
// group of NETLINK_NETFILTER) for changes to the router's tables (the main
// one, TableName, and the limits, LimitsTableName): another
// program's `nft flush ruleset` (the first line of Debian's
// /etc/nftables.conf), `nft delete table`, a rule inserted or deleted. The
// kernel sends one notification per object a transaction adds or deletes,
// each naming its table and carrying the netlink port of the socket that
// asked, then one NFT_MSG_NEWGEN naming the process that committed it.
type tableWatch struct{ c *netlink.Conn }

// tableChange is one committed transaction that touched the router's
// tables, or notifications that were lost.
type tableChange struct {
	ports   []uint32 // the netlink ports that asked for the changes
	touched tables   // the tables it changed
	removed tables   // the tables it deleted
	by      string   // the committing process's name (its comm), "" if unknown
	lost    bool     // the kernel dropped notifications: anything may have changed
}

// tables is a set of the router's tables.
type tables uint8

const (
	tableMain   tables = 1 << iota // TableName
	tableLimits                    // LimitsTableName
)

// name is the name of table t (one of them).
func (t tables) name() string {
	if t == tableLimits {
		return LimitsTableName
	}
	return TableName
}

// watchBuffer is the notification socket's receive buffer: another
// program loading a large ruleset sends a notification per rule, all
// before the router reads one. Overflowing it is not fatal (lost), but
// costs a rewrite of the table.
const watchBuffer = 4 << 20

func dialTableWatch() (*tableWatch, error) {
	c, err := netlink.Dial(unix.NETLINK_NETFILTER, nil)
	if err != nil {
		return nil, err
	}
	if err := c.JoinGroup(unix.NFNLGRP_NFTABLES); err != nil {
		c.Close()
		return nil, err
	}
	_ = c.SetReadBuffer(watchBuffer)
	return &tableWatch{c: c}, nil
}

// next blocks until a committed transaction has touched the router's
// table, or notifications were lost, and returns it; or it returns the
// error that ends watching (the socket closed).
func (w *tableWatch) next() (tableChange, error) {
	var ch tableChange
	for {
		msgs, err := w.c.Receive()
		if errors.Is(err, unix.ENOBUFS) {
			return tableChange{lost: true}, nil
		}
		if err != nil {
			return tableChange{}, err
		}
		for _, m := range msgs {
			if m.Header.Type>>8 != unix.NFNL_SUBSYS_NFTABLES || len(m.Data) < 4 {
				continue
			}
			typ := m.Header.Type & 0xff
			if typ == unix.NFT_MSG_NEWGEN {
				if ch.touched != 0 {
					ch.by = genProc(m.Data[4:])
					return ch, nil
				}
				continue
			}
			t := ours(m.Data)
			if t == 0 {
				continue
			}
			ch.touched |= t
			ch.ports = append(ch.ports, m.Header.PID)
			if typ == unix.NFT_MSG_DELTABLE {
				ch.removed |= t
			}
		}
	}
}

// ours tells which of the router's tables, if any, the body of an
// nf_tables notification (struct nfgenmsg, then attributes) is about: for
// every kind of object (table, chain, rule, set, element, object,
// flowtable) the first attribute is its table's name.
func ours(b []byte) tables {
	if b[0] != unix.NFPROTO_INET {
		return 0
	}
	ad, err := netlink.NewAttributeDecoder(b[4:])
	if err != nil {
		return 0
	}
	for ad.Next() {
		if ad.Type() == 1 { // NFTA_{TABLE_NAME,CHAIN_TABLE,RULE_TABLE,SET_TABLE,...}
			switch string(bytes.TrimRight(ad.Bytes(), "\x00")) {
			case TableName:
				return tableMain
			case LimitsTableName:
				return tableLimits
			}
			return 0
		}
	}
	return 0
}

// genProc is the committing process's name from an NFT_MSG_NEWGEN's
// attributes.
func genProc(b []byte) string {
	ad, err := netlink.NewAttributeDecoder(b)
	if err != nil {
		return ""
	}
	for ad.Next() {
		if ad.Type() == unix.NFTA_GEN_PROC_NAME {
			return string(bytes.TrimRight(ad.Bytes(), "\x00"))
		}
	}
	return ""
}

func (w *tableWatch) close() error { return w.c.Close() }

// retryRestore is how long the router waits before it tries again to put
// back a table it could not.
const retryRestore = time.Second

// watchTable runs until the table watch is closed: each change someone
// else made to the router's table is undone on the owner (restore).
func (r *Router) watchTable() {
	for {
		ch, err := r.tables.next()
		if err != nil {
			return
		}
		for ok := false; !ok; {
			ok = true
			r.call(func() { ok = r.restore(ch) })
			if !ok {
				time.Sleep(retryRestore)
			}
		}
	}
}

// restore puts the router's tables back after ch, unless the change was
// the router's own, and says so. The main table is written whole in any
// case (it holds no state); the limits table only when a change since it
// was last written whole touched it (or notifications were lost), which
// starts every link's count again: a change someone on the provider made,
// never a client. It returns false when the tables could not be written:
// forwarding is then 0, IPv4's and IPv6's (fail closed: nothing is
// forwarded, to or from a provider link or anywhere else) until a later
// call succeeds and turns it on again.
func (r *Router) restore(ch tableChange) bool {
	if r.stopped || !ch.lost && r.ownPorts(ch.ports) {
		return true
	}
	by := ch.by
	if by == "" {
		by = "another program"
	}
	var whats []string
	for _, t := range []tables{tableMain, tableLimits} {
		if ch.touched&t != 0 {
			verb := " changed "
			if ch.removed&t != 0 {
				verb = " removed "
			}
			whats = append(whats, by+verb+"table inet "+t.name())
		}
	}
	if ch.lost {
		whats = []string{"nftables notifications were lost"}
		ch.touched = tableMain | tableLimits
	}
	// Until a write succeeds, what every change since touched.
	r.pending |= ch.touched
	if err := r.write(r.pending&tableLimits != 0); err != nil {
		// Said once, not at every try, unless the reason changes.
		if msg := "error: " + strings.Join(whats, ", ") + ", and it cannot be put back: " + err.Error(); msg != r.heldWhy {
			r.heldWhy = msg
			r.say(msg)
		}
		if !r.held {
			held := true
			for _, f := range r.forwards() {
				if err := writeForward(f.path, '0'); err != nil {
					r.say("error: set " + forwardName(f.path) + " 0: " + err.Error())
					held = false
				} else {
					r.say("set " + forwardName(f.path) + " 0 until the table is back")
				}
			}
			r.held = held
		}
		return false
	}
	if ch.lost {
		r.say(whats[0] + ": wrote tables inet " + TableName + " and inet " + LimitsTableName + " again")
	} else {
		for _, w := range whats {
			r.say(w + ": put it back")
		}
	}
	r.heldWhy = ""
	if r.held {
		for _, f := range r.forwards() {
			if f.path == IPv6Forward {
				// NICs that came meanwhile: before forwarding.
				r.keepRA()
			}
			if err := writeForward(f.path, '1'); err != nil {
				r.say("error: set " + forwardName(f.path) + " 1 again: " + err.Error())
				return false
			}
			r.say("set " + forwardName(f.path) + " 1 again")
		}
		r.held = false
	}
	return true
}

// ownPorts tells whether every port is one of the router's own nftables
// sockets.
func (r *Router) ownPorts(ports []uint32) bool {
	for _, p := range ports {
		if !slices.Contains(r.ports, p) {
			return false
		}
	}
	return true
}
