// Package wire defines the frames a Ferry client and relay exchange inside
// their secure channel: the frame envelope (type and length), one typed
// message per frame type with its binary layout, and the limits every reader
// enforces. It is shared by package relay and the client library.
//
// It is not the channel: it has no cryptography and does not authenticate
// anyone (package channel does), and it does not say what a relay does with a
// frame (docs/protocol.md section 6 does). docs/protocol.md section 5 is the
// specification of every byte here.
//
// Readers skip frames of a type they do not know (Decode returns
// ErrUnknownType for them), so a newer peer may send new frame types to an
// older one without a version change.
package wire

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// ProtocolVersion is the version of the wire protocol, bound into the
// channel's Noise prologue, so peers of different versions fail the
// handshake instead of misreading frames. Additive changes (new frame types,
// which old readers skip) do not change it.
//
// Version history:
//
//	1  2026-11-21  first version: Ping, Pong, OK, Error, Send, SendOK,
//	               SendErr, Subscribe, Deliver, Ack, SetToken, PutPrekeys,
//	               GetBundle, Bundle.
//	   2026-12-02  added (no version change; old peers skip them):
//	               AddToken, RemoveToken, GetPrekeyCount, PrekeyCount;
//	               PutRanking, GetRanking, Rankings; the
//	               blob and fan-out frames BlobCreate, BlobStatus, BlobPut,
//	               BlobState, BlobGet, BlobData, Fanout, FanoutResult.
const ProtocolVersion = 1

// Frame envelope, as written by AppendFrame and read by ReadFrame:
//
//	type    u8
//	length  u32 big-endian, the payload length, at most MaxPayload
//	payload length bytes
const (
	HeaderLen  = 5       // bytes before the payload
	MaxPayload = 1 << 20 // largest payload of any frame, 1 MiB
	// MaxEnvelope is the largest sealed envelope a Send or Deliver may carry.
	MaxEnvelope = 256 << 10
	// MaxMsg is the longest human-readable message in SendErr and Error.
	MaxMsg = 1024
	// MaxPrekeys is the most one-time prekeys of one kind in a PutPrekeys.
	MaxPrekeys = 1000
	// MaxPrekeyLen is the largest prekey blob (a KEM prekey record with its
	// ML-KEM-768 public key and signature fits with room to spare).
	MaxPrekeyLen = 4096
	// MaxAcks is the most sequence numbers in one Ack.
	MaxAcks = 4096
)

// Type is a frame type, the first byte of a frame.
type Type uint8

// Frame types. Requests that expect an answer carry a ReqID the answer
// repeats (OK or Error for most, Bundle for GetBundle, SendOK or SendErr for
// Send, matched by message ID).
const (
	TypePing           Type = 0x01 // either side: Ping{Nonce}; answered by Pong
	TypePong           Type = 0x02 // either side: Pong{Nonce}
	TypeOK             Type = 0x03 // relay: OK{ReqID}, a request succeeded
	TypeError          Type = 0x04 // relay: Error{ReqID, Code, Msg}, a request failed
	TypeSend           Type = 0x10 // client: Send{ID, To, Token, Envelope}
	TypeSendOK         Type = 0x11 // relay: SendOK{ID}, the envelope is durable
	TypeSendErr        Type = 0x12 // relay: SendErr{ID, Code, Msg}
	TypeSubscribe      Type = 0x20 // client: Subscribe{ReqID}, push my mailbox
	TypeDeliver        Type = 0x21 // relay: Deliver{Seq, ID, Received, Envelope}
	TypeAck            Type = 0x22 // client: Ack{Seqs}, delete these envelopes
	TypeSetToken       Type = 0x30 // client: SetToken{ReqID, Token}, replaces all tokens
	TypeAddToken       Type = 0x31 // client: AddToken{ReqID, Token}
	TypeRemoveToken    Type = 0x32 // client: RemoveToken{ReqID, Token}
	TypePutPrekeys     Type = 0x40 // client: PutPrekeys{ReqID, Signed, OneTime, KEM, LastResort}
	TypeGetBundle      Type = 0x41 // client: GetBundle{ReqID, Mailbox, Token}
	TypeBundle         Type = 0x42 // relay: Bundle{ReqID, ...}
	TypeGetPrekeyCount Type = 0x43 // client: GetPrekeyCount{ReqID}
	TypePrekeyCount    Type = 0x44 // relay: PrekeyCount{ReqID, OneTime, KEM}
	TypePutRanking     Type = 0x60 // client (a ranking publisher): PutRanking{ReqID, Blob}
	TypeGetRanking     Type = 0x61 // client: GetRanking{ReqID}; answered by Rankings
	TypeRankings       Type = 0x62 // relay: Rankings{ReqID, Observed, Blobs}
)

var typeNames = map[Type]string{
	TypePing: "Ping", TypePong: "Pong", TypeOK: "OK", TypeError: "Error",
	TypeSend: "Send", TypeSendOK: "SendOK", TypeSendErr: "SendErr",
	TypeSubscribe: "Subscribe", TypeDeliver: "Deliver", TypeAck: "Ack",
	TypeSetToken: "SetToken", TypePutPrekeys: "PutPrekeys",
	TypeGetBundle: "GetBundle", TypeBundle: "Bundle",
	TypeAddToken: "AddToken", TypeRemoveToken: "RemoveToken",
	TypeGetPrekeyCount: "GetPrekeyCount", TypePrekeyCount: "PrekeyCount",
	TypePutRanking: "PutRanking", TypeGetRanking: "GetRanking", TypeRankings: "Rankings",
}

func (t Type) String() string {
	if n, ok := typeNames[t]; ok {
		return n
	}
	if n, ok := blobTypeNames[t]; ok {
		return n
	}
	return fmt.Sprintf("Type(0x%02x)", uint8(t))
}

// Known reports whether this version of the protocol defines t.
func (t Type) Known() bool {
	_, ok := typeNames[t]
	_, blob := blobTypeNames[t]
	return ok || blob
}

// Frame is one frame: a type and its payload.
type Frame struct {
	Type    Type
	Payload []byte
}

// Errors a caller may branch on.
var (
	// ErrUnknownType is returned by Decode for a frame type this version
	// does not define. Readers skip such frames.
	ErrUnknownType = errors.New("unknown frame type")
	// ErrTooLarge is returned for a frame or field over its limit.
	ErrTooLarge = errors.New("too large")
)

// AppendFrame appends the envelope of f (header and payload) to b.
func AppendFrame(b []byte, f Frame) ([]byte, error) {
	if len(f.Payload) > MaxPayload {
		return b, fmt.Errorf("append frame: payload of %d bytes: %w", len(f.Payload), ErrTooLarge)
	}
	b = append(b, byte(f.Type))
	b = binary.BigEndian.AppendUint32(b, uint32(len(f.Payload)))
	return append(b, f.Payload...), nil
}

// MarshalBinary returns the envelope of f.
func (f Frame) MarshalBinary() ([]byte, error) {
	return AppendFrame(make([]byte, 0, HeaderLen+len(f.Payload)), f)
}

// UnmarshalBinary parses exactly one frame envelope from b; the payload is
// copied.
func (f *Frame) UnmarshalBinary(b []byte) error {
	t, n, err := ParseHeader(b)
	if err != nil {
		return err
	}
	if len(b)-HeaderLen != n {
		return fmt.Errorf("parse frame: header says %d payload bytes, have %d", n, len(b)-HeaderLen)
	}
	f.Type = t
	f.Payload = append([]byte(nil), b[HeaderLen:]...)
	return nil
}

// ParseHeader parses the header at the start of b and returns the frame type
// and the payload length, checked against MaxPayload.
func ParseHeader(b []byte) (Type, int, error) {
	if len(b) < HeaderLen {
		return 0, 0, errors.New("parse frame header: short header")
	}
	n := binary.BigEndian.Uint32(b[1:HeaderLen])
	if n > MaxPayload {
		return 0, 0, fmt.Errorf("parse frame header: payload of %d bytes: %w", n, ErrTooLarge)
	}
	return Type(b[0]), int(n), nil
}

// WriteFrame writes the envelope of f to w in one Write.
func WriteFrame(w io.Writer, f Frame) error {
	b, err := f.MarshalBinary()
	if err != nil {
		return err
	}
	if _, err := w.Write(b); err != nil {
		return fmt.Errorf("write frame: %w", err)
	}
	return nil
}

// ReadFrame reads one frame envelope from r. It allocates the payload only
// as it arrives (never more than MaxPayload) and returns io.EOF if r ends
// cleanly before a frame, io.ErrUnexpectedEOF if it ends inside one.
func ReadFrame(r io.Reader) (Frame, error) {
	var h [HeaderLen]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		if err == io.EOF {
			return Frame{}, io.EOF
		}
		return Frame{}, fmt.Errorf("read frame header: %w", err)
	}
	t, n, err := ParseHeader(h[:])
	if err != nil {
		return Frame{}, err
	}
	// Grow with the data rather than trusting n up front.
	payload := make([]byte, 0, min(n, 64<<10))
	for len(payload) < n {
		chunk := min(n-len(payload), 64<<10)
		start := len(payload)
		payload = append(payload, make([]byte, chunk)...)
		if _, err := io.ReadFull(r, payload[start:]); err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return Frame{}, fmt.Errorf("read frame payload: %w", err)
		}
	}
	return Frame{Type: t, Payload: payload}, nil
}

// MailboxID returns the mailbox of the device whose channel static public
// key is devicePublic: the first 16 bytes of
// SHA-256("ferry mailbox v1" || devicePublic).
func MailboxID(devicePublic [32]byte) [16]byte {
	h := sha256.New()
	h.Write([]byte("ferry mailbox v1"))
	h.Write(devicePublic[:])
	var id [16]byte
	copy(id[:], h.Sum(nil))
	return id
}
