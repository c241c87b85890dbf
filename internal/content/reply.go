package content

import (
	"encoding/binary"
	"fmt"
	"unicode/utf8"
)

// Reply is a text that quotes an earlier message of the conversation:
//
//	body = n(8, big endian) || quoted id(16) || text (UTF-8, the rest, at most MaxText bytes)
//
// It takes a place in the sender's order like a Text. The quote is by id
// only: each side shows its own copy of the quoted message, or says it
// is gone (docs/protocol.md section 8.2).
type Reply struct {
	N     uint64
	Quote [16]byte
	Text  string
}

var _ Ordered = (*Reply)(nil)

// Kind returns KindReply.
func (*Reply) Kind() Kind { return KindReply }

// Counter returns N.
func (r *Reply) Counter() uint64 { return r.N }

// AppendBody appends the reply body.
func (r *Reply) AppendBody(b []byte) ([]byte, error) {
	if len(r.Text) > MaxText || !utf8.ValidString(r.Text) {
		return nil, fmt.Errorf("encode reply: %w", ErrMalformed)
	}
	b = binary.BigEndian.AppendUint64(b, r.N)
	b = append(b, r.Quote[:]...)
	return append(b, r.Text...), nil
}

func parseReply(b []byte) (Body, error) {
	if len(b) < 24 || len(b)-24 > MaxText || !utf8.Valid(b[24:]) {
		return nil, fmt.Errorf("reply: %w", ErrMalformed)
	}
	return &Reply{N: binary.BigEndian.Uint64(b), Quote: [16]byte(b[8:24]), Text: string(b[24:])}, nil
}
