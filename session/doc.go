// Package session is Ferry's end-to-end cryptography: long-term identities,
// signed and one-time prekeys (X25519 and ML-KEM-768), prekey bundles, PQXDH
// session setup, the Double Ratchet with header encryption, and the
// serialised session state a client keeps in its store. Sealed sender,
// padding, group sender keys, attachment keys and safety numbers live in the
// same package.
//
// It is pure computation: it does no I/O, keeps no global state, reads
// randomness only from the io.Reader it is given (so every operation is
// reproducible from a seeded reader), and imports nothing else of Ferry's.
// docs/protocol.md sections 1 to 3 specify every key, KDF label, message and
// state layout that this package produces; the code mirrors it.
//
// It is not a transport, a store or a relay client: it does not know who a
// peer is beyond its identity key, does not decide which bundle to fetch or
// when to delete a used prekey (it reports which prekeys a setup consumed),
// and it is not safe for concurrent use: a caller serialises access to each
// Session and PrekeySet.
package session

import "errors"

// Errors that callers branch on. Other failures are reported with errors
// that wrap these where it makes sense, and %v otherwise.
var (
	// ErrDecrypt means a message failed authentication: it was forged,
	// truncated, replayed, meant for another session, or too far out of
	// order. The session state is unchanged.
	ErrDecrypt = errors.New("session: message authentication failed")

	// ErrInvalidKey means a public key is malformed, non-canonical or of
	// low order.
	ErrInvalidKey = errors.New("session: invalid public key")

	// ErrBadSignature means a signature over a prekey does not verify
	// under the claimed identity key.
	ErrBadSignature = errors.New("session: bad signature")

	// ErrMalformed means an encoding could not be parsed: wrong length,
	// unknown version or inconsistent fields.
	ErrMalformed = errors.New("session: malformed encoding")

	// ErrUnknownPrekey means an initial message names a prekey that the
	// PrekeySet does not hold (already used, or rotated away).
	ErrUnknownPrekey = errors.New("session: unknown prekey")
)
