package session

import (
	"errors"
	"fmt"
)

// Padding hides a sealed message's length from the relay: the plaintext is
// padded to a size bucket (docs/protocol.md section 3.1), ISO/IEC 7816-4
// style, with one 0x80 byte and then zero bytes:
//
//	padded = plaintext || 0x80 || 0x00 ... 0x00        (len(padded) = bucket(len(plaintext)+1))
//
// Buckets are 256, 512, 1024, ..., 65536 bytes (powers of two), then
// multiples of 65536. Unpadding strips trailing zeros and one 0x80; any
// other last non-zero byte is an error. The padding is always inside the
// AEAD, so unpadding never runs on unauthenticated bytes.
const (
	minPadBucket    = 256
	padStepBucket   = 64 << 10
	padMarker       = 0x80
	maxPaddedLength = 16 << 20 // 16 MiB: the largest padded plaintext
)

// paddedLen returns the bucket for n plaintext bytes, or -1 if n is too
// large.
func paddedLen(n int) int {
	if n < 0 || n >= maxPaddedLength {
		return -1
	}
	need := n + 1
	if need > padStepBucket {
		return (need + padStepBucket - 1) / padStepBucket * padStepBucket
	}
	b := minPadBucket
	for b < need {
		b <<= 1
	}
	return b
}

// isBucket reports whether n is a bucket size.
func isBucket(n int) bool { return n > 0 && paddedLen(n-1) == n }

// pad returns b padded to its bucket.
func pad(b []byte) ([]byte, error) {
	n := paddedLen(len(b))
	if n < 0 {
		return nil, fmt.Errorf("pad message: %d bytes is too large", len(b))
	}
	out := make([]byte, n)
	copy(out, b)
	out[len(b)] = padMarker
	return out, nil
}

// unpad returns b without its padding.
func unpad(b []byte) ([]byte, error) {
	i := len(b) - 1
	for i >= 0 && b[i] == 0 {
		i--
	}
	if i < 0 || b[i] != padMarker {
		return nil, errors.New("unpad message: no padding marker")
	}
	return b[:i], nil
}
