package content

import (
	"encoding/binary"
	"fmt"
)

// MaxTimer is the longest disappearing-message timer, in seconds (a year).
const MaxTimer = 365 * 24 * 60 * 60

// Timer sets the conversation's disappearing-message timer, or says that
// the sender's Ferry took up a change the other side made:
//
//	body = n(8, big endian) || seconds(4, big endian, 0 off, at most MaxTimer)
//	       || origin sent(8, big endian, unix ms) || origin id(16)
//
// The origin names the change: the header of the Timer that first set
// it (its own, for a change the user made). Every device keeps the change
// with the greatest (origin sent, origin id) and, when it takes up a
// newer one, sends a Timer with that origin so that the other side knows
// from which of its messages on the new timer applies. A Timer takes a
// place in the sender's order (docs/protocol.md section 8.1).
type Timer struct {
	N          uint64
	Seconds    uint32
	OriginSent int64
	OriginID   [16]byte
}

var _ Ordered = (*Timer)(nil)

// Kind returns KindTimer.
func (*Timer) Kind() Kind { return KindTimer }

// Counter returns N.
func (t *Timer) Counter() uint64 { return t.N }

// AppendBody appends the timer body.
func (t *Timer) AppendBody(b []byte) ([]byte, error) {
	if t.Seconds > MaxTimer {
		return nil, fmt.Errorf("encode timer: %w", ErrMalformed)
	}
	b = binary.BigEndian.AppendUint64(b, t.N)
	b = binary.BigEndian.AppendUint32(b, t.Seconds)
	b = binary.BigEndian.AppendUint64(b, uint64(t.OriginSent))
	return append(b, t.OriginID[:]...), nil
}

func parseTimer(b []byte) (Body, error) {
	if len(b) != 36 {
		return nil, fmt.Errorf("timer: %w", ErrMalformed)
	}
	t := &Timer{N: binary.BigEndian.Uint64(b), Seconds: binary.BigEndian.Uint32(b[8:]), OriginSent: int64(binary.BigEndian.Uint64(b[12:])), OriginID: [16]byte(b[20:36])}
	if t.Seconds > MaxTimer {
		return nil, fmt.Errorf("timer of %d s: %w", t.Seconds, ErrMalformed)
	}
	return t, nil
}
