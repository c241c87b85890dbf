package wire

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Code says why a request failed, in SendErr and Error.
type Code uint16

// Error codes. A client acts on the code; Msg is for people and logs.
const (
	CodeBadRequest  Code = 1 // malformed or out-of-place frame; do not retry unchanged
	CodeDenied      Code = 2 // unknown mailbox or wrong delivery token (the relay does not say which)
	CodeTooLarge    Code = 3 // envelope or prekey over its limit
	CodeQuota       Code = 4 // recipient mailbox full; retry later
	CodeRateLimited Code = 5 // too many requests; retry later
	CodeUnavailable Code = 6 // temporary relay failure (storage); retry later
	CodeNotFound    Code = 7 // no prekeys uploaded for that mailbox
	CodeInternal    Code = 8 // relay bug; retry later
)

func (c Code) String() string {
	switch c {
	case CodeBadRequest:
		return "bad request"
	case CodeDenied:
		return "denied"
	case CodeTooLarge:
		return "too large"
	case CodeQuota:
		return "over quota"
	case CodeRateLimited:
		return "rate limited"
	case CodeUnavailable:
		return "unavailable"
	case CodeNotFound:
		return "not found"
	case CodeInternal:
		return "internal error"
	}
	return fmt.Sprintf("code %d", uint16(c))
}

// Temporary reports whether a request that failed with c may succeed if
// retried unchanged later.
func (c Code) Temporary() bool {
	switch c {
	case CodeQuota, CodeRateLimited, CodeUnavailable, CodeInternal:
		return true
	}
	return false
}

// Message is a typed frame payload.
type Message interface {
	// Type is the frame type that carries the message.
	Type() Type
	// MarshalBinary returns the payload, or an error if a field is over its
	// limit.
	MarshalBinary() ([]byte, error)
}

// Compile-time checks that every message implements Message.
var (
	_ Message = Ping{}
	_ Message = Pong{}
	_ Message = OK{}
	_ Message = Error{}
	_ Message = Send{}
	_ Message = SendOK{}
	_ Message = SendErr{}
	_ Message = Subscribe{}
	_ Message = Deliver{}
	_ Message = Ack{}
	_ Message = SetToken{}
	_ Message = PutPrekeys{}
	_ Message = GetBundle{}
	_ Message = Bundle{}
	_ Message = AddToken{}
	_ Message = RemoveToken{}
	_ Message = GetPrekeyCount{}
	_ Message = PrekeyCount{}
)

// NewFrame marshals m into a frame.
func NewFrame(m Message) (Frame, error) {
	p, err := m.MarshalBinary()
	if err != nil {
		return Frame{}, err
	}
	if len(p) > MaxPayload {
		return Frame{}, fmt.Errorf("marshal %v: %w", m.Type(), ErrTooLarge)
	}
	return Frame{Type: m.Type(), Payload: p}, nil
}

// Decode parses the payload of f into its typed message (a value, such as
// Send, not *Send). For a type this version does not define it returns
// ErrUnknownType, and the caller skips the frame.
func Decode(f Frame) (Message, error) {
	var (
		m   Message
		err error
	)
	switch f.Type {
	case TypePing:
		var v Ping
		err, m = v.UnmarshalBinary(f.Payload), &v
	case TypePong:
		var v Pong
		err, m = v.UnmarshalBinary(f.Payload), &v
	case TypeOK:
		var v OK
		err, m = v.UnmarshalBinary(f.Payload), &v
	case TypeError:
		var v Error
		err, m = v.UnmarshalBinary(f.Payload), &v
	case TypeSend:
		var v Send
		err, m = v.UnmarshalBinary(f.Payload), &v
	case TypeSendOK:
		var v SendOK
		err, m = v.UnmarshalBinary(f.Payload), &v
	case TypeSendErr:
		var v SendErr
		err, m = v.UnmarshalBinary(f.Payload), &v
	case TypeSubscribe:
		var v Subscribe
		err, m = v.UnmarshalBinary(f.Payload), &v
	case TypeDeliver:
		var v Deliver
		err, m = v.UnmarshalBinary(f.Payload), &v
	case TypeAck:
		var v Ack
		err, m = v.UnmarshalBinary(f.Payload), &v
	case TypeSetToken:
		var v SetToken
		err, m = v.UnmarshalBinary(f.Payload), &v
	case TypePutPrekeys:
		var v PutPrekeys
		err, m = v.UnmarshalBinary(f.Payload), &v
	case TypeGetBundle:
		var v GetBundle
		err, m = v.UnmarshalBinary(f.Payload), &v
	case TypeBundle:
		var v Bundle
		err, m = v.UnmarshalBinary(f.Payload), &v
	case TypeAddToken:
		var v AddToken
		err, m = v.UnmarshalBinary(f.Payload), &v
	case TypeRemoveToken:
		var v RemoveToken
		err, m = v.UnmarshalBinary(f.Payload), &v
	case TypeGetPrekeyCount:
		var v GetPrekeyCount
		err, m = v.UnmarshalBinary(f.Payload), &v
	case TypePrekeyCount:
		var v PrekeyCount
		err, m = v.UnmarshalBinary(f.Payload), &v
	case TypePutRanking:
		var v PutRanking
		err, m = v.UnmarshalBinary(f.Payload), &v
	case TypeGetRanking:
		var v GetRanking
		err, m = v.UnmarshalBinary(f.Payload), &v
	case TypeRankings:
		var v Rankings
		err, m = v.UnmarshalBinary(f.Payload), &v
	default:
		if m, ok, err := decodeBlob(f); ok {
			return m, err
		}
		return nil, fmt.Errorf("decode %v: %w", f.Type, ErrUnknownType)
	}
	if err != nil {
		return nil, err
	}
	return deref(m), nil
}

// deref turns the *T used for unmarshalling back into the T callers switch on.
func deref(m Message) Message {
	switch v := m.(type) {
	case *Ping:
		return *v
	case *Pong:
		return *v
	case *OK:
		return *v
	case *Error:
		return *v
	case *Send:
		return *v
	case *SendOK:
		return *v
	case *SendErr:
		return *v
	case *Subscribe:
		return *v
	case *Deliver:
		return *v
	case *Ack:
		return *v
	case *SetToken:
		return *v
	case *PutPrekeys:
		return *v
	case *GetBundle:
		return *v
	case *Bundle:
		return *v
	case *AddToken:
		return *v
	case *RemoveToken:
		return *v
	case *GetPrekeyCount:
		return *v
	case *PrekeyCount:
		return *v
	case *PutRanking:
		return *v
	case *GetRanking:
		return *v
	case *Rankings:
		return *v
	}
	return m
}

// Ping asks the peer to answer with a Pong carrying the same nonce.
//
//	nonce u64
type Ping struct{ Nonce uint64 }

// Pong answers a Ping.
//
//	nonce u64
type Pong struct{ Nonce uint64 }

// OK says the request ReqID succeeded.
//
//	reqid u32
type OK struct{ ReqID uint32 }

// Error says the request ReqID failed.
//
//	reqid u32 | code u16 | msglen u16 | msg
type Error struct {
	ReqID uint32
	Code  Code
	Msg   string // at most MaxMsg bytes
}

// Send asks the relay to store Envelope in mailbox To, authorised by the
// mailbox's delivery token. ID is chosen by the sender; the relay
// de-duplicates on (To, ID).
//
//	id [16] | to [16] | token [32] | envelope (the rest, at most MaxEnvelope)
type Send struct {
	ID       [16]byte
	To       [16]byte
	Token    [32]byte
	Envelope []byte
}

// SendOK says the envelope of Send ID is durably stored.
//
//	id [16]
type SendOK struct{ ID [16]byte }

// SendErr says Send ID failed.
//
//	id [16] | code u16 | msglen u16 | msg
type SendErr struct {
	ID   [16]byte
	Code Code
	Msg  string
}

// Subscribe asks the relay to push the envelopes of the connection's own
// mailbox (the one of its authenticated key), stored and future.
//
//	reqid u32
type Subscribe struct{ ReqID uint32 }

// Deliver pushes one stored envelope. Received is when the relay stored it,
// in Unix milliseconds.
//
//	seq u64 | id [16] | received i64 | envelope (the rest, at most MaxEnvelope)
type Deliver struct {
	Seq      uint64
	ID       [16]byte
	Received int64
	Envelope []byte
}

// Ack asks the relay to delete the delivered envelopes with these sequence
// numbers.
//
//	count u16 | seq u64 * count      (1 <= count <= MaxAcks)
type Ack struct{ Seqs []uint64 }

// SetToken registers the delivery token senders must present to reach the
// connection's mailbox, replacing every earlier one.
//
//	reqid u32 | token [32]
type SetToken struct {
	ReqID uint32
	Token [32]byte
}

// AddToken adds a delivery token to the connection's mailbox, keeping the
// others (one per contact or invite, so each can be revoked alone).
//
//	reqid u32 | token [32]
type AddToken struct {
	ReqID uint32
	Token [32]byte
}

// RemoveToken revokes one delivery token of the connection's mailbox.
//
//	reqid u32 | token [32]
type RemoveToken struct {
	ReqID uint32
	Token [32]byte
}

// GetPrekeyCount asks how many one-time prekeys the connection's own
// prekey directory entry has left.
//
//	reqid u32
type GetPrekeyCount struct{ ReqID uint32 }

// PrekeyCount answers GetPrekeyCount.
//
//	reqid u32 | onetime u32 | kem u32
type PrekeyCount struct {
	ReqID   uint32
	OneTime uint32 // one-time X25519 prekeys left
	KEM     uint32 // one-time ML-KEM prekeys left
}

// Prekey is one opaque one-time prekey blob with its id.
//
//	id u32 | len u16 | data      (1 <= len <= MaxPrekeyLen)
type Prekey struct {
	ID   uint32
	Data []byte
}

// PutPrekeys uploads the connection's prekeys. An empty Signed or LastResort
// leaves the stored one unchanged; OneTime and KEM are added to the stored
// lists (docs/protocol.md section 6 gives the relay's rules).
//
//	reqid u32
//	signedlen u16 | signed
//	count u16 | Prekey * count        one-time X25519 prekeys
//	count u16 | Prekey * count        one-time KEM prekeys
//	lastlen u16 | lastresort          last-resort KEM prekey
type PutPrekeys struct {
	ReqID      uint32
	Signed     []byte
	OneTime    []Prekey
	KEM        []Prekey
	LastResort []byte
}

// GetBundle asks for a prekey bundle of Mailbox, authorised by its delivery
// token.
//
//	reqid u32 | mailbox [16] | token [32]
type GetBundle struct {
	ReqID   uint32
	Mailbox [16]byte
	Token   [32]byte
}

// Bundle answers GetBundle: the signed prekey record, one one-time prekey
// (empty if none was left) and one one-time KEM prekey or, with
// KEMLastResort set, the last-resort KEM prekey.
//
//	reqid u32 | flags u8 (bit 0: KEMLastResort; other bits zero)
//	signedlen u16 | signed
//	onetimeid u32 | onetimelen u16 | onetime      (id 0 and len 0 when none)
//	kemid u32 | kemlen u16 | kem                  (id 0 when last resort)
type Bundle struct {
	ReqID         uint32
	Signed        []byte
	OneTimeID     uint32
	OneTime       []byte
	KEMID         uint32
	KEM           []byte
	KEMLastResort bool
}

const bundleFlagLastResort = 0x01

// Type implementations.

func (Ping) Type() Type           { return TypePing }
func (Pong) Type() Type           { return TypePong }
func (OK) Type() Type             { return TypeOK }
func (Error) Type() Type          { return TypeError }
func (Send) Type() Type           { return TypeSend }
func (SendOK) Type() Type         { return TypeSendOK }
func (SendErr) Type() Type        { return TypeSendErr }
func (Subscribe) Type() Type      { return TypeSubscribe }
func (Deliver) Type() Type        { return TypeDeliver }
func (Ack) Type() Type            { return TypeAck }
func (SetToken) Type() Type       { return TypeSetToken }
func (PutPrekeys) Type() Type     { return TypePutPrekeys }
func (GetBundle) Type() Type      { return TypeGetBundle }
func (Bundle) Type() Type         { return TypeBundle }
func (AddToken) Type() Type       { return TypeAddToken }
func (RemoveToken) Type() Type    { return TypeRemoveToken }
func (GetPrekeyCount) Type() Type { return TypeGetPrekeyCount }
func (PrekeyCount) Type() Type    { return TypePrekeyCount }

// Error makes Error usable as a Go error.
func (e Error) Error() string {
	if e.Msg == "" {
		return "relay: " + e.Code.String()
	}
	return "relay: " + e.Code.String() + ": " + e.Msg
}

// MarshalBinary implementations.

func (m Ping) MarshalBinary() ([]byte, error) {
	return binary.BigEndian.AppendUint64(nil, m.Nonce), nil
}
func (m Pong) MarshalBinary() ([]byte, error) {
	return binary.BigEndian.AppendUint64(nil, m.Nonce), nil
}
func (m OK) MarshalBinary() ([]byte, error) { return binary.BigEndian.AppendUint32(nil, m.ReqID), nil }
func (m Subscribe) MarshalBinary() ([]byte, error) {
	return binary.BigEndian.AppendUint32(nil, m.ReqID), nil
}
func (m SendOK) MarshalBinary() ([]byte, error) { return append([]byte(nil), m.ID[:]...), nil }

func (m Error) MarshalBinary() ([]byte, error) {
	if len(m.Msg) > MaxMsg {
		return nil, fmt.Errorf("marshal Error: message: %w", ErrTooLarge)
	}
	b := binary.BigEndian.AppendUint32(make([]byte, 0, 8+len(m.Msg)), m.ReqID)
	b = binary.BigEndian.AppendUint16(b, uint16(m.Code))
	return appendBytes16(b, []byte(m.Msg)), nil
}

func (m Send) MarshalBinary() ([]byte, error) {
	if len(m.Envelope) > MaxEnvelope {
		return nil, fmt.Errorf("marshal Send: envelope of %d bytes: %w", len(m.Envelope), ErrTooLarge)
	}
	b := make([]byte, 0, 64+len(m.Envelope))
	b = append(b, m.ID[:]...)
	b = append(b, m.To[:]...)
	b = append(b, m.Token[:]...)
	return append(b, m.Envelope...), nil
}

func (m SendErr) MarshalBinary() ([]byte, error) {
	if len(m.Msg) > MaxMsg {
		return nil, fmt.Errorf("marshal SendErr: message: %w", ErrTooLarge)
	}
	b := append(make([]byte, 0, 20+len(m.Msg)), m.ID[:]...)
	b = binary.BigEndian.AppendUint16(b, uint16(m.Code))
	return appendBytes16(b, []byte(m.Msg)), nil
}

func (m Deliver) MarshalBinary() ([]byte, error) {
	if len(m.Envelope) > MaxEnvelope {
		return nil, fmt.Errorf("marshal Deliver: envelope of %d bytes: %w", len(m.Envelope), ErrTooLarge)
	}
	b := binary.BigEndian.AppendUint64(make([]byte, 0, 32+len(m.Envelope)), m.Seq)
	b = append(b, m.ID[:]...)
	b = binary.BigEndian.AppendUint64(b, uint64(m.Received))
	return append(b, m.Envelope...), nil
}

func (m Ack) MarshalBinary() ([]byte, error) {
	if len(m.Seqs) == 0 || len(m.Seqs) > MaxAcks {
		return nil, fmt.Errorf("marshal Ack: %d sequence numbers, want 1 to %d", len(m.Seqs), MaxAcks)
	}
	b := binary.BigEndian.AppendUint16(make([]byte, 0, 2+8*len(m.Seqs)), uint16(len(m.Seqs)))
	for _, s := range m.Seqs {
		b = binary.BigEndian.AppendUint64(b, s)
	}
	return b, nil
}

func (m SetToken) MarshalBinary() ([]byte, error)    { return marshalToken(m.ReqID, m.Token), nil }
func (m AddToken) MarshalBinary() ([]byte, error)    { return marshalToken(m.ReqID, m.Token), nil }
func (m RemoveToken) MarshalBinary() ([]byte, error) { return marshalToken(m.ReqID, m.Token), nil }

// marshalToken is the layout SetToken, AddToken and RemoveToken share.
func marshalToken(reqID uint32, token [32]byte) []byte {
	b := binary.BigEndian.AppendUint32(make([]byte, 0, 36), reqID)
	return append(b, token[:]...)
}

func (m GetPrekeyCount) MarshalBinary() ([]byte, error) {
	return binary.BigEndian.AppendUint32(nil, m.ReqID), nil
}

func (m PrekeyCount) MarshalBinary() ([]byte, error) {
	b := binary.BigEndian.AppendUint32(make([]byte, 0, 12), m.ReqID)
	b = binary.BigEndian.AppendUint32(b, m.OneTime)
	return binary.BigEndian.AppendUint32(b, m.KEM), nil
}

func (m PutPrekeys) MarshalBinary() ([]byte, error) {
	if len(m.Signed) > MaxPrekeyLen || len(m.LastResort) > MaxPrekeyLen {
		return nil, fmt.Errorf("marshal PutPrekeys: prekey record: %w", ErrTooLarge)
	}
	if len(m.OneTime) > MaxPrekeys || len(m.KEM) > MaxPrekeys {
		return nil, fmt.Errorf("marshal PutPrekeys: more than %d prekeys: %w", MaxPrekeys, ErrTooLarge)
	}
	b := binary.BigEndian.AppendUint32(nil, m.ReqID)
	b = appendBytes16(b, m.Signed)
	for _, list := range [][]Prekey{m.OneTime, m.KEM} {
		b = binary.BigEndian.AppendUint16(b, uint16(len(list)))
		for _, p := range list {
			if len(p.Data) == 0 || len(p.Data) > MaxPrekeyLen {
				return nil, fmt.Errorf("marshal PutPrekeys: prekey %d of %d bytes, want 1 to %d", p.ID, len(p.Data), MaxPrekeyLen)
			}
			b = binary.BigEndian.AppendUint32(b, p.ID)
			b = appendBytes16(b, p.Data)
		}
	}
	b = appendBytes16(b, m.LastResort)
	if len(b) > MaxPayload {
		return nil, fmt.Errorf("marshal PutPrekeys: %w", ErrTooLarge)
	}
	return b, nil
}

func (m GetBundle) MarshalBinary() ([]byte, error) {
	b := binary.BigEndian.AppendUint32(make([]byte, 0, 52), m.ReqID)
	b = append(b, m.Mailbox[:]...)
	return append(b, m.Token[:]...), nil
}

func (m Bundle) MarshalBinary() ([]byte, error) {
	if len(m.Signed) > MaxPrekeyLen || len(m.OneTime) > MaxPrekeyLen || len(m.KEM) > MaxPrekeyLen {
		return nil, fmt.Errorf("marshal Bundle: prekey record: %w", ErrTooLarge)
	}
	b := binary.BigEndian.AppendUint32(nil, m.ReqID)
	var flags byte
	if m.KEMLastResort {
		flags |= bundleFlagLastResort
	}
	b = append(b, flags)
	b = appendBytes16(b, m.Signed)
	b = binary.BigEndian.AppendUint32(b, m.OneTimeID)
	b = appendBytes16(b, m.OneTime)
	b = binary.BigEndian.AppendUint32(b, m.KEMID)
	return appendBytes16(b, m.KEM), nil
}

func appendBytes16(b, v []byte) []byte {
	b = binary.BigEndian.AppendUint16(b, uint16(len(v)))
	return append(b, v...)
}

// reader consumes a payload strictly: every read is bounds-checked, and
// done fails if bytes are left over, so each message has one encoding.
type reader struct {
	b   []byte
	err error
}

var errShort = errors.New("truncated")

func (r *reader) next(n int) []byte {
	if r.err != nil {
		return nil
	}
	if n > len(r.b) {
		r.err = errShort
		r.b = nil
		return nil
	}
	v := r.b[:n:n]
	r.b = r.b[n:]
	return v
}

func (r *reader) u8() byte {
	if v := r.next(1); v != nil {
		return v[0]
	}
	return 0
}

func (r *reader) u16() uint16 {
	if v := r.next(2); v != nil {
		return binary.BigEndian.Uint16(v)
	}
	return 0
}

func (r *reader) u32() uint32 {
	if v := r.next(4); v != nil {
		return binary.BigEndian.Uint32(v)
	}
	return 0
}

func (r *reader) u64() uint64 {
	if v := r.next(8); v != nil {
		return binary.BigEndian.Uint64(v)
	}
	return 0
}

func (r *reader) array(dst []byte) { copy(dst, r.next(len(dst))) }

// bytes16 reads a u16-length-prefixed byte string of at most max bytes and
// returns a copy (nil when empty).
func (r *reader) bytes16(max int) []byte {
	n := int(r.u16())
	if r.err == nil && n > max {
		r.err = ErrTooLarge
		return nil
	}
	v := r.next(n)
	if len(v) == 0 {
		return nil
	}
	return append([]byte(nil), v...)
}

// rest returns a copy of the remaining bytes (nil when none).
func (r *reader) rest(max int) []byte {
	if r.err != nil {
		return nil
	}
	if len(r.b) > max {
		r.err = ErrTooLarge
		return nil
	}
	v := r.b
	r.b = nil
	if len(v) == 0 {
		return nil
	}
	return append([]byte(nil), v...)
}

func (r *reader) done(t Type) error {
	if r.err == nil && len(r.b) != 0 {
		r.err = fmt.Errorf("%d trailing bytes", len(r.b))
	}
	if r.err != nil {
		return fmt.Errorf("unmarshal %v: %w", t, r.err)
	}
	return nil
}

// UnmarshalBinary implementations. Each accepts exactly the bytes
// MarshalBinary writes and copies what it keeps.

func (m *Ping) UnmarshalBinary(b []byte) error {
	r := reader{b: b}
	m.Nonce = r.u64()
	return r.done(TypePing)
}

func (m *Pong) UnmarshalBinary(b []byte) error {
	r := reader{b: b}
	m.Nonce = r.u64()
	return r.done(TypePong)
}

func (m *OK) UnmarshalBinary(b []byte) error {
	r := reader{b: b}
	m.ReqID = r.u32()
	return r.done(TypeOK)
}

func (m *Error) UnmarshalBinary(b []byte) error {
	r := reader{b: b}
	m.ReqID = r.u32()
	m.Code = Code(r.u16())
	m.Msg = string(r.bytes16(MaxMsg))
	return r.done(TypeError)
}

func (m *Send) UnmarshalBinary(b []byte) error {
	r := reader{b: b}
	r.array(m.ID[:])
	r.array(m.To[:])
	r.array(m.Token[:])
	m.Envelope = r.rest(MaxEnvelope)
	return r.done(TypeSend)
}

func (m *SendOK) UnmarshalBinary(b []byte) error {
	r := reader{b: b}
	r.array(m.ID[:])
	return r.done(TypeSendOK)
}

func (m *SendErr) UnmarshalBinary(b []byte) error {
	r := reader{b: b}
	r.array(m.ID[:])
	m.Code = Code(r.u16())
	m.Msg = string(r.bytes16(MaxMsg))
	return r.done(TypeSendErr)
}

func (m *Subscribe) UnmarshalBinary(b []byte) error {
	r := reader{b: b}
	m.ReqID = r.u32()
	return r.done(TypeSubscribe)
}

func (m *Deliver) UnmarshalBinary(b []byte) error {
	r := reader{b: b}
	m.Seq = r.u64()
	r.array(m.ID[:])
	m.Received = int64(r.u64())
	m.Envelope = r.rest(MaxEnvelope)
	return r.done(TypeDeliver)
}

func (m *Ack) UnmarshalBinary(b []byte) error {
	r := reader{b: b}
	n := int(r.u16())
	if r.err == nil && (n == 0 || n > MaxAcks) {
		return fmt.Errorf("unmarshal Ack: %d sequence numbers, want 1 to %d", n, MaxAcks)
	}
	if r.err == nil && len(r.b) != 8*n {
		r.err = fmt.Errorf("%d sequence numbers in %d bytes", n, len(r.b))
	}
	if r.err == nil {
		m.Seqs = make([]uint64, n)
		for i := range m.Seqs {
			m.Seqs[i] = r.u64()
		}
	}
	return r.done(TypeAck)
}

func (m *SetToken) UnmarshalBinary(b []byte) error {
	return unmarshalToken(b, TypeSetToken, &m.ReqID, &m.Token)
}

func (m *AddToken) UnmarshalBinary(b []byte) error {
	return unmarshalToken(b, TypeAddToken, &m.ReqID, &m.Token)
}

func (m *RemoveToken) UnmarshalBinary(b []byte) error {
	return unmarshalToken(b, TypeRemoveToken, &m.ReqID, &m.Token)
}

func unmarshalToken(b []byte, t Type, reqID *uint32, token *[32]byte) error {
	r := reader{b: b}
	*reqID = r.u32()
	r.array(token[:])
	return r.done(t)
}

func (m *GetPrekeyCount) UnmarshalBinary(b []byte) error {
	r := reader{b: b}
	m.ReqID = r.u32()
	return r.done(TypeGetPrekeyCount)
}

func (m *PrekeyCount) UnmarshalBinary(b []byte) error {
	r := reader{b: b}
	m.ReqID = r.u32()
	m.OneTime = r.u32()
	m.KEM = r.u32()
	return r.done(TypePrekeyCount)
}

func (m *PutPrekeys) UnmarshalBinary(b []byte) error {
	r := reader{b: b}
	m.ReqID = r.u32()
	m.Signed = r.bytes16(MaxPrekeyLen)
	m.OneTime = r.prekeys()
	m.KEM = r.prekeys()
	m.LastResort = r.bytes16(MaxPrekeyLen)
	return r.done(TypePutPrekeys)
}

func (r *reader) prekeys() []Prekey {
	n := int(r.u16())
	if r.err != nil {
		return nil
	}
	if n > MaxPrekeys {
		r.err = fmt.Errorf("more than %d prekeys: %w", MaxPrekeys, ErrTooLarge)
		return nil
	}
	if n == 0 {
		return nil
	}
	// Each prekey takes at least 7 bytes, so this bounds the allocation by
	// the payload actually received.
	if n*7 > len(r.b) {
		r.err = errShort
		return nil
	}
	list := make([]Prekey, n)
	for i := range list {
		list[i].ID = r.u32()
		list[i].Data = r.bytes16(MaxPrekeyLen)
		if r.err == nil && len(list[i].Data) == 0 {
			r.err = errors.New("empty prekey")
		}
	}
	return list
}

func (m *GetBundle) UnmarshalBinary(b []byte) error {
	r := reader{b: b}
	m.ReqID = r.u32()
	r.array(m.Mailbox[:])
	r.array(m.Token[:])
	return r.done(TypeGetBundle)
}

func (m *Bundle) UnmarshalBinary(b []byte) error {
	r := reader{b: b}
	m.ReqID = r.u32()
	flags := r.u8()
	if r.err == nil && flags&^bundleFlagLastResort != 0 {
		r.err = fmt.Errorf("unknown flags 0x%02x", flags)
	}
	m.KEMLastResort = flags&bundleFlagLastResort != 0
	m.Signed = r.bytes16(MaxPrekeyLen)
	m.OneTimeID = r.u32()
	m.OneTime = r.bytes16(MaxPrekeyLen)
	m.KEMID = r.u32()
	m.KEM = r.bytes16(MaxPrekeyLen)
	return r.done(TypeBundle)
}
