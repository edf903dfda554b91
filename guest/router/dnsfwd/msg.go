package dnsfwd

import (
	"encoding/binary"
	"errors"

	"golang.org/x/net/dns/dnsmessage"
)

// headerLen is the size of a DNS header: a message shorter than this has
// no ID to answer with.
const headerLen = 12

// query is what the forwarder reads of a client's message.
type query struct {
	hdr dnsmessage.Header
	q   dnsmessage.Question
}

// errDrop: a message not worth an answer (too short to carry an ID, or a
// response: answering responses is how two forwarders loop).
var errDrop = errors.New("not a query")

// parseQuery reads the header and the question of a client's message. It
// returns errDrop for a message to drop, or the rcode to answer with at
// once (FORMERR, NOTIMP) for one not to forward; zero (RCodeSuccess) and
// no error: forward it.
func parseQuery(b []byte) (query, dnsmessage.RCode, error) {
	var p dnsmessage.Parser
	var qu query
	h, err := p.Start(b)
	if err != nil || len(b) < headerLen {
		return qu, 0, errDrop
	}
	qu.hdr = h
	if h.Response {
		return qu, 0, errDrop
	}
	if h.OpCode != 0 {
		return qu, dnsmessage.RCodeNotImplemented, nil
	}
	// The counts are not in dnsmessage.Header: exactly one question, as
	// every resolver sends.
	if binary.BigEndian.Uint16(b[4:6]) != 1 {
		return qu, dnsmessage.RCodeFormatError, nil
	}
	if qu.q, err = p.Question(); err != nil {
		return qu, dnsmessage.RCodeFormatError, nil
	}
	return qu, dnsmessage.RCodeSuccess, nil
}

// reply is the forwarder's own answer to qu with rcode: the query's ID,
// opcode and RD bit, its question when it had a readable one, nothing
// else. It is never longer than a query that parses (see FuzzQuery).
func reply(qu query, rcode dnsmessage.RCode, withQuestion bool) []byte {
	b := dnsmessage.NewBuilder(make([]byte, 0, 512), dnsmessage.Header{
		ID: qu.hdr.ID, Response: true, OpCode: qu.hdr.OpCode,
		RecursionDesired: qu.hdr.RecursionDesired, RecursionAvailable: true, RCode: rcode,
	})
	if withQuestion {
		// Cannot fail: the question was parsed by the same package.
		_ = b.StartQuestions()
		_ = b.Question(qu.q)
	}
	out, err := b.Finish()
	if err != nil {
		// Unreachable for a parsed question; an answer with no
		// question is still an answer.
		bare := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: qu.hdr.ID, Response: true, RCode: rcode})
		out, _ = bare.Finish()
	}
	return out
}

// checkAnswer tells whether b is the answer to the query that was sent
// with ID id and question q: a response, that ID, exactly that question
// (the name compared as DNS does, ignoring ASCII case).
func checkAnswer(b []byte, id uint16, q dnsmessage.Question) error {
	var p dnsmessage.Parser
	h, err := p.Start(b)
	switch {
	case err != nil:
		return err
	case !h.Response:
		return errors.New("not a response")
	case h.ID != id:
		return errors.New("another ID")
	case binary.BigEndian.Uint16(b[4:6]) != 1:
		return errors.New("not one question")
	}
	aq, err := p.Question()
	if err != nil {
		return err
	}
	if aq.Type != q.Type || aq.Class != q.Class || !sameName(aq.Name, q.Name) {
		return errors.New("another question")
	}
	return nil
}

// sameName compares two names as DNS does: ASCII letters in any case.
func sameName(a, b dnsmessage.Name) bool {
	if a.Length != b.Length {
		return false
	}
	for i := range int(a.Length) {
		x, y := a.Data[i], b.Data[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

// setID writes id into a message's header (len(b) >= headerLen).
func setID(b []byte, id uint16) { binary.BigEndian.PutUint16(b, id) }
