package content

import (
	"fmt"
	"time"
	"unicode/utf8"
)

// EditWindow is how long after sending a message its sender may edit it
// or delete it for everyone; receivers ignore later edits and deletes.
const EditWindow = 24 * time.Hour

// Edit replaces the text of one of the sender's own messages (a text or
// a reply), for everyone:
//
//	body = target id(16) || text (UTF-8, the rest, 1..MaxText bytes)
//
// A receiver applies it only to a message of the same sender, sent at
// most EditWindow before the edit (docs/protocol.md section 8.4).
type Edit struct {
	Target [16]byte
	Text   string
}

// Kind returns KindEdit.
func (*Edit) Kind() Kind { return KindEdit }

// AppendBody appends the edit body.
func (e *Edit) AppendBody(b []byte) ([]byte, error) {
	if len(e.Text) == 0 || len(e.Text) > MaxText || !utf8.ValidString(e.Text) {
		return nil, fmt.Errorf("encode edit: %w", ErrMalformed)
	}
	b = append(b, e.Target[:]...)
	return append(b, e.Text...), nil
}

func parseEdit(b []byte) (Body, error) {
	if len(b) < 17 || len(b)-16 > MaxText || !utf8.Valid(b[16:]) {
		return nil, fmt.Errorf("edit: %w", ErrMalformed)
	}
	return &Edit{Target: [16]byte(b[:16]), Text: string(b[16:])}, nil
}
