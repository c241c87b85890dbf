// Package content is what Ferry clients say to each other inside the
// end-to-end encryption: one Content per message, made of a header (the
// message id and the time the sender claims) and a typed Body of one kind.
// docs/client.md section 5 specifies every byte:
//
//	content = version(1)=1 || kind(1) || id(16) || sent(8, unix ms, big endian) || body
//
// Each kind is its own type with its own encoding, in its own file, listed
// once in the kinds table below; adding a kind is a new file and one line
// there. A kind this version does not know parses as Unknown, keeping its
// bytes, so a message from a newer client is kept and shown as
// unsupported rather than dropped.
//
// It is not the session layer (the bytes here are what the Double Ratchet
// encrypts) and it does not act on a message: the client's receive
// pipeline has one handler per kind.
package content

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Version is the content format version, the first byte of every content.
const Version = 1

// HeaderLen is the length of the header before the body.
const HeaderLen = 1 + 1 + 16 + 8

// MaxBody bounds the body of any kind, known or not (the relay's envelope
// limit is 256 KiB; this leaves room for the session layer).
const MaxBody = 192 << 10

// Kind is the type of a Body.
type Kind byte

// Kinds. Numbers are never reused.
const (
	KindText         Kind = 1 // Text
	KindReceipt      Kind = 2 // Receipt
	KindIntroduction Kind = 3 // Introduction
	KindRefusal      Kind = 4 // Refusal
	KindAttachment   Kind = 5 // Attachment
	KindGroupControl Kind = 6 // GroupControl

	// Reserved for kinds to come (they parse as Unknown until then):
	// 7 group message.

	KindReaction Kind = 8  // Reaction
	KindEdit     Kind = 9  // Edit
	KindDelete   Kind = 10 // Delete
	KindReply    Kind = 11 // Reply
	KindTimer    Kind = 12 // Timer
	KindTyping   Kind = 13 // Typing
	KindToken    Kind = 14 // Token
)

// ErrMalformed is wrapped by every parse and encode failure.
var ErrMalformed = errors.New("malformed content")

// Content is one message's plaintext.
type Content struct {
	// ID is the sender's message id, the same 16 bytes as the relay Send
	// id, authenticated here so receipts and answers cannot be redirected.
	ID [16]byte
	// Sent is when the sender says it sent the message, in Unix
	// milliseconds.
	Sent int64
	Body Body
}

// Body is a content's kind-specific part.
type Body interface {
	// Kind is the body's kind.
	Kind() Kind
	// AppendBody appends the body's encoding to b, or fails (wrapping
	// ErrMalformed) if a field is out of its range.
	AppendBody(b []byte) ([]byte, error)
}

// Ordered is implemented by the bodies that take a place in a
// conversation's history, shown in the order their sender sent them.
type Ordered interface {
	Body
	// Counter is the sender's counter of ordered messages in the
	// conversation, from 1.
	Counter() uint64
}

// kinds maps each kind this version knows to its body parser. A parser
// must accept exactly what the kind's AppendBody writes: parse then
// encode gives back the same bytes.
var kinds = map[Kind]func([]byte) (Body, error){
	KindText:         parseText,
	KindReceipt:      parseReceipt,
	KindIntroduction: parseIntroduction,
	KindRefusal:      parseRefusal,
	KindAttachment:   parseAttachment,
	KindGroupControl: parseGroupControl,
	KindReaction:     parseReaction,
	KindEdit:         parseEdit,
	KindDelete:       parseDelete,
	KindReply:        parseReply,
	KindTimer:        parseTimer,
	KindTyping:       parseTyping,
	KindToken:        parseToken,
}

// Known reports whether this version parses kind k.
func Known(k Kind) bool { _, ok := kinds[k]; return ok }

// Parse decodes a content. It never retains b. A kind this version does
// not know gives an Unknown body; kind 0, another version, or a known
// kind whose body does not parse is an error.
func Parse(b []byte) (*Content, error) {
	if len(b) < HeaderLen {
		return nil, fmt.Errorf("content of %d bytes: %w", len(b), ErrMalformed)
	}
	if b[0] != Version {
		return nil, fmt.Errorf("content version %d: %w", b[0], ErrMalformed)
	}
	c := &Content{ID: [16]byte(b[2:18]), Sent: int64(binary.BigEndian.Uint64(b[18:26]))}
	body, err := ParseBody(Kind(b[1]), b[HeaderLen:])
	if err != nil {
		return nil, err
	}
	c.Body = body
	return c, nil
}

// ParseBody decodes the body of a content of kind k.
func ParseBody(k Kind, b []byte) (Body, error) {
	if len(b) > MaxBody {
		return nil, fmt.Errorf("body of %d bytes: %w", len(b), ErrMalformed)
	}
	if k == 0 {
		return nil, fmt.Errorf("content kind 0: %w", ErrMalformed)
	}
	parse, ok := kinds[k]
	if !ok {
		return &Unknown{K: k, Data: append([]byte(nil), b...)}, nil
	}
	return parse(b)
}

// Marshal encodes c.
func (c *Content) Marshal() ([]byte, error) {
	if c.Body == nil || c.Body.Kind() == 0 {
		return nil, fmt.Errorf("encode content without a kind: %w", ErrMalformed)
	}
	b := make([]byte, HeaderLen, HeaderLen+64)
	b[0], b[1] = Version, byte(c.Body.Kind())
	copy(b[2:18], c.ID[:])
	binary.BigEndian.PutUint64(b[18:26], uint64(c.Sent))
	b, err := c.Body.AppendBody(b)
	if err != nil {
		return nil, err
	}
	if len(b)-HeaderLen > MaxBody {
		return nil, fmt.Errorf("encode body of %d bytes: %w", len(b)-HeaderLen, ErrMalformed)
	}
	return b, nil
}

// EncodeBody returns the encoding of body alone, as stored locally.
func EncodeBody(body Body) ([]byte, error) {
	return body.AppendBody(nil)
}

// Unknown is the body of a kind this version does not know, kept as sent.
type Unknown struct {
	K    Kind
	Data []byte
}

// Kind returns the unknown kind.
func (u *Unknown) Kind() Kind { return u.K }

// AppendBody appends the body's bytes unchanged.
func (u *Unknown) AppendBody(b []byte) ([]byte, error) { return append(b, u.Data...), nil }
