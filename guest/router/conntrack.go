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
	ctaMark      = 8
	ctaZone      = 18
	ctaMarkMask  = 21
	ctaFilter    = 25
	ctaTupleIP   = 1
	ctaIPv4Src   = 1
	ctaIPv4Dst   = 2
	ctaIPv6Src   = 3
	ctaIPv6Dst   = 4

	ctaFilterOrigFlags = 1
	ctaFilterFIPSrc    = 1 << 0 // CTA_FILTER_F_CTA_IP_SRC
	ctaFilterFIPDst    = 1 << 1 // CTA_FILTER_F_CTA_IP_DST
)

// conntrack deletes connection tracking entries through ctnetlink, IPv4
// and IPv6.
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
// fam, AF_INET or AF_INET6, version 0, resource id 0), then attrs.
func ctMsg(fam byte, typ int, flags netlink.HeaderFlags, attrs []byte) netlink.Message {
	return netlink.Message{
		Header: netlink.Header{Type: netlink.HeaderType(unix.NFNL_SUBSYS_CTNETLINK<<8 | typ), Flags: netlink.Request | flags},
		Data:   append([]byte{fam, unix.NFNETLINK_V0, 0, 0}, attrs...),
	}
}

// ctFamily is a's address family and its CTA_IP_V4_SRC or CTA_IP_V6_SRC
// (the destination's is the next).
func ctFamily(a netip.Addr) (fam byte, src uint16) {
	if a.Is4() {
		return unix.AF_INET, ctaIPv4Src
	}
	return unix.AF_INET6, ctaIPv6Src
}

// flush deletes every entry of a's family whose original direction comes
// from a (with from) or goes to it (with to) and returns how many it
// deleted: each is a walk of the conntrack table in the kernel. The
// kernel picks the entries (a dump with a filter, Linux 5.10): a provider
// whose table holds 200,000 entries of other clients sends none of them
// to the router. An entry that expires between the dump and its deletion
// is not an error.
//
// IPv4's are picked by address (CTA_FILTER). IPv6's by the ct mark the
// table gives every connection from or to a provider link, its ifindex:
// the kernel's address filter matches IPv6 addresses the wrong way round
// (ctnetlink_filter_match_tuple's !ipv6_addr_cmp, Linux 5.10 to 6.18 at
// least: it sends every other entry), so the router asks for the link's
// entries (CTA_MARK) and picks a's among them.
func (ct *conntrack) flush(a netip.Addr, mark uint32, from, to bool) (n int, err error) {
	_, src := ctFamily(a)
	var dirs []uint16
	if from {
		dirs = append(dirs, src)
	}
	if to {
		dirs = append(dirs, src+1)
	}
	for _, dir := range dirs {
		m, derr := ct.flushDir(a, mark, dir)
		n += m
		if err == nil {
			err = derr
		}
	}
	return n, err
}

// flushDir deletes the entries whose original direction has a as its
// source (dir ctaIPv4Src, ctaIPv6Src) or destination (ctaIPv4Dst,
// ctaIPv6Dst).
func (ct *conntrack) flushDir(a netip.Addr, mark uint32, dir uint16) (n int, err error) {
	fam, srcAttr := ctFamily(a)
	msgs, err := ct.dump(a, mark, dir)
	for _, m := range msgs {
		key, src, dst, ok := ParseConntrack(m.Data)
		// The kernel filtered (IPv6: by link); this check keeps a
		// kernel that ignores the filter from deleting other clients'
		// entries.
		if !ok || dir != srcAttr && dst != a || dir == srcAttr && src != a {
			continue
		}
		_, derr := ct.c.Execute(ctMsg(fam, ipctnlMsgCtDelete, netlink.Acknowledge, key))
		if derr == nil {
			n++
		} else if !errors.Is(derr, unix.ENOENT) && err == nil {
			err = derr
		}
	}
	return n, err
}

// dump is the entries of a's family whose original direction has a as
// its source or destination (dir, as for flushDir), as the kernel picks
// them: IPv4's by address, IPv6's by mark (see flush).
func (ct *conntrack) dump(a netip.Addr, mark uint32, dir uint16) ([]netlink.Message, error) {
	fam, src := ctFamily(a)
	if a.Is6() {
		req := nlAttr(nil, ctaMark, binary.BigEndian.AppendUint32(nil, mark))
		req = nlAttr(req, ctaMarkMask, binary.BigEndian.AppendUint32(nil, ^uint32(0)))
		return ct.c.Execute(ctMsg(fam, ipctnlMsgCtGet, netlink.Dump, req))
	}
	flag := uint32(ctaFilterFIPDst)
	if dir == src {
		flag = ctaFilterFIPSrc
	}
	ip := nlAttr(nil, dir, a.AsSlice())
	req := nlAttr(nil, ctaTupleOrig|unix.NLA_F_NESTED, nlAttr(nil, ctaTupleIP|unix.NLA_F_NESTED, ip))
	req = nlAttr(req, ctaFilter|unix.NLA_F_NESTED, nlAttr(nil, ctaFilterOrigFlags, binary.NativeEndian.AppendUint32(nil, flag)))
	return ct.c.Execute(ctMsg(fam, ipctnlMsgCtGet, netlink.Dump, req))
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
// false for anything that is not an IPv4 or IPv6 entry with both, of its
// family.
func ParseConntrack(b []byte) (key []byte, src, dst netip.Addr, ok bool) {
	if len(b) < 4 || b[0] != unix.AF_INET && b[0] != unix.AF_INET6 {
		return nil, src, dst, false
	}
	n, sAttr := 4, uint16(ctaIPv4Src)
	if b[0] == unix.AF_INET6 {
		n, sAttr = 16, ctaIPv6Src
	}
	b = b[4:]
	orig, origAttr := attr(b, ctaTupleOrig)
	ip, _ := attr(orig, ctaTupleIP)
	s, _ := attr(ip, sAttr)
	d, _ := attr(ip, sAttr+1)
	if len(s) != n || len(d) != n {
		return nil, src, dst, false
	}
	key = append(key, origAttr...)
	if _, z := attr(b, ctaZone); z != nil {
		key = append(key, z...)
	}
	src, _ = netip.AddrFromSlice(s)
	dst, _ = netip.AddrFromSlice(d)
	return key, src, dst, true
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
