package content

import "fmt"

// Typing states.
const (
	TypingStopped byte = 0
	TypingStarted byte = 1
)

// Typing says the sender started or stopped typing in the conversation:
//
//	body = state(1: 0 stopped, 1 typing)
//
// It is not stored and takes no place in the history; a receiver shows it
// for a few seconds and ignores it when it arrives late (docs/protocol.md
// section 8.5).
type Typing struct {
	State byte
}

// Kind returns KindTyping.
func (*Typing) Kind() Kind { return KindTyping }

// AppendBody appends the typing body.
func (t *Typing) AppendBody(b []byte) ([]byte, error) {
	if t.State > TypingStarted {
		return nil, fmt.Errorf("encode typing: %w", ErrMalformed)
	}
	return append(b, t.State), nil
}

func parseTyping(b []byte) (Body, error) {
	if len(b) != 1 || b[0] > TypingStarted {
		return nil, fmt.Errorf("typing: %w", ErrMalformed)
	}
	return &Typing{State: b[0]}, nil
}
