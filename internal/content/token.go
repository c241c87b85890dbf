package content

import "fmt"

// Token gives the receiver a delivery token of the sender's mailbox made
// for it alone (docs/protocol.md sections 6.2 and 8.6):
//
//	body = token(32)
//
// The receiver sends to the sender with it from then on; once the
// sender has the delivery receipt of this content it revokes the token
// the receiver used before (the invite's). It is not stored and takes no
// place in the history; the all-zero token is malformed.
type Token struct {
	Token [32]byte
}

// Kind returns KindToken.
func (*Token) Kind() Kind { return KindToken }

// AppendBody appends the token body.
func (t *Token) AppendBody(b []byte) ([]byte, error) {
	if t.Token == ([32]byte{}) {
		return nil, fmt.Errorf("encode token: %w", ErrMalformed)
	}
	return append(b, t.Token[:]...), nil
}

func parseToken(b []byte) (Body, error) {
	if len(b) != 32 || [32]byte(b) == ([32]byte{}) {
		return nil, fmt.Errorf("token: %w", ErrMalformed)
	}
	return &Token{Token: [32]byte(b)}, nil
}
