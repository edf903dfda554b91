package guest

import (
	"encoding/binary"
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// nlmsg is a netlink message as the kernel writes it: header, body,
// padding to 4 bytes.
func nlmsg(typ, flags uint16, seq uint32, body []byte) []byte {
	b := binary.NativeEndian.AppendUint32(nil, uint32(nlmsgHdrLen+len(body)))
	b = binary.NativeEndian.AppendUint16(b, typ)
	b = binary.NativeEndian.AppendUint16(b, flags)
	b = binary.NativeEndian.AppendUint32(b, seq)
	b = binary.NativeEndian.AppendUint32(b, 4242) // the port id
	b = append(b, body...)
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}

// answerMsg is the kernel's answer to request req (a whole message) with
// errno code (0: an acknowledgement). A refusal carries the request whole
// unless capped; reason, if not empty, follows as NLMSGERR_ATTR_MSG.
func answerMsg(t testing.TB, seq uint32, code unix.Errno, req []byte, capped bool, reason string) []byte {
	body := binary.NativeEndian.AppendUint32(nil, uint32(-int32(code)))
	var flags uint16
	if capped {
		body, flags = append(body, req[:nlmsgHdrLen]...), unix.NLM_F_CAPPED
	} else {
		body = append(body, req...)
	}
	if reason != "" {
		ae := netlink.NewAttributeEncoder()
		ae.String(unix.NLMSGERR_ATTR_MSG, reason)
		ae.Uint32(unix.NLMSGERR_ATTR_OFFS, 20)
		tlv, err := ae.Encode()
		if err != nil {
			t.Fatal(err)
		}
		body, flags = append(body, tlv...), flags|unix.NLM_F_ACK_TLVS
	}
	return nlmsg(unix.NLMSG_ERROR, flags, seq, body)
}

// answer is one call of parseAnswers' callback, in comparable form.
type answer struct {
	Seq     uint32
	Errno   unix.Errno
	Message string
	Offset  int
}

func collectAnswers(b []byte) []answer {
	var got []answer
	parseAnswers(b, func(seq uint32, err error) {
		a := answer{Seq: seq}
		var oe *netlink.OpError
		if errors.As(err, &oe) {
			a.Message, a.Offset = oe.Message, oe.Offset
			errors.As(err, &a.Errno)
		} else if err != nil {
			a.Message = "not an OpError: " + err.Error()
		}
		got = append(got, a)
	})
	return got
}

func TestParseAnswers(t *testing.T) {
	req := nlmsg(unix.RTM_NEWROUTE, unix.NLM_F_REQUEST|unix.NLM_F_CREATE, 3, make([]byte, 40))
	cat := func(bs ...[]byte) (b []byte) {
		for _, x := range bs {
			b = append(b, x...)
		}
		return b
	}
	for _, tt := range []struct {
		name string
		b    []byte
		want []answer
	}{
		{name: "acknowledgement", b: answerMsg(t, 3, 0, req, true, ""), want: []answer{{Seq: 3}}},
		{name: "refusal", b: answerMsg(t, 3, unix.EEXIST, req, false, ""), want: []answer{{Seq: 3, Errno: unix.EEXIST}}},
		{
			name: "refusal with the kernel's reason",
			b:    answerMsg(t, 3, unix.ENETUNREACH, req, false, "Nexthop has invalid gateway"),
			want: []answer{{Seq: 3, Errno: unix.ENETUNREACH, Message: "Nexthop has invalid gateway", Offset: 20}},
		},
		{
			name: "capped refusal with the kernel's reason",
			b:    answerMsg(t, 3, unix.ENODEV, req, true, "no such device"),
			want: []answer{{Seq: 3, Errno: unix.ENODEV, Message: "no such device", Offset: 20}},
		},
		{
			name: "two in one datagram, and another message type skipped",
			b: cat(answerMsg(t, 1, unix.ESRCH, req, false, ""), nlmsg(unix.RTM_NEWLINK, 0, 2, make([]byte, 16)),
				answerMsg(t, 3, 0, req, true, "")),
			want: []answer{{Seq: 1, Errno: unix.ESRCH}, {Seq: 3}},
		},
		{
			name: "a truncated message ends the datagram",
			b:    cat(answerMsg(t, 1, 0, req, true, ""), answerMsg(t, 2, unix.EEXIST, req, false, "")[:30]),
			want: []answer{{Seq: 1}},
		},
		{
			name: "an answer too short for its error code",
			b:    nlmsg(unix.NLMSG_ERROR, 0, 5, []byte{1, 2}),
		},
		{
			name: "a reason past the end is left out",
			b: func() []byte {
				b := answerMsg(t, 7, unix.EINVAL, req, false, "x")
				binary.NativeEndian.PutUint32(b[nlmsgHdrLen+4:], 4000) // the request's length
				return b
			}(),
			want: []answer{{Seq: 7, Errno: unix.EINVAL}},
		},
		{name: "empty", b: nil},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, collectAnswers(tt.b)); diff != "" {
				t.Errorf("answers (-want +got):\n%s", diff)
			}
		})
	}
}

// FuzzParseAnswers: the reader of the kernel's answers never panics, and
// every answer it reports is an NLMSG_ERROR message of the input with its
// sequence number, a refusal with a nonzero errno.
func FuzzParseAnswers(f *testing.F) {
	req := nlmsg(unix.RTM_NEWADDR, unix.NLM_F_REQUEST, 1, make([]byte, 24))
	f.Add(answerMsg(f, 1, 0, req, true, ""))
	f.Add(answerMsg(f, 2, unix.EEXIST, req, false, "Address already assigned"))
	f.Add(append(answerMsg(f, 1, unix.ENODEV, req, true, "no"), answerMsg(f, 2, 0, req, true, "")...))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		// The messages' headers as a plain walk sees them.
		var errSeqs []uint32
		for r := b; len(r) >= nlmsgHdrLen; {
			l := int(binary.NativeEndian.Uint32(r[0:4]))
			if l < nlmsgHdrLen || l > len(r) {
				break
			}
			if binary.NativeEndian.Uint16(r[4:6]) == unix.NLMSG_ERROR && l >= nlmsgHdrLen+4 {
				errSeqs = append(errSeqs, binary.NativeEndian.Uint32(r[8:12]))
			}
			r = r[min((l+3)&^3, len(r)):]
		}
		var got []uint32
		parseAnswers(b, func(seq uint32, err error) {
			got = append(got, seq)
			var oe *netlink.OpError
			if err != nil && (!errors.As(err, &oe) || oe.Err == nil || oe.Err == unix.Errno(0)) {
				t.Fatalf("answer %d: error %v is not a kernel refusal", seq, err)
			}
		})
		if diff := cmp.Diff(errSeqs, got); diff != "" {
			t.Fatalf("answered sequence numbers (-headers +answers):\n%s", diff)
		}
	})
}
