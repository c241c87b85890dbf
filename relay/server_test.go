package relay_test

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ferry-im/ferry/relay"
	"github.com/ferry-im/ferry/relay/memstore"
	"github.com/ferry-im/ferry/relay/sqlite"
	"github.com/ferry-im/ferry/wire"
)

func TestSendDeliverAck(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	bob := e.dial(mustKey(t), nil)
	bob.register(token(1))
	bob.subscribe()
	anon := e.dial(mustKey(t), nil)

	mustSendOK(t, anon.sendTo(bob.mailbox, token(1), id(1), []byte("sealed one")))
	d := expect[wire.Deliver](bob)
	if d.ID != id(1) || string(d.Envelope) != "sealed one" || d.Received != e.clock.Now().UnixMilli() || d.Seq == 0 {
		t.Fatalf("Deliver = %+v, want id %x, envelope %q, received %d", d, id(1), "sealed one", e.clock.Now().UnixMilli())
	}
	bob.send(wire.Ack{Seqs: []uint64{d.Seq}})
	bob.quiet() // the Ack has been handled once the Pong arrives
	if u, err := e.store.Usage(context.Background(), bob.mailbox); err != nil || u.Count != 0 {
		t.Fatalf("after Ack the mailbox holds %d envelopes (%v), want 0", u.Count, err)
	}
}

func TestOfflineDelivery(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	bobKey := mustKey(t)
	bob := e.dial(bobKey, nil)
	bob.register(token(2))
	bob.ch.Close()
	bob.closed()

	anon := e.dial(mustKey(t), nil)
	for i := range 5 {
		mustSendOK(t, anon.sendTo(bob.mailbox, token(2), id(i), []byte{byte(i)}))
	}
	bob = e.dial(bobKey, nil)
	ds := bob.subscribe()
	if len(ds) != 5 {
		t.Fatalf("%d envelopes before the Subscribe's OK, want 5", len(ds))
	}
	var last uint64
	for i, d := range ds {
		if d.ID != id(i) || d.Seq <= last {
			t.Fatalf("delivery %d: id %x seq %d (last %d), want id %x in seq order", i, d.ID, d.Seq, last, id(i))
		}
		last = d.Seq
	}
	bob.quiet()
}

func TestUnackedRedelivered(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	bobKey := mustKey(t)
	bob := e.dial(bobKey, nil)
	bob.register(token(3))
	bob.subscribe()
	anon := e.dial(mustKey(t), nil)
	mustSendOK(t, anon.sendTo(bob.mailbox, token(3), id(1), []byte("a")))
	mustSendOK(t, anon.sendTo(bob.mailbox, token(3), id(2), []byte("b")))
	first := expect[wire.Deliver](bob)
	expect[wire.Deliver](bob)
	bob.send(wire.Ack{Seqs: []uint64{first.Seq}})
	bob.quiet()
	bob.ch.Close()
	bob.closed()

	bob = e.dial(bobKey, nil)
	if ds := bob.subscribe(); len(ds) != 1 || ds[0].ID != id(2) {
		t.Fatalf("after reconnecting got %+v before the OK, want only the unacknowledged %x", ds, id(2))
	}
	bob.quiet()
}

func TestDuplicateSend(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	bob := e.dial(mustKey(t), nil)
	bob.register(token(4))
	bob.subscribe()
	anon := e.dial(mustKey(t), nil)
	mustSendOK(t, anon.sendTo(bob.mailbox, token(4), id(1), []byte("once")))
	mustSendOK(t, anon.sendTo(bob.mailbox, token(4), id(1), []byte("once")))
	mustSendOK(t, anon.sendTo(bob.mailbox, token(4), id(2), []byte("next")))
	if d := expect[wire.Deliver](bob); d.ID != id(1) {
		t.Fatalf("first delivery %x, want %x", d.ID, id(1))
	}
	if d := expect[wire.Deliver](bob); d.ID != id(2) {
		t.Fatalf("second delivery %x, want %x (a retried send was delivered twice)", d.ID, id(2))
	}
	if u, _ := e.store.Usage(context.Background(), bob.mailbox); u.Count != 2 {
		t.Fatalf("mailbox holds %d envelopes, want 2", u.Count)
	}
}

func TestDeliveryTokens(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	bob := e.dial(mustKey(t), nil)
	bob.register(token(5))
	anon := e.dial(mustKey(t), nil)
	wrong := wantSendErr(t, anon.sendTo(bob.mailbox, token(6), id(1), []byte("x")), wire.CodeDenied)
	unknown := wantSendErr(t, anon.sendTo([16]byte{'n', 'o'}, token(5), id(2), []byte("x")), wire.CodeDenied)
	if wrong.Msg != unknown.Msg {
		t.Fatalf("wrong token says %q but unknown mailbox says %q: a stranger can tell mailboxes exist", wrong.Msg, unknown.Msg)
	}
	// A mailbox with prekeys but no token accepts nothing.
	carol := e.dial(mustKey(t), nil)
	carol.send(wire.PutPrekeys{ReqID: 9, Signed: []byte("signed")})
	expect[wire.OK](carol)
	wantSendErr(t, anon.sendTo(carol.mailbox, [32]byte{}, id(3), []byte("x")), wire.CodeDenied)
	// The owner can rotate the token; the old one stops working.
	bob.send(wire.SetToken{ReqID: 7, Token: token(7)})
	expect[wire.OK](bob)
	wantSendErr(t, anon.sendTo(bob.mailbox, token(5), id(4), []byte("x")), wire.CodeDenied)
	mustSendOK(t, anon.sendTo(bob.mailbox, token(7), id(4), []byte("x")))
	// The zero token is refused.
	bob.send(wire.SetToken{ReqID: 8})
	if er := expect[wire.Error](bob); er.Code != wire.CodeBadRequest || er.ReqID != 8 {
		t.Fatalf("zero token: got %+v, want a bad-request Error", er)
	}
}

func TestStoredTokenIsHashed(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	bob := e.dial(mustKey(t), nil)
	tok := token(8)
	bob.register(tok)
	ctx := context.Background()
	if ok, err := e.store.HasToken(ctx, bob.mailbox, sha256.Sum256(tok[:])); err != nil || !ok {
		t.Fatalf("HasToken(SHA-256(token)) = (%v, %v), want true", ok, err)
	}
	if ok, err := e.store.HasToken(ctx, bob.mailbox, tok); err != nil || ok {
		t.Fatalf("HasToken(token) = (%v, %v): the store holds the token itself", ok, err)
	}
}

func TestQuota(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(c *relay.Config) { c.Limits.MailboxCount = 2 })
	bob := e.dial(mustKey(t), nil)
	bob.register(token(9))
	anon := e.dial(mustKey(t), nil)
	mustSendOK(t, anon.sendTo(bob.mailbox, token(9), id(1), []byte("1")))
	mustSendOK(t, anon.sendTo(bob.mailbox, token(9), id(2), []byte("2")))
	wantSendErr(t, anon.sendTo(bob.mailbox, token(9), id(3), []byte("3")), wire.CodeQuota)

	e2 := newEnv(t, func(c *relay.Config) { c.Limits.MailboxBytes = 10 })
	bob2 := e2.dial(mustKey(t), nil)
	bob2.register(token(9))
	anon2 := e2.dial(mustKey(t), nil)
	mustSendOK(t, anon2.sendTo(bob2.mailbox, token(9), id(1), []byte("123456")))
	wantSendErr(t, anon2.sendTo(bob2.mailbox, token(9), id(2), []byte("12345")), wire.CodeQuota)
}

func TestKeyRateLimit(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(c *relay.Config) {
		c.Limits.KeyRate, c.Limits.KeyBurst = 1, 3
	})
	bob := e.dial(mustKey(t), nil)
	bob.register(token(10))
	anonKey := mustKey(t)
	anon := e.dial(anonKey, nil)
	for i := range 3 {
		mustSendOK(t, anon.sendTo(bob.mailbox, token(10), id(i), []byte("x")))
	}
	wantSendErr(t, anon.sendTo(bob.mailbox, token(10), id(3), []byte("x")), wire.CodeRateLimited)
	// The same key on a second connection shares the bucket.
	again := e.dial(anonKey, nil)
	wantSendErr(t, again.sendTo(bob.mailbox, token(10), id(3), []byte("x")), wire.CodeRateLimited)
	// Another key has its own.
	other := e.dial(mustKey(t), nil)
	mustSendOK(t, other.sendTo(bob.mailbox, token(10), id(4), []byte("x")))
	e.clock.Advance(time.Second)
	mustSendOK(t, anon.sendTo(bob.mailbox, token(10), id(3), []byte("x")))
	wantSendErr(t, anon.sendTo(bob.mailbox, token(10), id(5), []byte("x")), wire.CodeRateLimited)
	// GetBundle draws on the same bucket.
	anon.send(wire.GetBundle{ReqID: 1, Mailbox: bob.mailbox, Token: token(10)})
	if er := expect[wire.Error](anon); er.Code != wire.CodeRateLimited {
		t.Fatalf("GetBundle over the limit: got %+v, want rate limited", er)
	}
}

func TestAddrRateLimit(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(c *relay.Config) {
		c.Limits.AddrRate, c.Limits.AddrBurst = 1, 2
	})
	bob := e.dial(mustKey(t), &net.TCPAddr{IP: net.ParseIP("192.0.2.1"), Port: 1})
	bob.register(token(11)) // SetToken takes one token from 192.0.2.1
	v6a := &net.TCPAddr{IP: net.ParseIP("2001:db8:1:2::1"), Port: 1}
	v6b := &net.TCPAddr{IP: net.ParseIP("2001:db8:1:2::ffff"), Port: 2}
	a := e.dial(mustKey(t), v6a)
	b := e.dial(mustKey(t), v6b)
	mustSendOK(t, a.sendTo(bob.mailbox, token(11), id(1), []byte("x")))
	mustSendOK(t, b.sendTo(bob.mailbox, token(11), id(2), []byte("x")))
	// Both addresses are in one /64: its bucket is empty now, whatever the key.
	wantSendErr(t, a.sendTo(bob.mailbox, token(11), id(3), []byte("x")), wire.CodeRateLimited)
	c := e.dial(mustKey(t), &net.TCPAddr{IP: net.ParseIP("2001:db8:1:3::1"), Port: 1})
	mustSendOK(t, c.sendTo(bob.mailbox, token(11), id(4), []byte("x")))
}

func TestHandshakeRateLimit(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(c *relay.Config) {
		c.Limits.HandshakeRate, c.Limits.HandshakeBurst = 1, 2
	})
	addr := &net.TCPAddr{IP: net.ParseIP("198.51.100.7"), Port: 9}
	e.dial(mustKey(t), addr)
	e.dial(mustKey(t), addr)
	if _, err := e.tryDial(mustKey(t), addr); err == nil {
		t.Fatal("third handshake from one address within the burst succeeded")
	}
	e.dial(mustKey(t), &net.TCPAddr{IP: net.ParseIP("198.51.100.8"), Port: 9})
	e.clock.Advance(time.Second)
	e.dial(mustKey(t), addr)
}

func TestTTL(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	bobKey := mustKey(t)
	bob := e.dial(bobKey, nil)
	bob.register(token(12))
	anon := e.dial(mustKey(t), nil)
	mustSendOK(t, anon.sendTo(bob.mailbox, token(12), id(1), []byte("old")))
	e.clock.Advance(29 * 24 * time.Hour)
	mustSendOK(t, anon.sendTo(bob.mailbox, token(12), id(2), []byte("newer")))
	e.clock.Advance(24*time.Hour + time.Millisecond)
	if err := e.srv.Sweep(context.Background()); err != nil {
		t.Fatal(err)
	}
	if ds := bob.subscribe(); len(ds) != 1 || ds[0].ID != id(2) {
		t.Fatalf("after 30 days got %+v, want only %x", ds, id(2))
	}
	bob.quiet()
}

func TestSweeperRuns(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(c *relay.Config) {
		c.Limits.SweepInterval = 5 * time.Millisecond
		c.Limits.TTL = time.Hour
	})
	bob := e.dial(mustKey(t), nil)
	bob.register(token(13))
	anon := e.dial(mustKey(t), nil)
	mustSendOK(t, anon.sendTo(bob.mailbox, token(13), id(1), []byte("x")))
	e.clock.Advance(2 * time.Hour)
	deadline := time.Now().Add(10 * time.Second)
	for {
		u, err := e.store.Usage(context.Background(), bob.mailbox)
		if err != nil {
			t.Fatal(err)
		}
		if u.Count == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the sweeper did not expire the envelope within 10s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestPrekeys(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(c *relay.Config) { c.Limits.Prekeys = 3 })
	bob := e.dial(mustKey(t), nil)
	bob.register(token(14))
	anon := e.dial(mustKey(t), nil)

	anon.send(wire.GetBundle{ReqID: 1, Mailbox: bob.mailbox, Token: token(14)})
	if er := expect[wire.Error](anon); er.Code != wire.CodeNotFound || er.ReqID != 1 {
		t.Fatalf("bundle before upload: got %+v, want not found", er)
	}
	bob.send(wire.PutPrekeys{
		ReqID:      2,
		Signed:     []byte("signed"),
		OneTime:    []wire.Prekey{{ID: 7, Data: []byte("otk7")}},
		KEM:        []wire.Prekey{{ID: 8, Data: []byte("kem8")}},
		LastResort: []byte("last"),
	})
	if ok := expect[wire.OK](bob); ok.ReqID != 2 {
		t.Fatalf("OK for %d, want 2", ok.ReqID)
	}
	anon.send(wire.GetBundle{ReqID: 3, Mailbox: bob.mailbox, Token: token(14)})
	want := wire.Bundle{ReqID: 3, Signed: []byte("signed"), OneTimeID: 7, OneTime: []byte("otk7"), KEMID: 8, KEM: []byte("kem8")}
	if b := expect[wire.Bundle](anon); !equal(b, want) {
		t.Fatalf("bundle = %+v, want %+v", b, want)
	}
	anon.send(wire.GetBundle{ReqID: 4, Mailbox: bob.mailbox, Token: token(14)})
	want = wire.Bundle{ReqID: 4, Signed: []byte("signed"), KEM: []byte("last"), KEMLastResort: true}
	if b := expect[wire.Bundle](anon); !equal(b, want) {
		t.Fatalf("bundle after the pools ran out = %+v, want %+v", b, want)
	}
	anon.send(wire.GetBundle{ReqID: 5, Mailbox: bob.mailbox, Token: token(15)})
	if er := expect[wire.Error](anon); er.Code != wire.CodeDenied {
		t.Fatalf("bundle with a wrong token: got %+v, want denied", er)
	}
	// Past the per-pool limit.
	var many []wire.Prekey
	for i := range uint32(4) {
		many = append(many, wire.Prekey{ID: i, Data: []byte("k")})
	}
	bob.send(wire.PutPrekeys{ReqID: 6, OneTime: many})
	if er := expect[wire.Error](bob); er.Code != wire.CodeQuota || er.ReqID != 6 {
		t.Fatalf("upload past the limit: got %+v, want quota", er)
	}
	// Only the owner's connection writes its entry: anon's upload lands in
	// anon's own mailbox, not bob's.
	anon.send(wire.PutPrekeys{ReqID: 7, Signed: []byte("forged")})
	expect[wire.OK](anon)
	anon.send(wire.GetBundle{ReqID: 8, Mailbox: bob.mailbox, Token: token(14)})
	if b := expect[wire.Bundle](anon); string(b.Signed) != "signed" {
		t.Fatalf("another key replaced bob's signed prekey with %q", b.Signed)
	}
}

func TestUnknownFrameSkipped(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	c := e.dial(mustKey(t), nil)
	c.sendFrame(wire.Frame{Type: 0xee, Payload: []byte("from the future")})
	c.sendFrame(wire.Frame{Type: 0x7f})
	c.quiet()
}

func TestBadFramesEndConnection(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		frame wire.Frame
	}{
		{"truncated Send", wire.Frame{Type: wire.TypeSend, Payload: []byte("short")}},
		{"Ack with trailing bytes", wire.Frame{Type: wire.TypeAck, Payload: []byte{0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 9}}},
		{"relay-only Deliver", wire.Frame{Type: wire.TypeDeliver, Payload: make([]byte, 32)}},
		{"relay-only OK", wire.Frame{Type: wire.TypeOK, Payload: make([]byte, 4)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, nil)
			c := e.dial(mustKey(t), nil)
			c.sendFrame(tt.frame)
			er := expect[wire.Error](c)
			if er.Code != wire.CodeBadRequest {
				t.Fatalf("got %+v, want a bad-request Error", er)
			}
			err := c.closed()
			if err == nil || !strings.Contains(err.Error(), "protocol violation") {
				t.Fatalf("ServeConn = %v, want a protocol violation", err)
			}
		})
	}
}

func TestCleanHangUp(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	c := e.dial(mustKey(t), nil)
	c.quiet()
	c.ch.Close()
	if err := c.closed(); err != nil {
		t.Fatalf("ServeConn after a clean hang-up = %v, want nil", err)
	}
}

func TestPushOverflowResyncs(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(c *relay.Config) { c.Limits.DeliverQueue = 2 })
	bob := e.dial(mustKey(t), nil)
	bob.register(token(16))
	bob.subscribe()
	const n = 200
	var wg sync.WaitGroup
	for w := range 4 {
		anon := e.dial(mustKey(t), nil)
		wg.Go(func() {
			for i := w; i < n; i += 4 {
				anon.send(wire.Send{ID: id(i), To: bob.mailbox, Token: token(16), Envelope: []byte{byte(i)}})
			}
			for i := w; i < n; i += 4 {
				if _, ok := (<-anon.msgs).(wire.SendOK); !ok {
					t.Error("a send failed")
				}
			}
		})
	}
	got := map[[16]byte]bool{}
	var acks []uint64
	for len(got) < n {
		d := expect[wire.Deliver](bob)
		got[d.ID] = true
		acks = append(acks, d.Seq)
	}
	wg.Wait()
	bob.send(wire.Ack{Seqs: acks[:min(len(acks), wire.MaxAcks)]})
	bob.drain() // redeliveries after a resync are allowed (at least once)
	if u, _ := e.store.Usage(context.Background(), bob.mailbox); u.Count != 0 {
		t.Fatalf("%d envelopes left after acknowledging every delivery", u.Count)
	}
}

func TestTwoSubscribers(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	key := mustKey(t)
	laptop := e.dial(key, nil)
	laptop.register(token(17))
	laptop.subscribe()
	phone := e.dial(key, nil)
	phone.subscribe()
	anon := e.dial(mustKey(t), nil)
	mustSendOK(t, anon.sendTo(laptop.mailbox, token(17), id(1), []byte("x")))
	if d := expect[wire.Deliver](laptop); d.ID != id(1) {
		t.Fatalf("laptop got %x", d.ID)
	}
	if d := expect[wire.Deliver](phone); d.ID != id(1) {
		t.Fatalf("phone got %x", d.ID)
	}
}

func TestShutdown(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	bob := e.dial(mustKey(t), nil)
	bob.register(token(18))
	bob.subscribe()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := e.srv.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if err := bob.closed(); err != nil {
		t.Fatalf("ServeConn after Shutdown = %v, want nil", err)
	}
	if _, err := e.tryDial(mustKey(t), nil); err == nil {
		t.Fatal("a handshake succeeded after Shutdown")
	}
	a, b := net.Pipe()
	defer a.Close()
	if err := e.srv.ServeConn(context.Background(), b); !errors.Is(err, relay.ErrClosed) {
		t.Fatalf("ServeConn after Shutdown = %v, want ErrClosed", err)
	}
	if err := e.srv.Close(); err != nil {
		t.Fatalf("Close after Shutdown: %v", err)
	}
}

func TestCloseEndsConnections(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	var clients []*client
	for range 5 {
		c := e.dial(mustKey(t), nil)
		c.quiet()
		clients = append(clients, c)
	}
	if err := e.srv.Close(); err != nil {
		t.Fatal(err)
	}
	// ServeConn decrements the gauge just before it returns: Close waited
	// for every ServeConn.
	if n := e.metric("ferry_relay_connections", ""); n != 0 {
		t.Fatalf("Close returned with %v connections still being served", n)
	}
	for _, c := range clients {
		c.closed()
	}
	if err := e.srv.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

func TestServeConnContext(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	a, b := net.Pipe()
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- e.srv.ServeConn(ctx, b) }()
	cancel()
	select {
	case err := <-served:
		if err == nil {
			t.Fatal("ServeConn with a cancelled context returned nil before any handshake")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("ServeConn ignored its context")
	}
	a.Close()
}

func TestNewServerNeedsKeyAndStore(t *testing.T) {
	t.Parallel()
	if _, err := relay.NewServer(relay.Config{Key: mustKey(t)}); err == nil {
		t.Error("NewServer without a Store succeeded")
	}
	store := newEnv(t, nil).store
	if _, err := relay.NewServer(relay.Config{Store: store}); err == nil {
		t.Error("NewServer without a Key succeeded")
	}
	bad := mustKey(t)
	bad.Public[0] ^= 1
	if _, err := relay.NewServer(relay.Config{Store: store, Key: bad}); err == nil {
		t.Error("NewServer with a mismatched key pair succeeded")
	}
}

// syncStore hides a store's AsyncPutter, so the server falls back to one
// Put at a time.
type syncStore struct{ relay.Store }

func TestPipelinedSendsKeepOrder(t *testing.T) {
	t.Parallel()
	stores := map[string]func(t *testing.T) relay.Store{
		"memstore":  func(t *testing.T) relay.Store { return memstore.New() },
		"sync-only": func(t *testing.T) relay.Store { return syncStore{memstore.New()} },
		"sqlite": func(t *testing.T) relay.Store {
			s, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "relay.db"), nil)
			if err != nil {
				t.Fatal(err)
			}
			return s
		},
	}
	for name, open := range stores {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, func(c *relay.Config) { c.Store = open(t) })
			bob := e.dial(mustKey(t), nil)
			bob.register(token(40))
			bob.subscribe()
			anon := e.dial(mustKey(t), nil)
			const n = 300
			go func() {
				for i := range n {
					f := mustFrame(wire.Send{ID: id(i), To: bob.mailbox, Token: token(40), Envelope: []byte{byte(i)}})
					if err := anon.ch.Send(context.Background(), f); err != nil {
						return
					}
				}
			}()
			for i := range n {
				if ok := expect[wire.SendOK](anon); ok.ID != id(i) {
					t.Fatalf("answer %d is for %x, want %x: answers out of order", i, ok.ID, id(i))
				}
			}
			bob.ch.Close()
			bob.closed()
			bob = e.dial(bob.key, nil)
			ds := bob.subscribe()
			if len(ds) != n {
				t.Fatalf("%d envelopes before the Subscribe's OK, want %d", len(ds), n)
			}
			for i, d := range ds {
				if d.ID != id(i) {
					t.Fatalf("stored envelope %d is %x, want %x: pipelined sends were reordered", i, d.ID, id(i))
				}
			}
		})
	}
}

// gateStore holds every Put until gate is closed.
type gateStore struct {
	relay.Store
	gate chan struct{}
}

func (g gateStore) Put(ctx context.Context, mb [16]byte, env relay.Envelope, q relay.Quota) (uint64, bool, error) {
	<-g.gate
	return g.Store.Put(ctx, mb, env, q)
}

// gateAsyncStore is gateStore with PutAsync: the Put is started at once
// and its result held.
type gateAsyncStore struct{ gateStore }

func (g gateAsyncStore) PutAsync(ctx context.Context, mb [16]byte, env relay.Envelope, q relay.Quota) func() (uint64, bool, error) {
	return func() (uint64, bool, error) { return g.Put(ctx, mb, env, q) }
}

func TestShutdownAnswersSendsInFlight(t *testing.T) {
	t.Parallel()
	for _, async := range []bool{false, true} {
		t.Run(fmt.Sprintf("async=%v", async), func(t *testing.T) {
			t.Parallel()
			gs := gateStore{Store: memstore.New(), gate: make(chan struct{})}
			var store relay.Store = gs
			if async {
				store = gateAsyncStore{gs}
			}
			e := newEnv(t, func(c *relay.Config) { c.Store = store })
			bob := e.dial(mustKey(t), nil)
			bob.register(token(50))
			anon := e.dial(mustKey(t), nil)
			anon.send(wire.Send{ID: id(1), To: bob.mailbox, Token: token(50), Envelope: []byte("x")})
			done := make(chan error, 1)
			go func() { done <- e.srv.Shutdown(context.Background()) }()
			time.Sleep(20 * time.Millisecond) // let Shutdown stop the readers
			select {
			case err := <-done:
				t.Fatalf("Shutdown returned (%v) with a Send in flight", err)
			default:
			}
			close(gs.gate)
			if ok := expect[wire.SendOK](anon); ok.ID != id(1) {
				t.Fatalf("SendOK for %x", ok.ID)
			}
			if err := <-done; err != nil {
				t.Fatalf("Shutdown: %v", err)
			}
			if err := anon.closed(); err != nil {
				t.Fatalf("ServeConn after Shutdown = %v, want nil", err)
			}
		})
	}
}

func TestIdleTimeout(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(c *relay.Config) { c.Limits.IdleTimeout = 600 * time.Millisecond })
	silent := e.dial(mustKey(t), nil)
	chatty := e.dial(mustKey(t), nil)
	for end := time.Now().Add(1500 * time.Millisecond); time.Now().Before(end); {
		time.Sleep(50 * time.Millisecond)
		chatty.quiet() // a Ping every 50ms keeps it open
	}
	if err := silent.closed(); err == nil || !strings.Contains(err.Error(), "idle") {
		t.Fatalf("ServeConn of a silent connection = %v, want an idle error", err)
	}
	select {
	case err := <-chatty.served:
		t.Fatalf("a connection pinging within the timeout was closed: %v", err)
	default:
	}
}

func TestConnsPerAddr(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(c *relay.Config) { c.Limits.ConnsPerAddr = 2 })
	addr := &net.TCPAddr{IP: net.ParseIP("203.0.113.5"), Port: 1}
	first := e.dial(mustKey(t), addr)
	e.dial(mustKey(t), addr)
	if _, err := e.tryDial(mustKey(t), addr); err == nil {
		t.Fatal("a third connection from one address was served")
	}
	e.dial(mustKey(t), &net.TCPAddr{IP: net.ParseIP("203.0.113.6"), Port: 1})
	first.ch.Close()
	first.closed()
	e.dial(mustKey(t), addr)
}

// TestSendsInFlightBounded checks that a connection cannot pin more than
// 1 MiB of envelopes in the relay while they are being stored: the relay
// stops reading it until some are answered.
func TestSendsInFlightBounded(t *testing.T) {
	t.Parallel()
	gs := gateStore{Store: memstore.New(), gate: make(chan struct{})}
	e := newEnv(t, func(c *relay.Config) { c.Store = gateAsyncStore{gs} })
	bob := e.dial(mustKey(t), nil)
	bob.register(token(60))
	anon := e.dial(mustKey(t), nil)
	big := make([]byte, wire.MaxEnvelope)
	go func() {
		for i := range 5 {
			if err := anon.ch.Send(context.Background(), mustFrame(wire.Send{ID: id(i), To: bob.mailbox, Token: token(60), Envelope: big})); err != nil {
				return
			}
		}
		anon.ch.Send(context.Background(), mustFrame(wire.Ping{Nonce: 1}))
	}()
	select {
	case m := <-anon.msgs:
		t.Fatalf("got %T with 4 MiB-sized sends held by the store; the relay read past its in-flight bound", m)
	case <-time.After(200 * time.Millisecond):
	}
	close(gs.gate)
	oks, pongs := 0, 0
	for range 6 {
		switch m := anon.next().(type) {
		case wire.SendOK:
			if m.ID != id(oks) {
				t.Fatalf("SendOK %d for %x", oks, m.ID)
			}
			oks++
		case wire.Pong:
			pongs++ // may overtake the SendOKs
		default:
			t.Fatalf("got %T %+v", m, m)
		}
	}
	if oks != 5 || pongs != 1 {
		t.Fatalf("got %d SendOKs and %d Pongs, want 5 and 1", oks, pongs)
	}
}

// TestPushKeepsPerSenderOrder checks that envelopes from one sender
// connection reach a subscriber in the order they were sent, even when the
// subscriber is slow and its push queue overflows: the first time each id
// arrives, ids increase.
func TestPushKeepsPerSenderOrder(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(c *relay.Config) { c.Limits.DeliverQueue = 3 })
	bob := e.dial(mustKey(t), nil)
	bob.register(token(70))
	bob.subscribe()
	anon := e.dial(mustKey(t), nil)
	const n = 400
	go func() {
		for i := range n {
			if err := anon.ch.Send(context.Background(), mustFrame(wire.Send{ID: id(i), To: bob.mailbox, Token: token(70), Envelope: make([]byte, 100)})); err != nil {
				return
			}
		}
	}()
	seen := map[[16]byte]bool{}
	next := 0
	for next < n {
		d := expect[wire.Deliver](bob)
		if seen[d.ID] {
			continue // a redelivery after a resync
		}
		seen[d.ID] = true
		if d.ID != id(next) {
			t.Fatalf("first delivery number %d is %x, want %x: per-sender order broken", next, d.ID, id(next))
		}
		next++
		if next%50 == 0 {
			time.Sleep(10 * time.Millisecond) // be slow now and then
		}
	}
}
