package content

import "fmt"

// Delete deletes one of the sender's own messages for everyone:
//
//	body = target id(16)
//
// A receiver erases the message's body and keeps a tombstone; it applies
// the delete only to a message of the same sender, sent at most
// EditWindow before it (docs/protocol.md section 8.4).
type Delete struct {
	Target [16]byte
}

// Kind returns KindDelete.
func (*Delete) Kind() Kind { return KindDelete }

// AppendBody appends the delete body.
func (d *Delete) AppendBody(b []byte) ([]byte, error) { return append(b, d.Target[:]...), nil }

func parseDelete(b []byte) (Body, error) {
	if len(b) != 16 {
		return nil, fmt.Errorf("delete: %w", ErrMalformed)
	}
	return &Delete{Target: [16]byte(b)}, nil
}
