package ferry

import (
	"encoding/binary"
	"errors"
	"fmt"
	"unicode/utf8"
)

// Content is what one end-to-end encrypted message carries, after the
// session layer has removed sealed sender and the ratchet. docs/client.md
// ("Content format") specifies the bytes:
//
//	content = version(1)=1 || kind(1) || body
//	text:          id(16) || sent(8, unix ms, big endian) || n(8, big endian) || text (UTF-8, rest)
//	receipt:       id(16) || sent(8) || status(1) || count(2) || count * message id(16)
//	introduction:  id(16) || sent(8) || secret(16) || mailbox(16) || token(32)
//	               || nameLen(1) || name || relayLen(2) || relay link
//
// Unknown versions and kinds are rejected (the caller drops the message).
const contentVersion = 1

// ContentKind is the type of a Content.
type ContentKind byte

// Content kinds.
const (
	KindText         ContentKind = 1
	KindReceipt      ContentKind = 2
	KindIntroduction ContentKind = 3
)

// Receipt statuses.
const (
	ReceiptDelivered byte = 1
	ReceiptRead      byte = 2
)

// Limits on content fields.
const (
	// MaxText is the longest text in bytes (the relay's envelope limit is
	// 256 KiB; this leaves room for the session layer's overhead).
	MaxText = 64 << 10
	// maxReceiptIDs bounds a receipt's id list.
	maxReceiptIDs = 4096
	maxNameLen    = 64
	maxRelayLen   = 4096
	contentHeader = 2 + 16 + 8
)

var errContent = errors.New("malformed content")

// content is one decoded message content.
type content struct {
	Kind ContentKind
	ID   [16]byte
	Sent int64 // unix milliseconds, as claimed by the sender

	Text string // KindText
	N    uint64 // KindText: the sender's counter in this conversation, from 1

	Status byte       // KindReceipt
	IDs    [][16]byte // KindReceipt

	Secret  [16]byte // KindIntroduction: the invite's one-time secret
	Mailbox [16]byte // KindIntroduction: the sender's mailbox
	Token   [32]byte // KindIntroduction: the sender's delivery token
	Name    string   // KindIntroduction: the sender's chosen name
	Relay   string   // KindIntroduction: the sender's relay link
}

func (c *content) marshal() ([]byte, error) {
	b := make([]byte, 0, contentHeader+len(c.Text)+len(c.Name)+len(c.Relay)+16*len(c.IDs)+80)
	b = append(b, contentVersion, byte(c.Kind))
	b = append(b, c.ID[:]...)
	b = binary.BigEndian.AppendUint64(b, uint64(c.Sent))
	switch c.Kind {
	case KindText:
		if len(c.Text) > MaxText || !utf8.ValidString(c.Text) {
			return nil, fmt.Errorf("encode text: %w", errContent)
		}
		b = binary.BigEndian.AppendUint64(b, c.N)
		b = append(b, c.Text...)
	case KindReceipt:
		if len(c.IDs) == 0 || len(c.IDs) > maxReceiptIDs || (c.Status != ReceiptDelivered && c.Status != ReceiptRead) {
			return nil, fmt.Errorf("encode receipt: %w", errContent)
		}
		b = append(b, c.Status)
		b = binary.BigEndian.AppendUint16(b, uint16(len(c.IDs)))
		for _, id := range c.IDs {
			b = append(b, id[:]...)
		}
	case KindIntroduction:
		if len(c.Name) == 0 || len(c.Name) > maxNameLen || !utf8.ValidString(c.Name) || len(c.Relay) > maxRelayLen {
			return nil, fmt.Errorf("encode introduction: %w", errContent)
		}
		b = append(b, c.Secret[:]...)
		b = append(b, c.Mailbox[:]...)
		b = append(b, c.Token[:]...)
		b = append(b, byte(len(c.Name)))
		b = append(b, c.Name...)
		b = binary.BigEndian.AppendUint16(b, uint16(len(c.Relay)))
		b = append(b, c.Relay...)
	default:
		return nil, fmt.Errorf("encode content kind %d: %w", c.Kind, errContent)
	}
	return b, nil
}

// parseContent decodes b. It never retains b.
func parseContent(b []byte) (*content, error) {
	if len(b) < contentHeader {
		return nil, errContent
	}
	if b[0] != contentVersion {
		return nil, fmt.Errorf("content version %d: %w", b[0], errContent)
	}
	c := &content{Kind: ContentKind(b[1])}
	copy(c.ID[:], b[2:18])
	c.Sent = int64(binary.BigEndian.Uint64(b[18:26]))
	rest := b[contentHeader:]
	switch c.Kind {
	case KindText:
		if len(rest) < 8 {
			return nil, errContent
		}
		c.N = binary.BigEndian.Uint64(rest[:8])
		rest = rest[8:]
		if len(rest) > MaxText || !utf8.Valid(rest) {
			return nil, errContent
		}
		c.Text = string(rest)
	case KindReceipt:
		if len(rest) < 3 {
			return nil, errContent
		}
		c.Status = rest[0]
		n := int(binary.BigEndian.Uint16(rest[1:3]))
		rest = rest[3:]
		if (c.Status != ReceiptDelivered && c.Status != ReceiptRead) || n == 0 || n > maxReceiptIDs || len(rest) != 16*n {
			return nil, errContent
		}
		c.IDs = make([][16]byte, n)
		for i := range c.IDs {
			copy(c.IDs[i][:], rest[16*i:])
		}
	case KindIntroduction:
		if len(rest) < 16+16+32+1 {
			return nil, errContent
		}
		copy(c.Secret[:], rest[0:16])
		copy(c.Mailbox[:], rest[16:32])
		copy(c.Token[:], rest[32:64])
		n := int(rest[64])
		rest = rest[65:]
		if n == 0 || n > maxNameLen || len(rest) < n+2 || !utf8.Valid(rest[:n]) {
			return nil, errContent
		}
		c.Name = string(rest[:n])
		rest = rest[n:]
		m := int(binary.BigEndian.Uint16(rest[0:2]))
		rest = rest[2:]
		if m > maxRelayLen || len(rest) != m {
			return nil, errContent
		}
		c.Relay = string(rest)
	default:
		return nil, fmt.Errorf("content kind %d: %w", c.Kind, errContent)
	}
	return c, nil
}
