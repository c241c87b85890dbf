package censor

import (
	"bytes"
	"encoding/binary"
	"errors"
	"slices"
	"testing"
	"time"
)

// tlsRecordBytes encodes records with the given types and lengths, their
// payloads filled with the byte fill.
func tlsRecordBytes(fill byte, recs ...TLSRecord) []byte {
	var b []byte
	for _, r := range recs {
		b = append(b, r.Type, 3, 3)
		b = binary.BigEndian.AppendUint16(b, uint16(r.Len))
		b = append(b, bytes.Repeat([]byte{fill}, r.Len)...)
	}
	return b
}

// scanChunks scans b cut into pieces of the given sizes (the rest in one
// piece), all at time 0.
func scanChunks(b []byte, sizes ...int) ([]TLSRecord, error) {
	var s RecordScanner
	var out []TLSRecord
	for _, n := range sizes {
		n = min(n, len(b))
		out, _ = s.Scan(out, b[:n], Up, 0)
		b = b[n:]
	}
	return s.Scan(out, b, Up, 0)
}

func TestRecordScanner(t *testing.T) {
	recs := []TLSRecord{
		{Type: recordHandshake, Len: 1},
		{Type: recordChangeCipherSpec, Len: 1},
		{Type: recordApplicationData, Len: 300},
		{Type: recordAlert, Len: 2},
		{Type: recordApplicationData, Len: maxRecordLen},
	}
	b := tlsRecordBytes(0x17, recs...)
	for _, sizes := range [][]int{nil, {1, 1, 1, 1, 1, 1}, {3, 4, 300}, {5, 1, 5}, {len(b) - 1}} {
		got, err := scanChunks(b, sizes...)
		if err != nil || !slices.Equal(got, recs) {
			t.Errorf("chunks %v: got %v, %v; want %v", sizes, got, err, recs)
		}
	}
	// A record completes with its last byte, not before.
	got, err := scanChunks(b[:len(b)-1])
	if err != nil || len(got) != len(recs)-1 {
		t.Errorf("all but the last byte: %d records, %v; want %d", len(got), err, len(recs)-1)
	}
}

func TestRecordScannerTimes(t *testing.T) {
	b := tlsRecordBytes(0, TLSRecord{Type: recordApplicationData, Len: 10}, TLSRecord{Type: recordApplicationData, Len: 10})
	var s RecordScanner
	out, _ := s.Scan(nil, b[:12], Down, time.Second)
	out, _ = s.Scan(out, b[12:], Down, 2*time.Second)
	want := []TLSRecord{{Dir: Down, Type: recordApplicationData, Len: 10, At: 2 * time.Second}, {Dir: Down, Type: recordApplicationData, Len: 10, At: 2 * time.Second}}
	if !slices.Equal(out, want) {
		t.Errorf("got %v, want %v (a record takes the time of its last byte)", out, want)
	}
}

func TestRecordScannerErrors(t *testing.T) {
	tests := []struct {
		name string
		hdr  []byte
	}{
		{"type 19", []byte{19, 3, 3, 0, 1}},
		{"type 24", []byte{24, 3, 3, 0, 1}},
		{"version 2", []byte{23, 2, 3, 0, 1}},
		{"length 0", []byte{23, 3, 3, 0, 0}},
		{"length over 2^14+2048", []byte{23, 3, 3, (maxRecordLen + 1) >> 8, (maxRecordLen + 1) & 0xff}},
		{"http", []byte("GET / HTTP/1.1\r\n")},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			good := tlsRecordBytes(0, TLSRecord{Type: recordApplicationData, Len: 4})
			var s RecordScanner
			out, err := s.Scan(nil, append(good, tc.hdr...), Up, 0)
			if !errors.Is(err, errNotTLS) || len(out) != 1 {
				t.Fatalf("got %v, %v; want the good record, then errNotTLS", out, err)
			}
			// The scanner stays failed.
			if out, err := s.Scan(nil, good, Up, 0); err == nil || len(out) != 0 {
				t.Errorf("after an error: %v, %v", out, err)
			}
		})
	}
}

// FuzzRecordScanner checks that the scanner's result does not depend on
// how the stream is cut, that what it accepts re-encodes to a prefix of
// the input, and that an error stays an error whatever follows.
func FuzzRecordScanner(f *testing.F) {
	f.Add(tlsRecordBytes(1, TLSRecord{Type: 22, Len: 5}, TLSRecord{Type: 23, Len: 40}), uint8(3), []byte{0})
	f.Add(tlsRecordBytes(0, TLSRecord{Type: 23, Len: maxRecordLen}), uint8(200), []byte{})
	f.Add([]byte("GET / HTTP/1.1\r\n\r\n"), uint8(1), []byte{23, 3, 3, 0, 1, 0})
	f.Add([]byte{23, 3, 3, 0, 0}, uint8(2), []byte{})
	f.Fuzz(func(t *testing.T, b []byte, cut uint8, more []byte) {
		whole, werr := scanChunks(b)
		step := max(int(cut), 1)
		var sizes []int
		for n := 0; n < len(b); n += step {
			sizes = append(sizes, step)
		}
		pieces, perr := scanChunks(b, sizes...)
		if !slices.Equal(whole, pieces) || (werr == nil) != (perr == nil) {
			t.Fatalf("whole: %v, %v; in pieces of %d: %v, %v", whole, werr, step, pieces, perr)
		}
		// The records found are the input's prefix, byte for byte apart
		// from the payloads.
		n := 0
		for _, r := range whole {
			if r.Type < recordChangeCipherSpec || r.Type > recordApplicationData || r.Len < 1 || r.Len > maxRecordLen {
				t.Fatalf("record %+v out of bounds", r)
			}
			if b[n] != r.Type || b[n+1] != 3 || int(binary.BigEndian.Uint16(b[n+3:])) != r.Len {
				t.Fatalf("record %+v does not match the bytes at %d", r, n)
			}
			n += 5 + r.Len
		}
		if n > len(b) {
			t.Fatalf("records cover %d of %d bytes", n, len(b))
		}
		if werr != nil {
			var s RecordScanner
			_, err := s.Scan(nil, append(slices.Clone(b), more...), Up, 0)
			if err == nil {
				t.Fatalf("error %v went away when %x was appended", werr, more)
			}
		}
	})
}
