package content

import (
	"encoding/binary"
	"fmt"
)

// Receipt statuses.
const (
	ReceiptDelivered byte = 1 // the recipient's client stored the messages
	ReceiptRead      byte = 2 // the recipient was shown them
)

// MaxReceiptIDs bounds a receipt's id list.
const MaxReceiptIDs = 4096

// Receipt tells a sender what became of its messages:
//
//	body = status(1) || count(2, big endian, 1..MaxReceiptIDs) || count * message id(16)
type Receipt struct {
	Status byte
	IDs    [][16]byte
}

// Kind returns KindReceipt.
func (*Receipt) Kind() Kind { return KindReceipt }

func validStatus(s byte) bool { return s == ReceiptDelivered || s == ReceiptRead }

// AppendBody appends the receipt body.
func (r *Receipt) AppendBody(b []byte) ([]byte, error) {
	if len(r.IDs) == 0 || len(r.IDs) > MaxReceiptIDs || !validStatus(r.Status) {
		return nil, fmt.Errorf("encode receipt: %w", ErrMalformed)
	}
	b = append(b, r.Status)
	b = binary.BigEndian.AppendUint16(b, uint16(len(r.IDs)))
	for _, id := range r.IDs {
		b = append(b, id[:]...)
	}
	return b, nil
}

func parseReceipt(b []byte) (Body, error) {
	if len(b) < 3 {
		return nil, fmt.Errorf("receipt: %w", ErrMalformed)
	}
	r := &Receipt{Status: b[0]}
	n := int(binary.BigEndian.Uint16(b[1:3]))
	b = b[3:]
	if !validStatus(r.Status) || n == 0 || n > MaxReceiptIDs || len(b) != 16*n {
		return nil, fmt.Errorf("receipt: %w", ErrMalformed)
	}
	r.IDs = make([][16]byte, n)
	for i := range r.IDs {
		r.IDs[i] = [16]byte(b[16*i:])
	}
	return r, nil
}
