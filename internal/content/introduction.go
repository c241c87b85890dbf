package content

import (
	"encoding/binary"
	"fmt"
	"unicode/utf8"
)

// Limits on an introduction's fields.
const (
	MaxNameLen  = 64
	MaxRelayLen = 4096
)

// Introduction is the first message of an invitee to the inviter, made
// with the invite's secret (docs/client.md section 3):
//
//	body = secret(16) || mailbox(16) || token(32)
//	       || nameLen(1, 1..64) || name (UTF-8) || relayLen(2, big endian, 0..4096) || relay link
type Introduction struct {
	Secret  [16]byte // the invite's one-time secret
	Mailbox [16]byte // the invitee's mailbox
	Token   [32]byte // the invitee's delivery token
	Name    string   // the invitee's chosen name
	Relay   string   // the invitee's relay link
}

// Kind returns KindIntroduction.
func (*Introduction) Kind() Kind { return KindIntroduction }

// AppendBody appends the introduction body.
func (in *Introduction) AppendBody(b []byte) ([]byte, error) {
	if len(in.Name) == 0 || len(in.Name) > MaxNameLen || !utf8.ValidString(in.Name) || len(in.Relay) > MaxRelayLen {
		return nil, fmt.Errorf("encode introduction: %w", ErrMalformed)
	}
	b = append(b, in.Secret[:]...)
	b = append(b, in.Mailbox[:]...)
	b = append(b, in.Token[:]...)
	b = append(b, byte(len(in.Name)))
	b = append(b, in.Name...)
	b = binary.BigEndian.AppendUint16(b, uint16(len(in.Relay)))
	return append(b, in.Relay...), nil
}

func parseIntroduction(b []byte) (Body, error) {
	const fixed = 16 + 16 + 32
	if len(b) < fixed+1 {
		return nil, fmt.Errorf("introduction: %w", ErrMalformed)
	}
	in := &Introduction{Secret: [16]byte(b[0:16]), Mailbox: [16]byte(b[16:32]), Token: [32]byte(b[32:64])}
	n := int(b[fixed])
	b = b[fixed+1:]
	if n == 0 || n > MaxNameLen || len(b) < n+2 || !utf8.Valid(b[:n]) {
		return nil, fmt.Errorf("introduction name: %w", ErrMalformed)
	}
	in.Name = string(b[:n])
	m := int(binary.BigEndian.Uint16(b[n : n+2]))
	b = b[n+2:]
	if m > MaxRelayLen || len(b) != m {
		return nil, fmt.Errorf("introduction relay: %w", ErrMalformed)
	}
	in.Relay = string(b)
	return in, nil
}
