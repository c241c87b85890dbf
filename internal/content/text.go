package content

import (
	"encoding/binary"
	"fmt"
	"unicode/utf8"
)

// MaxText is the longest text in bytes.
const MaxText = 64 << 10

// Text is a text message:
//
//	body = n(8, big endian) || text (UTF-8, the rest, at most MaxText bytes)
type Text struct {
	// N is the sender's counter of ordered messages in the conversation.
	N    uint64
	Text string
}

var _ Ordered = (*Text)(nil)

// Kind returns KindText.
func (*Text) Kind() Kind { return KindText }

// Counter returns N.
func (t *Text) Counter() uint64 { return t.N }

// AppendBody appends the text body.
func (t *Text) AppendBody(b []byte) ([]byte, error) {
	if len(t.Text) > MaxText || !utf8.ValidString(t.Text) {
		return nil, fmt.Errorf("encode text: %w", ErrMalformed)
	}
	b = binary.BigEndian.AppendUint64(b, t.N)
	return append(b, t.Text...), nil
}

func parseText(b []byte) (Body, error) {
	if len(b) < 8 {
		return nil, fmt.Errorf("text without a counter: %w", ErrMalformed)
	}
	rest := b[8:]
	if len(rest) > MaxText || !utf8.Valid(rest) {
		return nil, fmt.Errorf("text: %w", ErrMalformed)
	}
	return &Text{N: binary.BigEndian.Uint64(b), Text: string(rest)}, nil
}
