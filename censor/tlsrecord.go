package censor

import (
	"errors"
	"fmt"
	"slices"
	"time"
)

// TLS record content types (RFC 8446 section 5.1).
const (
	recordChangeCipherSpec = 20
	recordAlert            = 21
	recordHandshake        = 22
	recordApplicationData  = 23
)

// maxRecordLen is the largest record length field a TLS peer may send:
// 2^14 + 2048 for a TLS 1.2 TLSCiphertext (RFC 5246 section 6.2.3; TLS
// 1.3 allows at most 2^14 + 256).
const maxRecordLen = 1<<14 + 2048

// TLSRecord is one TLS record of a flow as a censor on the path sees it:
// its direction, content type and length field (for an encrypted record:
// the ciphertext with its tag and any padding), and when its last byte
// arrived, from the flow's start. The payload is never kept.
type TLSRecord struct {
	Dir  Direction
	Type uint8
	Len  int
	At   time.Duration
}

// errNotTLS means a stream's bytes are not a sequence of TLS records.
var errNotTLS = errors.New("not a TLS record stream")

// RecordScanner splits one direction of a TLS connection into records.
// Scan takes the bytes as they arrive, cut anywhere, and appends to dst
// the records they complete. It keeps the 5 bytes of a record header
// split over two reads and a count of payload bytes to skip, never a
// payload, so it costs the same whatever the records carry. A header that
// is not TLS's (content type 20-23, version major 3, length 1 to 2^14 +
// 2048) is an error, and the scanner stays failed. The zero value is
// ready to use.
type RecordScanner struct {
	hdr  [5]byte
	nhdr int // header bytes held
	left int // payload bytes of the current record still to come
	typ  uint8
	n    int // the current record's length
	err  error
}

// Scan reads p, the next bytes of the stream, and appends the records
// they complete to dst, each with time at as At. It returns dst and the
// scanner's error, if any; records completed before an error are
// appended.
func (s *RecordScanner) Scan(dst []TLSRecord, p []byte, dir Direction, at time.Duration) ([]TLSRecord, error) {
	for len(p) > 0 && s.err == nil {
		if s.left > 0 {
			k := min(s.left, len(p))
			s.left -= k
			p = p[k:]
			if s.left == 0 {
				dst = append(dst, TLSRecord{Dir: dir, Type: s.typ, Len: s.n, At: at})
			}
			continue
		}
		k := copy(s.hdr[s.nhdr:], p)
		s.nhdr += k
		p = p[k:]
		if s.nhdr < len(s.hdr) {
			break
		}
		s.nhdr = 0
		typ, n := s.hdr[0], int(s.hdr[3])<<8|int(s.hdr[4])
		if typ < recordChangeCipherSpec || typ > recordApplicationData || s.hdr[1] != 3 || n == 0 || n > maxRecordLen {
			s.err = fmt.Errorf("scan TLS records: header % x: %w", s.hdr, errNotTLS)
			break
		}
		s.typ, s.n, s.left = typ, n, n
	}
	return dst, s.err
}

// Err returns the scanner's error, or nil while the bytes are TLS records.
func (s *RecordScanner) Err() error { return s.err }

// tlsWatch collects the TLS records of both directions of a flow, in the
// order they complete, up to MaxTLSRecords.
type tlsWatch struct {
	scan [2]RecordScanner
	recs []TLSRecord
}

// add scans b, read from direction d at time at since the flow's start,
// and reports whether that completed records or ended the scanning.
func (w *tlsWatch) add(d Direction, b []byte, at time.Duration) bool {
	if w.done() {
		return false
	}
	n := len(w.recs)
	w.recs, _ = w.scan[d].Scan(w.recs, b, d, at)
	w.recs = w.recs[:min(len(w.recs), MaxTLSRecords)]
	return len(w.recs) > n || w.done()
}

// done reports whether no more records will be added: a direction's bytes
// are not TLS records, or MaxTLSRecords are kept.
func (w *tlsWatch) done() bool {
	return w.scan[Up].Err() != nil || w.scan[Down].Err() != nil || len(w.recs) >= MaxTLSRecords
}

// snapshot returns a copy of f with the records so far, for Engine.Observe.
func (w *tlsWatch) snapshot(f *Flow) *Flow {
	s := *f
	s.TLS = slices.Clone(w.recs)
	s.tlsDone = w.done()
	return &s
}
