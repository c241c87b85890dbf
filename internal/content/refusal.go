package content

import "fmt"

// Reasons for a Refusal.
const (
	RefusedUsed    byte = 1 // the invite was used already (by someone else)
	RefusedUnknown byte = 2 // the inviter never made this invite (the link was altered)
	RefusedExpired byte = 3 // the invite had expired
)

// Refusal is the inviter's answer to an introduction it did not accept,
// so that the invitee learns its new contact will never hear from it:
//
//	body = introduction id(16) || reason(1: 1 used, 2 unknown, 3 expired)
//
// It travels in the session the introduction started, so only the
// inviter can make it.
type Refusal struct {
	Introduction [16]byte
	Reason       byte
}

// Kind returns KindRefusal.
func (*Refusal) Kind() Kind { return KindRefusal }

func validReason(r byte) bool { return r >= RefusedUsed && r <= RefusedExpired }

// AppendBody appends the refusal body.
func (r *Refusal) AppendBody(b []byte) ([]byte, error) {
	if !validReason(r.Reason) {
		return nil, fmt.Errorf("encode refusal: %w", ErrMalformed)
	}
	b = append(b, r.Introduction[:]...)
	return append(b, r.Reason), nil
}

func parseRefusal(b []byte) (Body, error) {
	if len(b) != 17 || !validReason(b[16]) {
		return nil, fmt.Errorf("refusal: %w", ErrMalformed)
	}
	return &Refusal{Introduction: [16]byte(b[:16]), Reason: b[16]}, nil
}
