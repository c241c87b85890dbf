package natsbus

import (
	"encoding/binary"
	"encoding/hex"
	"errors"
	"strings"
	"time"

	"github.com/ferry-im/ferry/relay"
	"github.com/ferry-im/ferry/wire"
)

// An announcement is one NATS message (docs/protocol.md section 6.11):
//
//	subject  <prefix>.mb.<mailbox as 32 lowercase hex digits>
//	payload  version u8 (1) | seq u64 | id [16] | received i64 (Unix ms) | envelope (the rest)
//
// Integers are big-endian. Messages of another version are ignored, so that
// relays of two versions can share a bus during an upgrade (the others
// then learn of those envelopes only by polling or the next Subscribe).
const (
	eventVersion = 1
	eventHeader  = 1 + 8 + 16 + 8
)

var (
	errEventVersion = errors.New("announcement of an unknown version")
	errEventSize    = errors.New("announcement of a bad size")
	errSubject      = errors.New("announcement on a bad subject")
)

// subject is mailbox mb's subject under prefix.
func subject(prefix string, mb [16]byte) string {
	return prefix + ".mb." + hex.EncodeToString(mb[:])
}

// mailboxOf parses a subject made by subject with the same prefix.
func mailboxOf(prefix, subj string) ([16]byte, error) {
	rest, ok := strings.CutPrefix(subj, prefix+".mb.")
	var mb [16]byte
	if !ok || len(rest) != 32 || strings.ToLower(rest) != rest {
		return mb, errSubject
	}
	if _, err := hex.Decode(mb[:], []byte(rest)); err != nil {
		return mb, errSubject
	}
	return mb, nil
}

// appendEvent appends env's announcement payload to b.
func appendEvent(b []byte, env relay.Envelope) []byte {
	b = append(b, eventVersion)
	b = binary.BigEndian.AppendUint64(b, env.Seq)
	b = append(b, env.ID[:]...)
	b = binary.BigEndian.AppendUint64(b, uint64(env.Received.UnixMilli()))
	return append(b, env.Data...)
}

// parseEvent parses an announcement payload. The envelope's data is a copy.
func parseEvent(p []byte) (relay.Envelope, error) {
	var env relay.Envelope
	if len(p) < 1 || p[0] != eventVersion {
		return env, errEventVersion
	}
	if len(p) < eventHeader || len(p)-eventHeader > wire.MaxEnvelope {
		return env, errEventSize
	}
	env.Seq = binary.BigEndian.Uint64(p[1:])
	copy(env.ID[:], p[9:25])
	env.Received = time.UnixMilli(int64(binary.BigEndian.Uint64(p[25:])))
	env.Data = append([]byte{}, p[eventHeader:]...)
	return env, nil
}
