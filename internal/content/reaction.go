package content

import (
	"fmt"
	"unicode/utf8"
)

// MaxEmoji bounds a reaction's emoji in bytes: room for the longest
// joined sequences (families, flags with tags, skin tones).
const MaxEmoji = 64

// Reaction is the sender's reaction to a message of the conversation,
// replacing any earlier one of the sender to the same message:
//
//	body = target id(16) || len(1, 0..MaxEmoji) || emoji (UTF-8)
//
// An empty emoji takes the sender's reaction back. It takes no place in
// the history (docs/protocol.md section 8.3).
type Reaction struct {
	Target [16]byte
	Emoji  string
}

// Kind returns KindReaction.
func (*Reaction) Kind() Kind { return KindReaction }

// AppendBody appends the reaction body.
func (r *Reaction) AppendBody(b []byte) ([]byte, error) {
	if len(r.Emoji) > MaxEmoji || !validShortText(r.Emoji) {
		return nil, fmt.Errorf("encode reaction: %w", ErrMalformed)
	}
	b = append(b, r.Target[:]...)
	b = append(b, byte(len(r.Emoji)))
	return append(b, r.Emoji...), nil
}

func parseReaction(b []byte) (Body, error) {
	if len(b) < 17 || len(b) != 17+int(b[16]) || int(b[16]) > MaxEmoji {
		return nil, fmt.Errorf("reaction: %w", ErrMalformed)
	}
	e := string(b[17:])
	if !validShortText(e) {
		return nil, fmt.Errorf("reaction: %w", ErrMalformed)
	}
	return &Reaction{Target: [16]byte(b[:16]), Emoji: e}, nil
}

// validShortText accepts UTF-8 without control characters.
func validShortText(s string) bool {
	if !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if r < 0x20 || r == 0x7f {
			return false
		}
	}
	return true
}
