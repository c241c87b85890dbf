package session

import (
	"bytes"
	"crypto/sha512"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
)

// Safety numbers follow Signal's numeric fingerprint algorithm exactly, so
// that libsignal's published values check ours (docs/protocol.md section
// 3.4):
//
//	hash_0 = SHA-512(0x00 0x00 || key33 || id || key33)
//	hash_i = SHA-512(hash_{i-1} || key33)            for i = 1 .. iterations-1
//
// where key33 is the 33-byte Signal form of the identity key (0x05 ||
// X25519 u) and id is the party's stable identifier (opaque bytes).
const (
	// FingerprintIterations is the number of SHA-512 rounds per party.
	FingerprintIterations = 5200
	// SafetyNumberVersion is the version Ferry puts in scannable payloads.
	SafetyNumberVersion = 2

	fingerprintFormat    = 0x0000 // 2-byte prefix of the first round
	fingerprintMaxIter   = 1_000_000
	fingerprintPartyLen  = 32 // bytes of each party's hash in the scannable form
	fingerprintDigitsLen = 30 // digits per party
	// scannableLen is the length of a scannable payload whose version
	// fits one varint byte.
	scannableLen = 2 + 2*(2+2+fingerprintPartyLen)
)

// Protobuf tags of the scannable payload (CombinedFingerprints, with
// LogicalFingerprint{bytes content = 1} as fields 2 and 3):
//
//	08 <version varint> 12 22 0a 20 <local 32> 1a 22 0a 20 <remote 32>
const (
	pbVersionTag = 0x08 // field 1, varint
	pbLocalTag   = 0x12 // field 2, length-delimited
	pbRemoteTag  = 0x1a // field 3, length-delimited
	pbContentTag = 0x0a // field 1 of LogicalFingerprint, length-delimited
	pbLogicalLen = 2 + fingerprintPartyLen
)

// ErrFingerprintVersion reports a scanned payload of another fingerprint
// version: the two devices must upgrade, not conclude a mismatch.
var ErrFingerprintVersion = errors.New("fingerprint version mismatch")

// A Fingerprint is the safety number of a pair of identities as seen by the
// local party: 60 displayable digits that both parties see identically, and
// a scannable payload (a QR code's content) that the other party's device
// compares with CompareScanned.
type Fingerprint struct {
	version uint32
	local   [fingerprintPartyLen]byte
	remote  [fingerprintPartyLen]byte
	digits  string
}

// NewFingerprint computes the fingerprint of localKey and remoteKey (33-byte
// Signal-form identity keys) with stable identifiers localID and remoteID,
// using iterations rounds of SHA-512 (FingerprintIterations in Ferry). It is
// the function libsignal's published vectors check.
func NewFingerprint(version uint32, iterations int, localKey, remoteKey [33]byte, localID, remoteID []byte) (*Fingerprint, error) {
	if version == 0 {
		return nil, errors.New("compute fingerprint: version 0")
	}
	if iterations <= 1 || iterations > fingerprintMaxIter {
		return nil, fmt.Errorf("compute fingerprint: %d iterations out of range", iterations)
	}
	l := fingerprintHash(iterations, localKey, localID)
	r := fingerprintHash(iterations, remoteKey, remoteID)
	ld, rd := fingerprintDigits(&l), fingerprintDigits(&r)
	f := &Fingerprint{version: version}
	copy(f.local[:], l[:])
	copy(f.remote[:], r[:])
	if ld <= rd {
		f.digits = ld + rd
	} else {
		f.digits = rd + ld
	}
	return f, nil
}

// SafetyNumber computes the safety number Ferry shows for the identities
// local and remote, whose stable identifiers are localID and remoteID
// (SafetyNumberVersion, FingerprintIterations).
func SafetyNumber(local, remote PublicIdentity, localID, remoteID []byte) (*Fingerprint, error) {
	if err := local.Check(); err != nil {
		return nil, fmt.Errorf("compute safety number: local key: %w", err)
	}
	if err := remote.Check(); err != nil {
		return nil, fmt.Errorf("compute safety number: remote key: %w", err)
	}
	return NewFingerprint(SafetyNumberVersion, FingerprintIterations, local.SignalKey(), remote.SignalKey(), localID, remoteID)
}

// fingerprintHash runs the iterated SHA-512 for one party.
func fingerprintHash(iterations int, key [33]byte, id []byte) [sha512.Size]byte {
	h := sha512.New()
	var buf [sha512.Size]byte
	h.Write([]byte{fingerprintFormat >> 8, fingerprintFormat & 0xff})
	h.Write(key[:])
	h.Write(id)
	h.Write(key[:])
	h.Sum(buf[:0])
	for range iterations - 1 {
		h.Reset()
		h.Write(buf[:])
		h.Write(key[:])
		h.Sum(buf[:0])
	}
	return buf
}

// fingerprintDigits encodes bytes [0:30] of a party's hash as six 5-byte
// big-endian integers, each reduced mod 100000 and printed as 5 digits.
func fingerprintDigits(h *[sha512.Size]byte) string {
	out := make([]byte, 0, fingerprintDigitsLen)
	for i := 0; i < 30; i += 5 {
		var b [8]byte
		copy(b[3:], h[i:i+5])
		v := binary.BigEndian.Uint64(b[:]) % 100000
		s := strconv.FormatUint(v, 10)
		for range 5 - len(s) {
			out = append(out, '0')
		}
		out = append(out, s...)
	}
	return string(out)
}

// Version returns the fingerprint version.
func (f *Fingerprint) Version() uint32 { return f.version }

// Displayable returns the 60-digit safety number, the same on both sides.
func (f *Fingerprint) Displayable() string { return f.digits }

// Scannable returns the payload to show as a QR code:
//
//	08 <version> 12 22 0a 20 <local 32> 1a 22 0a 20 <remote 32>
func (f *Fingerprint) Scannable() []byte {
	return marshalScannable(f.version, &f.local, &f.remote)
}

// CompareScanned reports whether scanned, the payload read from the other
// party's screen, matches f: its local half must equal our remote half and
// its remote half our local half. It returns ErrFingerprintVersion if the
// versions differ and an error if scanned is malformed.
func (f *Fingerprint) CompareScanned(scanned []byte) (bool, error) {
	v, l, r, err := parseScannable(scanned)
	if err != nil {
		return false, err
	}
	if v != f.version {
		return false, fmt.Errorf("compare fingerprint: %w (ours %d, theirs %d)", ErrFingerprintVersion, f.version, v)
	}
	a := subtle.ConstantTimeCompare(l[:], f.remote[:])
	b := subtle.ConstantTimeCompare(r[:], f.local[:])
	return a&b == 1, nil
}

func marshalScannable(version uint32, local, remote *[fingerprintPartyLen]byte) []byte {
	b := make([]byte, 0, scannableLen+4)
	b = append(b, pbVersionTag)
	b = binary.AppendUvarint(b, uint64(version))
	b = append(b, pbLocalTag, pbLogicalLen, pbContentTag, fingerprintPartyLen)
	b = append(b, local[:]...)
	b = append(b, pbRemoteTag, pbLogicalLen, pbContentTag, fingerprintPartyLen)
	return append(b, remote[:]...)
}

// parseScannable decodes the canonical scannable layout only: fields in
// order, each present once, minimal varint, 32-byte contents. Anything else
// is rejected, so parse-then-marshal reproduces the input.
func parseScannable(b []byte) (version uint32, local, remote [fingerprintPartyLen]byte, err error) {
	bad := func(what string) error { return fmt.Errorf("parse scannable fingerprint: %s: %w", what, ErrMalformed) }
	if len(b) < 2 || b[0] != pbVersionTag {
		return 0, local, remote, bad("no version")
	}
	v, n := binary.Uvarint(b[1:])
	if n <= 0 || v == 0 || v > 0xffffffff || n != len(binary.AppendUvarint(nil, v)) {
		return 0, local, remote, bad("bad version")
	}
	rest := b[1+n:]
	for i, tag := range []byte{pbLocalTag, pbRemoteTag} {
		if len(rest) < 4+fingerprintPartyLen || !bytes.Equal(rest[:4], []byte{tag, pbLogicalLen, pbContentTag, fingerprintPartyLen}) {
			return 0, local, remote, bad("bad party field")
		}
		if i == 0 {
			copy(local[:], rest[4:])
		} else {
			copy(remote[:], rest[4:])
		}
		rest = rest[4+fingerprintPartyLen:]
	}
	if len(rest) != 0 {
		return 0, local, remote, bad("trailing bytes")
	}
	return uint32(v), local, remote, nil
}
