package wire

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
)

// Blob store and fan-out frames (docs/protocol.md sections 5.7 and 6.13):
// attachments travel as blobs, uploaded in pieces on the same multiplexed
// channel as text, and a group message is uploaded once and fanned out by
// the relay to several mailboxes. The relay learns a blob's size and the
// mailbox its quota is charged to, never what the bytes are.
const (
	TypeBlobCreate   Type = 0x50 // client: BlobCreate{ReqID, Flags, Key, Mailbox, Token, Size}; answered by BlobState
	TypeBlobStatus   Type = 0x51 // client: BlobStatus{ReqID, Key}; answered by BlobState
	TypeBlobPut      Type = 0x52 // client: BlobPut{ReqID, Key, Offset, Data}; answered by BlobState
	TypeBlobState    Type = 0x53 // relay: BlobState{ReqID, Complete, Size, Stored, Digest}
	TypeBlobGet      Type = 0x54 // client: BlobGet{ReqID, ID, Offset, Length}; answered by BlobData
	TypeBlobData     Type = 0x55 // relay: BlobData{ReqID, Offset, Data}
	TypeFanout       Type = 0x56 // client: Fanout{ID, Recipients, Envelope}; answered by FanoutResult
	TypeFanoutResult Type = 0x57 // relay: FanoutResult{ID, Failures}
)

// Blob limits.
const (
	// MaxBlobData is the most bytes one BlobPut or BlobData carries.
	MaxBlobData = 256 << 10
	// MaxBlobSize is the largest blob the protocol can describe: a 1 TiB
	// attachment with its encryption overhead. Relays set lower limits.
	MaxBlobSize = 1<<40 + 1<<26
	// MaxFanout is the most recipients of one Fanout.
	MaxFanout = 1024
)

// BlobCreate flags.
const (
	// BlobReset empties an existing blob (its writer found it corrupt)
	// before answering.
	BlobReset = 0x01
)

var blobTypeNames = map[Type]string{
	TypeBlobCreate: "BlobCreate", TypeBlobStatus: "BlobStatus", TypeBlobPut: "BlobPut",
	TypeBlobState: "BlobState", TypeBlobGet: "BlobGet", TypeBlobData: "BlobData",
	TypeFanout: "Fanout", TypeFanoutResult: "FanoutResult",
}

var (
	_ Message = BlobCreate{}
	_ Message = BlobStatus{}
	_ Message = BlobPut{}
	_ Message = BlobState{}
	_ Message = BlobGet{}
	_ Message = BlobData{}
	_ Message = Fanout{}
	_ Message = FanoutResult{}
)

// BlobID returns the id of the blob whose write key is key: the first 16
// bytes of SHA-256("ferry blob v1" || key). Whoever holds the id may read
// the blob once it is complete; only the holder of the key may write it.
func BlobID(key [32]byte) [16]byte {
	h := sha256.New()
	h.Write([]byte("ferry blob v1"))
	h.Write(key[:])
	return [16]byte(h.Sum(nil))
}

// BlobCreate creates the blob of write key Key, of Size bytes, charged to
// the quota of Mailbox, whose delivery token Token must be. Creating a
// blob that exists (same key) answers its state, so it doubles as the
// status query of a resumed upload; with Flags BlobReset the blob is
// emptied first.
//
//	reqid u32 | flags u8 | key [32] | mailbox [16] | token [32] | size u64
type BlobCreate struct {
	ReqID   uint32
	Flags   byte
	Key     [32]byte
	Mailbox [16]byte
	Token   [32]byte
	Size    uint64
}

// BlobStatus asks for the state of the blob of write key Key.
//
//	reqid u32 | key [32]
type BlobStatus struct {
	ReqID uint32
	Key   [32]byte
}

// BlobPut writes Data at Offset of the blob of write key Key. Offset is at
// most the bytes stored (a blob is written from its start, without gaps);
// bytes the relay has already are not written again.
//
//	reqid u32 | key [32] | offset u64 | data (the rest, 1 to MaxBlobData bytes)
type BlobPut struct {
	ReqID  uint32
	Key    [32]byte
	Offset uint64
	Data   []byte
}

// BlobState answers BlobCreate, BlobStatus and BlobPut: the blob's size,
// how many bytes of it the relay stores, and, once all are stored, that
// it is complete with the SHA-256 of its bytes (zeros before).
//
//	reqid u32 | flags u8 (bit 0: complete; other bits zero) | size u64 | stored u64 | digest [32]
type BlobState struct {
	ReqID    uint32
	Complete bool
	Size     uint64
	Stored   uint64
	Digest   [32]byte
}

// BlobGet reads Length bytes at Offset of the complete blob ID.
//
//	reqid u32 | id [16] | offset u64 | length u32 (1 to MaxBlobData)
type BlobGet struct {
	ReqID  uint32
	ID     [16]byte
	Offset uint64
	Length uint32
}

// BlobData answers BlobGet with the bytes at Offset: Length bytes, or
// fewer where the blob ends.
//
//	reqid u32 | offset u64 | data (the rest, at most MaxBlobData bytes)
type BlobData struct {
	ReqID  uint32
	Offset uint64
	Data   []byte
}

// Recipient is one mailbox of a Fanout with its delivery token.
//
//	mailbox [16] | token [32]
type Recipient struct {
	Mailbox [16]byte
	Token   [32]byte
}

// Fanout asks the relay to store one envelope in each recipient's
// mailbox, as a Send to each would, under one message ID.
//
//	id [16] | count u16 (1 to MaxFanout) | Recipient * count | envelope (the rest, at most MaxEnvelope)
type Fanout struct {
	ID         [16]byte
	Recipients []Recipient
	Envelope   []byte
}

// FanoutFailure is one recipient of a Fanout that did not get the
// envelope, by its index in Recipients, with the reason.
//
//	index u16 | code u16
type FanoutFailure struct {
	Index uint16
	Code  Code
}

// FanoutResult answers Fanout once every recipient's envelope is durable
// or refused: the refused ones, in increasing index order (none: all
// stored).
//
//	id [16] | count u16 | FanoutFailure * count
type FanoutResult struct {
	ID       [16]byte
	Failures []FanoutFailure
}

func (BlobCreate) Type() Type   { return TypeBlobCreate }
func (BlobStatus) Type() Type   { return TypeBlobStatus }
func (BlobPut) Type() Type      { return TypeBlobPut }
func (BlobState) Type() Type    { return TypeBlobState }
func (BlobGet) Type() Type      { return TypeBlobGet }
func (BlobData) Type() Type     { return TypeBlobData }
func (Fanout) Type() Type       { return TypeFanout }
func (FanoutResult) Type() Type { return TypeFanoutResult }

const blobStateComplete = 0x01

func (m BlobCreate) MarshalBinary() ([]byte, error) {
	if m.Flags&^BlobReset != 0 {
		return nil, fmt.Errorf("marshal BlobCreate: unknown flags 0x%02x", m.Flags)
	}
	if m.Size > MaxBlobSize {
		return nil, fmt.Errorf("marshal BlobCreate: size %d: %w", m.Size, ErrTooLarge)
	}
	b := binary.BigEndian.AppendUint32(make([]byte, 0, 93), m.ReqID)
	b = append(b, m.Flags)
	b = append(b, m.Key[:]...)
	b = append(b, m.Mailbox[:]...)
	b = append(b, m.Token[:]...)
	return binary.BigEndian.AppendUint64(b, m.Size), nil
}

func (m BlobStatus) MarshalBinary() ([]byte, error) {
	b := binary.BigEndian.AppendUint32(make([]byte, 0, 36), m.ReqID)
	return append(b, m.Key[:]...), nil
}

func (m BlobPut) MarshalBinary() ([]byte, error) {
	if len(m.Data) == 0 || len(m.Data) > MaxBlobData {
		return nil, fmt.Errorf("marshal BlobPut: %d bytes, want 1 to %d", len(m.Data), MaxBlobData)
	}
	b := binary.BigEndian.AppendUint32(make([]byte, 0, 44+len(m.Data)), m.ReqID)
	b = append(b, m.Key[:]...)
	b = binary.BigEndian.AppendUint64(b, m.Offset)
	return append(b, m.Data...), nil
}

func (m BlobState) MarshalBinary() ([]byte, error) {
	if m.Stored > m.Size || (m.Complete && m.Stored != m.Size) || (!m.Complete && m.Digest != [32]byte{}) {
		return nil, fmt.Errorf("marshal BlobState: inconsistent state")
	}
	b := binary.BigEndian.AppendUint32(make([]byte, 0, 53), m.ReqID)
	var flags byte
	if m.Complete {
		flags |= blobStateComplete
	}
	b = append(b, flags)
	b = binary.BigEndian.AppendUint64(b, m.Size)
	b = binary.BigEndian.AppendUint64(b, m.Stored)
	return append(b, m.Digest[:]...), nil
}

func (m BlobGet) MarshalBinary() ([]byte, error) {
	if m.Length == 0 || m.Length > MaxBlobData {
		return nil, fmt.Errorf("marshal BlobGet: length %d, want 1 to %d", m.Length, MaxBlobData)
	}
	b := binary.BigEndian.AppendUint32(make([]byte, 0, 32), m.ReqID)
	b = append(b, m.ID[:]...)
	b = binary.BigEndian.AppendUint64(b, m.Offset)
	return binary.BigEndian.AppendUint32(b, m.Length), nil
}

func (m BlobData) MarshalBinary() ([]byte, error) {
	if len(m.Data) > MaxBlobData {
		return nil, fmt.Errorf("marshal BlobData: %d bytes: %w", len(m.Data), ErrTooLarge)
	}
	b := binary.BigEndian.AppendUint32(make([]byte, 0, 12+len(m.Data)), m.ReqID)
	b = binary.BigEndian.AppendUint64(b, m.Offset)
	return append(b, m.Data...), nil
}

func (m Fanout) MarshalBinary() ([]byte, error) {
	if len(m.Recipients) == 0 || len(m.Recipients) > MaxFanout {
		return nil, fmt.Errorf("marshal Fanout: %d recipients, want 1 to %d", len(m.Recipients), MaxFanout)
	}
	if len(m.Envelope) > MaxEnvelope {
		return nil, fmt.Errorf("marshal Fanout: envelope of %d bytes: %w", len(m.Envelope), ErrTooLarge)
	}
	b := make([]byte, 0, 18+48*len(m.Recipients)+len(m.Envelope))
	b = append(b, m.ID[:]...)
	b = binary.BigEndian.AppendUint16(b, uint16(len(m.Recipients)))
	for _, r := range m.Recipients {
		b = append(b, r.Mailbox[:]...)
		b = append(b, r.Token[:]...)
	}
	return append(b, m.Envelope...), nil
}

func (m FanoutResult) MarshalBinary() ([]byte, error) {
	if len(m.Failures) > MaxFanout {
		return nil, fmt.Errorf("marshal FanoutResult: %d failures: %w", len(m.Failures), ErrTooLarge)
	}
	b := append(make([]byte, 0, 18+4*len(m.Failures)), m.ID[:]...)
	b = binary.BigEndian.AppendUint16(b, uint16(len(m.Failures)))
	for i, f := range m.Failures {
		if i > 0 && f.Index <= m.Failures[i-1].Index {
			return nil, fmt.Errorf("marshal FanoutResult: failures not in increasing index order")
		}
		b = binary.BigEndian.AppendUint16(b, f.Index)
		b = binary.BigEndian.AppendUint16(b, uint16(f.Code))
	}
	return b, nil
}

func (m *BlobCreate) UnmarshalBinary(b []byte) error {
	r := reader{b: b}
	m.ReqID = r.u32()
	m.Flags = r.u8()
	if r.err == nil && m.Flags&^BlobReset != 0 {
		r.err = fmt.Errorf("unknown flags 0x%02x", m.Flags)
	}
	r.array(m.Key[:])
	r.array(m.Mailbox[:])
	r.array(m.Token[:])
	m.Size = r.u64()
	if r.err == nil && m.Size > MaxBlobSize {
		r.err = fmt.Errorf("size %d: %w", m.Size, ErrTooLarge)
	}
	return r.done(TypeBlobCreate)
}

func (m *BlobStatus) UnmarshalBinary(b []byte) error {
	r := reader{b: b}
	m.ReqID = r.u32()
	r.array(m.Key[:])
	return r.done(TypeBlobStatus)
}

func (m *BlobPut) UnmarshalBinary(b []byte) error {
	r := reader{b: b}
	m.ReqID = r.u32()
	r.array(m.Key[:])
	m.Offset = r.u64()
	m.Data = r.rest(MaxBlobData)
	if r.err == nil && len(m.Data) == 0 {
		r.err = errShort
	}
	return r.done(TypeBlobPut)
}

func (m *BlobState) UnmarshalBinary(b []byte) error {
	r := reader{b: b}
	m.ReqID = r.u32()
	flags := r.u8()
	if r.err == nil && flags&^blobStateComplete != 0 {
		r.err = fmt.Errorf("unknown flags 0x%02x", flags)
	}
	m.Complete = flags&blobStateComplete != 0
	m.Size = r.u64()
	m.Stored = r.u64()
	r.array(m.Digest[:])
	if r.err == nil && (m.Stored > m.Size || (m.Complete && m.Stored != m.Size) || (!m.Complete && m.Digest != [32]byte{})) {
		r.err = fmt.Errorf("inconsistent state")
	}
	return r.done(TypeBlobState)
}

func (m *BlobGet) UnmarshalBinary(b []byte) error {
	r := reader{b: b}
	m.ReqID = r.u32()
	r.array(m.ID[:])
	m.Offset = r.u64()
	m.Length = r.u32()
	if r.err == nil && (m.Length == 0 || m.Length > MaxBlobData) {
		r.err = fmt.Errorf("length %d, want 1 to %d", m.Length, MaxBlobData)
	}
	return r.done(TypeBlobGet)
}

func (m *BlobData) UnmarshalBinary(b []byte) error {
	r := reader{b: b}
	m.ReqID = r.u32()
	m.Offset = r.u64()
	m.Data = r.rest(MaxBlobData)
	return r.done(TypeBlobData)
}

func (m *Fanout) UnmarshalBinary(b []byte) error {
	r := reader{b: b}
	r.array(m.ID[:])
	n := int(r.u16())
	if r.err == nil && (n == 0 || n > MaxFanout) {
		r.err = fmt.Errorf("%d recipients, want 1 to %d", n, MaxFanout)
	}
	if r.err == nil && 48*n > len(r.b) {
		r.err = errShort
	}
	if r.err == nil {
		m.Recipients = make([]Recipient, n)
		for i := range m.Recipients {
			r.array(m.Recipients[i].Mailbox[:])
			r.array(m.Recipients[i].Token[:])
		}
	}
	m.Envelope = r.rest(MaxEnvelope)
	return r.done(TypeFanout)
}

func (m *FanoutResult) UnmarshalBinary(b []byte) error {
	r := reader{b: b}
	r.array(m.ID[:])
	n := int(r.u16())
	if r.err == nil && n > MaxFanout {
		r.err = fmt.Errorf("%d failures: %w", n, ErrTooLarge)
	}
	if r.err == nil && 4*n != len(r.b) {
		r.err = fmt.Errorf("%d failures in %d bytes", n, len(r.b))
	}
	if r.err == nil && n > 0 {
		m.Failures = make([]FanoutFailure, n)
		for i := range m.Failures {
			m.Failures[i] = FanoutFailure{Index: r.u16(), Code: Code(r.u16())}
			if i > 0 && m.Failures[i].Index <= m.Failures[i-1].Index {
				r.err = fmt.Errorf("failures not in increasing index order")
				break
			}
		}
	}
	return r.done(TypeFanoutResult)
}

// decodeBlob decodes the frames of this file; ok is false for other types.
func decodeBlob(f Frame) (m Message, ok bool, err error) {
	var u interface {
		Message
		UnmarshalBinary([]byte) error
	}
	switch f.Type {
	case TypeBlobCreate:
		u = &BlobCreate{}
	case TypeBlobStatus:
		u = &BlobStatus{}
	case TypeBlobPut:
		u = &BlobPut{}
	case TypeBlobState:
		u = &BlobState{}
	case TypeBlobGet:
		u = &BlobGet{}
	case TypeBlobData:
		u = &BlobData{}
	case TypeFanout:
		u = &Fanout{}
	case TypeFanoutResult:
		u = &FanoutResult{}
	default:
		return nil, false, nil
	}
	if err := u.UnmarshalBinary(f.Payload); err != nil {
		return nil, true, err
	}
	switch v := u.(type) {
	case *BlobCreate:
		return *v, true, nil
	case *BlobStatus:
		return *v, true, nil
	case *BlobPut:
		return *v, true, nil
	case *BlobState:
		return *v, true, nil
	case *BlobGet:
		return *v, true, nil
	case *BlobData:
		return *v, true, nil
	case *Fanout:
		return *v, true, nil
	default:
		return *u.(*FanoutResult), true, nil
	}
}
