package dnsfwd

import (
	"bytes"
	"testing"

	"golang.org/x/net/dns/dnsmessage"
)

// FuzzQuery: whatever a client sends, the forwarder's own answer to it
// (when it gives one) is a response with the client's ID, no longer than
// the query, and a query it forwards has one question it can compare
// answers with.
func FuzzQuery(f *testing.F) {
	f.Add([]byte("\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x03web\x07example\x00\x00\x01\x00\x01"))
	f.Add([]byte("\x12\x34\x29\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\x00\x06\x00\x01"))
	f.Add([]byte("\x12\x34\x01\x00\x00\x02\x00\x00\x00\x00\x00\x00\xc0\x0c"))
	f.Fuzz(func(t *testing.T, b []byte) {
		qu, rcode, err := parseQuery(b)
		if err != nil {
			return
		}
		if len(b) < headerLen {
			t.Fatal("a message shorter than a header taken")
		}
		for _, r := range []dnsmessage.RCode{rcode, dnsmessage.RCodeRefused, dnsmessage.RCodeServerFailure} {
			if r == dnsmessage.RCodeSuccess {
				continue
			}
			out := reply(qu, r, r != dnsmessage.RCodeFormatError)
			var p dnsmessage.Parser
			h, err := p.Start(out)
			if err != nil {
				t.Fatalf("own answer does not parse: %v", err)
			}
			if !h.Response || h.ID != qu.hdr.ID || h.RCode != r {
				t.Fatalf("own answer %+v to ID %d, rcode %v", h, qu.hdr.ID, r)
			}
			if len(out) > len(b) && r != dnsmessage.RCodeFormatError {
				// Compression may only shorten the question; a
				// reply must never amplify.
				t.Fatalf("own answer of %d bytes to a query of %d", len(out), len(b))
			}
		}
		if rcode == dnsmessage.RCodeSuccess {
			// The query as an answer to itself (QR set) checks.
			a := bytes.Clone(b)
			a[2] |= 0x80
			if err := checkAnswer(a, qu.hdr.ID, qu.q); err != nil {
				t.Fatalf("the query's own echo is not its answer: %v", err)
			}
		}
	})
}

// FuzzAnswer: whatever an upstream sends, checkAnswer takes it only if it
// is a response with the ID and question asked.
func FuzzAnswer(f *testing.F) {
	f.Add([]byte("\x12\x34\x81\x80\x00\x01\x00\x01\x00\x00\x00\x00\x03web\x07example\x00\x00\x01\x00\x01\xc0\x0c\x00\x01\x00\x01\x00\x00\x00\x3c\x00\x04\xc0\x00\x02\x01"), uint16(0x1234))
	f.Add([]byte("\x12\x34\x81\x80\x00\x01\x00\x00\x00\x00\x00\x00\x03WEB\x07example\x00\x00\x01\x00\x01"), uint16(0x1234))
	q := dnsmessage.Question{Name: dnsmessage.MustNewName("web.example."), Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET}
	f.Fuzz(func(t *testing.T, b []byte, id uint16) {
		if checkAnswer(b, id, q) != nil {
			return
		}
		var p dnsmessage.Parser
		h, err := p.Start(b)
		if err != nil || !h.Response || h.ID != id {
			t.Fatalf("taken: %+v, %v", h, err)
		}
		got, err := p.Question()
		if err != nil || got.Type != q.Type || got.Class != q.Class || !bytes.EqualFold([]byte(got.Name.String()), []byte(q.Name.String())) {
			t.Fatalf("taken with question %v, %v", got, err)
		}
	})
}
