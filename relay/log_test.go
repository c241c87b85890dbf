package relay_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"

	"github.com/ferry-im/ferry/relay"
	"github.com/ferry-im/ferry/relay/memstore"
	"github.com/ferry-im/ferry/wire"
)

// syncBuffer is a bytes.Buffer safe for the server's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// failingStore fails every write, so error paths get logged too.
type failingStore struct{ relay.Store }

var errDisk = errors.New("disk on fire")

func (f failingStore) Put(context.Context, [16]byte, relay.Envelope, relay.Quota) (uint64, bool, error) {
	return 0, false, errDisk
}

func (f failingStore) Ack(context.Context, [16]byte, []uint64) (int, error) { return 0, errDisk }

func (f failingStore) PopBundle(context.Context, [16]byte) (relay.Bundle, error) {
	return relay.Bundle{}, errDisk
}

// encodings are the forms a secret could take in a log line.
func encodings(b []byte) []string {
	return []string{
		hex.EncodeToString(b),
		strings.ToUpper(hex.EncodeToString(b)),
		base64.StdEncoding.EncodeToString(b),
		base64.RawStdEncoding.EncodeToString(b),
		base64.URLEncoding.EncodeToString(b),
		base64.RawURLEncoding.EncodeToString(b),
		string(b),
	}
}

func TestLogsHoldNoSecrets(t *testing.T) {
	t.Parallel()
	for _, failing := range []bool{false, true} {
		var logs syncBuffer
		logger := slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
		var store relay.Store = memstore.New()
		if failing {
			store = failingStore{store}
		}
		e := newEnv(t, func(c *relay.Config) {
			c.Logger = logger
			c.Store = store
		})
		bobKey, anonKey := mustKey(t), mustKey(t)
		tok := token(20)
		envelope := make([]byte, 48)
		rand.Read(envelope)
		prekey := make([]byte, 40)
		rand.Read(prekey)

		bob := e.dial(bobKey, nil)
		bob.register(tok)
		bob.subscribe()
		bob.send(wire.PutPrekeys{ReqID: 3, Signed: prekey, OneTime: []wire.Prekey{{ID: 1, Data: prekey}}})
		expect[wire.OK](bob)
		anon := e.dial(anonKey, nil)
		anon.sendTo(bob.mailbox, tok, id(1), envelope)
		if !failing {
			d := expect[wire.Deliver](bob)
			bob.send(wire.Ack{Seqs: []uint64{d.Seq}})
		} else {
			bob.send(wire.Ack{Seqs: []uint64{1}})
		}
		anon.send(wire.GetBundle{ReqID: 4, Mailbox: bob.mailbox, Token: tok})
		anon.next()
		anon.sendTo(bob.mailbox, token(21), id(2), envelope)
		anon.sendFrame(wire.Frame{Type: 0xee, Payload: envelope})
		anon.sendFrame(wire.Frame{Type: wire.TypeSend, Payload: envelope[:20]})
		anon.closed()
		bob.quiet()
		bob.ch.Close()
		bob.closed()
		if _, err := e.tryDial(mustKey(t), nil); err != nil {
			t.Fatal(err)
		}
		// A failed handshake: a client that expects another relay key.
		wrong := e.key
		e.key = mustKey(t)
		e.tryDial(bobKey, nil)
		e.key = wrong

		out := logs.String()
		for _, want := range []string{"connection open", "skipping unknown frame", "protocol violation"} {
			if !strings.Contains(out, want) {
				t.Fatalf("failing=%v: the log lacks %q; the test would not notice silence:\n%s", failing, want, out)
			}
		}
		if failing && !strings.Contains(out, "disk on fire") {
			t.Fatalf("store failures are not logged:\n%s", out)
		}
		hash := sha256.Sum256(tok[:])
		secrets := map[string][]byte{
			"relay private key":  e.key.Private[:],
			"relay public key":   e.key.Public[:],
			"device private key": bobKey.Private[:],
			"device public key":  bobKey.Public[:],
			"sender private key": anonKey.Private[:],
			"sender public key":  anonKey.Public[:],
			"delivery token":     tok[:],
			"token hash":         hash[:],
			"envelope":           envelope,
			"prekey":             prekey,
		}
		for name, secret := range secrets {
			for _, enc := range encodings(secret) {
				if strings.Contains(out, enc) {
					t.Errorf("failing=%v: the log contains the %s (%q)", failing, name, enc)
				}
			}
			// Any 8-byte window of a secret, in hex, would also be a leak.
			for i := 0; i+8 <= len(secret); i += 4 {
				if strings.Contains(out, hex.EncodeToString(secret[i:i+8])) {
					t.Errorf("failing=%v: the log contains part of the %s", failing, name)
				}
			}
		}
	}
}

// TestStoreErrorsRateLimited makes every store write fail and checks the
// relay does not write a line per failure: before the fix a full disk
// made it write 10,000 error lines in 15 seconds.
func TestStoreErrorsRateLimited(t *testing.T) {
	t.Parallel()
	var logs syncBuffer
	e := newEnv(t, func(c *relay.Config) {
		c.Logger = slog.New(slog.NewTextHandler(&logs, nil))
		c.Store = failingStore{c.Store}
	})
	bob := e.dial(mustKey(t), nil)
	bob.register(token(1))
	anon := e.dial(mustKey(t), nil)
	for i := range 500 {
		wantSendErr(t, anon.sendTo(bob.mailbox, token(1), id(i), []byte("x")), wire.CodeUnavailable)
	}
	if n := strings.Count(logs.String(), "store envelope"); n == 0 || n > 25 {
		t.Fatalf("%d log lines for 500 failed writes, want a few (at most 25)", n)
	}
}
