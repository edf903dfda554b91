package router

import (
	"encoding/binary"
	"errors"
	"net/netip"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// ctnetlink's message types and attributes (linux/netfilter/nfnetlink_conntrack.h)
// that golang.org/x/sys/unix does not name.
const (
	ipctnlMsgCtGet    = 1
	ipctnlMsgCtDelete = 2

	ctaTupleOrig = 1
	ctaZone      = 18
	ctaFilter    = 25
	ctaTupleIP   = 1
	ctaIPv4Src   = 1
	ctaIPv4Dst   = 2

	ctaFilterOrigFlags = 1
	ctaFilterFIPSrc    = 1 << 0 // CTA_FILTER_F_CTA_IP_SRC
	ctaFilterFIPDst    = 1 << 1 // CTA_FILTER_F_CTA_IP_DST
)

// conntrack deletes IPv4 connection tracking entries through ctnetlink.
type conntrack struct{ c *netlink.Conn }

func dialConntrack() (*conntrack, error) {
	c, err := netlink.Dial(unix.NETLINK_NETFILTER, nil)
	if err != nil {
		return nil, err
	}
	return &conntrack{c: c}, nil
}

func (ct *conntrack) close() error { return ct.c.Close() }

// ctMsg is a ctnetlink request of type typ: the nfgenmsg header (family
// AF_INET, version 0, resource id 0), then attrs.
func ctMsg(typ int, flags netlink.HeaderFlags, attrs []byte) netlink.Message {
	return netlink.Message{
		Header: netlink.Header{Type: netlink.HeaderType(unix.NFNL_SUBSYS_CTNETLINK<<8 | typ), Flags: netlink.Request | flags},
		Data:   append([]byte{unix.AF_INET, unix.NFNETLINK_V0, 0, 0}, attrs...),
	}
}

// flush deletes every IPv4 entry whose original direction comes from a
// (with from) or goes to it (with to) and returns how many it deleted:
// each is a walk of the conntrack table in the kernel. The kernel
// picks the entries (a dump with a filter, CTA_FILTER, Linux 5.10): a
// provider whose table holds 200,000 entries of other clients sends none
// of them to the router. An entry that expires between the dump and its
// deletion is not an error.
func (ct *conntrack) flush(a netip.Addr, from, to bool) (n int, err error) {
	var dirs []uint16
	if from {
		dirs = append(dirs, ctaIPv4Src)
	}
	if to {
		dirs = append(dirs, ctaIPv4Dst)
	}
	for _, dir := range dirs {
		m, derr := ct.flushDir(a, dir)
		n += m
		if err == nil {
			err = derr
		}
	}
	return n, err
}

// flushDir deletes the IPv4 entries whose original direction has a as its
// source (dir ctaIPv4Src) or destination (ctaIPv4Dst).
func (ct *conntrack) flushDir(a netip.Addr, dir uint16) (n int, err error) {
	msgs, err := ct.dump(a, dir)
	for _, m := range msgs {
		key, src, dst, ok := ParseConntrack(m.Data)
		// The kernel filtered; this check keeps a kernel that ignores
		// the filter from deleting other clients' entries.
		if !ok || dir == ctaIPv4Dst && dst != a || dir == ctaIPv4Src && src != a {
			continue
		}
		_, derr := ct.c.Execute(ctMsg(ipctnlMsgCtDelete, netlink.Acknowledge, key))
		if derr == nil {
			n++
		} else if !errors.Is(derr, unix.ENOENT) && err == nil {
			err = derr
		}
	}
	return n, err
}

// dump is the IPv4 entries whose original direction has a as its source
// (dir ctaIPv4Src) or destination (ctaIPv4Dst), as the kernel picks them.
func (ct *conntrack) dump(a netip.Addr, dir uint16) ([]netlink.Message, error) {
	flag := uint32(ctaFilterFIPDst)
	if dir == ctaIPv4Src {
		flag = ctaFilterFIPSrc
	}
	ip := nlAttr(nil, dir, a.AsSlice())
	req := nlAttr(nil, ctaTupleOrig|unix.NLA_F_NESTED, nlAttr(nil, ctaTupleIP|unix.NLA_F_NESTED, ip))
	req = nlAttr(req, ctaFilter|unix.NLA_F_NESTED, nlAttr(nil, ctaFilterOrigFlags, binary.NativeEndian.AppendUint32(nil, flag)))
	return ct.c.Execute(ctMsg(ipctnlMsgCtGet, netlink.Dump, req))
}

// nlAttr appends to b a netlink attribute of type typ holding payload,
// padded.
func nlAttr(b []byte, typ uint16, payload []byte) []byte {
	b = binary.NativeEndian.AppendUint16(b, uint16(4+len(payload)))
	b = binary.NativeEndian.AppendUint16(b, typ)
	b = append(b, payload...)
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}

// ParseConntrack decodes a ctnetlink entry (the body of an
// IPCTNL_MSG_CT_NEW message, from its nfgenmsg on): key is what names the
// entry in a delete request (its original tuple and, if any, its zone, as
// attributes), src and dst the original direction's addresses; ok is
// false for anything that is not an IPv4 entry with both.
func ParseConntrack(b []byte) (key []byte, src, dst netip.Addr, ok bool) {
	if len(b) < 4 || b[0] != unix.AF_INET {
		return nil, src, dst, false
	}
	b = b[4:]
	orig, origAttr := attr(b, ctaTupleOrig)
	ip, _ := attr(orig, ctaTupleIP)
	s, _ := attr(ip, ctaIPv4Src)
	d, _ := attr(ip, ctaIPv4Dst)
	if len(s) != 4 || len(d) != 4 {
		return nil, src, dst, false
	}
	key = append(key, origAttr...)
	if _, z := attr(b, ctaZone); z != nil {
		key = append(key, z...)
	}
	return key, netip.AddrFrom4([4]byte(s)), netip.AddrFrom4([4]byte(d)), true
}

// attr finds the first netlink attribute of type typ (flags ignored) in
// b: its payload, and the whole attribute, padding included (what a
// request repeats). Both are nil when there is none or b is malformed.
func attr(b []byte, typ uint16) (payload, whole []byte) {
	for len(b) >= 4 {
		n := int(binary.NativeEndian.Uint16(b))
		if n < 4 || n > len(b) {
			return nil, nil
		}
		end := min((n+3)&^3, len(b))
		if binary.NativeEndian.Uint16(b[2:])&^(unix.NLA_F_NESTED|unix.NLA_F_NET_BYTEORDER) == typ {
			return b[4:n], b[:end]
		}
		b = b[end:]
	}
	return nil, nil
}
