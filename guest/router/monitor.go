package router

import (
	"bytes"
	"errors"
	"slices"
	"time"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// tableWatch follows nftables' own notifications (the NFNLGRP_NFTABLES
// group of NETLINK_NETFILTER) for changes to the router's table: another
// program's `nft flush ruleset` (the first line of Debian's
// /etc/nftables.conf), `nft delete table`, a rule inserted or deleted. The
// kernel sends one notification per object a transaction adds or deletes,
// each naming its table and carrying the netlink port of the socket that
// asked, then one NFT_MSG_NEWGEN naming the process that committed it.
type tableWatch struct{ c *netlink.Conn }

// tableChange is one committed transaction that touched the router's
// table, or notifications that were lost.
type tableChange struct {
	ports   []uint32 // the netlink ports that asked for the changes
	removed bool     // the table itself was deleted
	by      string   // the committing process's name (its comm), "" if unknown
	lost    bool     // the kernel dropped notifications: anything may have changed
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
	touched := false
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
				if touched {
					ch.by = genProc(m.Data[4:])
					return ch, nil
				}
				continue
			}
			if !ours(m.Data) {
				continue
			}
			touched = true
			ch.ports = append(ch.ports, m.Header.PID)
			if typ == unix.NFT_MSG_DELTABLE {
				ch.removed = true
			}
		}
	}
}

// ours tells whether the body of an nf_tables notification (struct
// nfgenmsg, then attributes) is about table inet TableName: for every kind
// of object (table, chain, rule, set, element, object, flowtable) the
// first attribute is its table's name.
func ours(b []byte) bool {
	if b[0] != unix.NFPROTO_INET {
		return false
	}
	ad, err := netlink.NewAttributeDecoder(b[4:])
	if err != nil {
		return false
	}
	for ad.Next() {
		if ad.Type() == 1 { // NFTA_{TABLE_NAME,CHAIN_TABLE,RULE_TABLE,SET_TABLE,...}
			return bytes.Equal(bytes.TrimRight(ad.Bytes(), "\x00"), []byte(TableName))
		}
	}
	return false
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

// restore puts the router's table back after ch, unless the change was
// the router's own, and says so. It returns false when the table could
// not be written: net.ipv4.ip_forward is then 0 (fail closed: nothing is
// forwarded, to or from a provider link or anywhere else) until a later
// call succeeds and turns it on again.
func (r *Router) restore(ch tableChange) bool {
	if r.stopped || !ch.lost && r.ownPorts(ch.ports) {
		return true
	}
	what := "nftables notifications were lost"
	if !ch.lost {
		by := ch.by
		if by == "" {
			by = "another program"
		}
		what = by + " changed table inet " + TableName
		if ch.removed {
			what = by + " removed table inet " + TableName
		}
	}
	if err := r.write(); err != nil {
		// Said once, not at every try, unless the reason changes.
		if msg := "error: " + what + ", and it cannot be put back: " + err.Error(); msg != r.heldWhy {
			r.heldWhy = msg
			r.say(msg)
		}
		if !r.held {
			if err := writeForward('0'); err != nil {
				r.say("error: set net.ipv4.ip_forward 0: " + err.Error())
			} else {
				r.held = true
				r.say("set net.ipv4.ip_forward 0 until the table is back")
			}
		}
		return false
	}
	if ch.lost {
		r.say(what + ": wrote table inet " + TableName + " again")
	} else {
		r.say(what + ": put it back")
	}
	r.heldWhy = ""
	if r.held {
		if err := writeForward('1'); err != nil {
			r.say("error: set net.ipv4.ip_forward 1 again: " + err.Error())
			return false
		}
		r.held = false
		r.say("set net.ipv4.ip_forward 1 again")
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
