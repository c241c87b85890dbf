package wire

import (
	"encoding/binary"
	"fmt"
	"net/netip"
)

// Transport rankings (docs/protocol.md section 6.12): a monitor publishes
// signed rankings through the relay, which stores them as opaque blobs,
// one per publisher, and hands them to any client that asks, with the
// client's address as the relay sees it.

// Limits of the ranking frames.
const (
	// MaxRanking is the largest ranking blob.
	MaxRanking = 16 << 10
	// MaxRankings is the most blobs in one Rankings frame.
	MaxRankings = 16
)

// PutRanking stores Blob as the connection's key's ranking, replacing its
// earlier one; only keys the relay lists as publishers may. Answered by OK
// or Error (Denied).
//
//	reqid u32 | blob (the rest, 1..MaxRanking bytes)
type PutRanking struct {
	ReqID uint32
	Blob  []byte
}

// GetRanking asks for the relay's rankings. Answered by Rankings.
//
//	reqid u32
type GetRanking struct{ ReqID uint32 }

// Rankings answers GetRanking: the client's address as the relay sees it
// (invalid when the relay cannot tell) and every stored blob.
//
//	reqid u32 | addrlen u8 (0, 4 or 16) | addr | count u8 (0..MaxRankings) | (len u16 (1..MaxRanking) | blob)*
type Rankings struct {
	ReqID    uint32
	Observed netip.Addr
	Blobs    [][]byte
}

var (
	_ Message = PutRanking{}
	_ Message = GetRanking{}
	_ Message = Rankings{}
)

func (PutRanking) Type() Type { return TypePutRanking }
func (GetRanking) Type() Type { return TypeGetRanking }
func (Rankings) Type() Type   { return TypeRankings }

func (m PutRanking) MarshalBinary() ([]byte, error) {
	if len(m.Blob) == 0 || len(m.Blob) > MaxRanking {
		return nil, fmt.Errorf("marshal PutRanking: a blob of %d bytes, want 1 to %d: %w", len(m.Blob), MaxRanking, ErrTooLarge)
	}
	return append(binary.BigEndian.AppendUint32(nil, m.ReqID), m.Blob...), nil
}

func (m GetRanking) MarshalBinary() ([]byte, error) {
	return binary.BigEndian.AppendUint32(nil, m.ReqID), nil
}

func (m Rankings) MarshalBinary() ([]byte, error) {
	if len(m.Blobs) > MaxRankings {
		return nil, fmt.Errorf("marshal Rankings: %d blobs: %w", len(m.Blobs), ErrTooLarge)
	}
	b := binary.BigEndian.AppendUint32(nil, m.ReqID)
	var addr []byte
	if m.Observed.IsValid() {
		addr = m.Observed.Unmap().AsSlice()
	}
	b = append(append(b, byte(len(addr))), addr...)
	b = append(b, byte(len(m.Blobs)))
	for _, blob := range m.Blobs {
		if len(blob) == 0 || len(blob) > MaxRanking {
			return nil, fmt.Errorf("marshal Rankings: a blob of %d bytes: %w", len(blob), ErrTooLarge)
		}
		b = appendBytes16(b, blob)
	}
	return b, nil
}

func (m *PutRanking) UnmarshalBinary(b []byte) error {
	r := reader{b: b}
	m.ReqID = r.u32()
	m.Blob = r.rest(MaxRanking)
	if r.err == nil && len(m.Blob) == 0 {
		r.err = fmt.Errorf("empty blob")
	}
	return r.done(TypePutRanking)
}

func (m *GetRanking) UnmarshalBinary(b []byte) error {
	r := reader{b: b}
	m.ReqID = r.u32()
	return r.done(TypeGetRanking)
}

func (m *Rankings) UnmarshalBinary(b []byte) error {
	r := reader{b: b}
	m.ReqID = r.u32()
	switch n := int(r.u8()); {
	case r.err != nil:
	case n == 4 || n == 16:
		m.Observed, _ = netip.AddrFromSlice(r.next(n))
		if m.Observed.Is4In6() {
			r.err = fmt.Errorf("a v4-mapped address (send 4 bytes)")
		}
	case n != 0:
		r.err = fmt.Errorf("an address of %d bytes", n)
	}
	count := int(r.u8())
	if r.err == nil && count > MaxRankings {
		r.err = fmt.Errorf("%d blobs: %w", count, ErrTooLarge)
	}
	for i := 0; i < count && r.err == nil; i++ {
		blob := r.bytes16(MaxRanking)
		if r.err == nil && len(blob) == 0 {
			r.err = fmt.Errorf("empty blob")
		}
		m.Blobs = append(m.Blobs, blob)
	}
	return r.done(TypeRankings)
}
