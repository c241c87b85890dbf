// Package storetest is the conformance suite for relay.Store: every backend
// runs it from its own tests, so the contracts written on relay.Store hold
// for all of them.
//
// It is test support, not a backend; production code never imports it.
package storetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/ferry-im/ferry/relay"
)

// Config says how to get stores for the suite.
type Config struct {
	// Open returns a new, empty store. The suite closes it.
	Open func(t *testing.T) relay.Store
	// Reopen, if set, closes s and opens the same store again. It must be
	// set for a backend that claims durability; the suite then checks that
	// everything acknowledged survives a reopen.
	Reopen func(t *testing.T, s relay.Store) relay.Store
	// Peer, if set, opens another Store on the same data as s, as another
	// relay of a cluster does (relay/postgres). The suite then spreads its
	// concurrent writers over both and checks that they still never
	// reuse a seq, store an id twice or hand out a prekey twice. The suite
	// closes the peer.
	Peer func(t *testing.T, s relay.Store) relay.Store
}

// t0 is the suite's reference time; stores see only times the suite gives.
var t0 = time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC)

// Run runs every conformance test against the stores c opens.
func Run(t *testing.T, c Config) {
	tests := []struct {
		name string
		fn   func(t *testing.T, c Config)
	}{
		{"PutPending", testPutPending},
		{"PutUnknownMailbox", testPutUnknownMailbox},
		{"PutDuplicate", testPutDuplicate},
		{"InputsNotRetained", testInputsNotRetained},
		{"Ack", testAck},
		{"SeqNeverReused", testSeqNeverReused},
		{"Quota", testQuota},
		{"Expire", testExpire},
		{"ExpireAcknowledged", testExpireAcknowledged},
		{"Isolation", testIsolation},
		{"Token", testToken},
		{"TokenLimit", testTokenLimit},
		{"DeleteIdle", testDeleteIdle},
		{"BundleConsumesNothing", testBundleConsumesNothing},
		{"Prekeys", testPrekeys},
		{"PrekeyLimit", testPrekeyLimit},
		{"PopWithoutSigned", testPopWithoutSigned},
		{"ConcurrentPops", testConcurrentPops},
		{"ConcurrentPuts", testConcurrentPuts},
		{"ConcurrentDuplicates", testConcurrentDuplicates},
		{"AfterClose", testAfterClose},
	}
	if _, ok := open(t, c).(relay.AsyncPutter); ok {
		tests = append(tests, struct {
			name string
			fn   func(t *testing.T, c Config)
		}{"AsyncPutOrder", testAsyncPutOrder})
	}
	if c.Reopen != nil {
		tests = append(tests, struct {
			name string
			fn   func(t *testing.T, c Config)
		}{"Durable", testDurable})
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tt.fn(t, c)
		})
	}
}

// peers returns s and, if the backend can share its data, a peer of it:
// concurrent writers alternate between them.
func peers(t *testing.T, c Config, s relay.Store) []relay.Store {
	t.Helper()
	if c.Peer == nil {
		return []relay.Store{s}
	}
	p := c.Peer(t, s)
	t.Cleanup(func() { p.Close() })
	return []relay.Store{s, p}
}

func open(t *testing.T, c Config) relay.Store {
	t.Helper()
	s := c.Open(t)
	t.Cleanup(func() { s.Close() })
	return s
}

func mailbox(n byte) [16]byte { return [16]byte{0: 'm', 1: n} }
func msgID(n int) [16]byte    { return [16]byte{0: 'i', 1: byte(n >> 8), 2: byte(n)} }

// makeMailbox creates mb by setting its token.
func makeMailbox(t *testing.T, s relay.Store, mb [16]byte) {
	t.Helper()
	if err := s.SetToken(context.Background(), mb, [32]byte{1}); err != nil {
		t.Fatalf("SetToken: %v", err)
	}
}

func put(t *testing.T, s relay.Store, mb [16]byte, id [16]byte, at time.Time, data []byte) uint64 {
	t.Helper()
	seq, dup, err := s.Put(context.Background(), mb, relay.Envelope{ID: id, Received: at, Data: data}, relay.Quota{})
	if err != nil {
		t.Fatalf("Put(%x): %v", id[:3], err)
	}
	if dup {
		t.Fatalf("Put(%x): dup = true for a new id", id[:3])
	}
	return seq
}

func pending(t *testing.T, s relay.Store, mb [16]byte, after uint64) []relay.Envelope {
	t.Helper()
	envs, err := s.Pending(context.Background(), mb, after, 1000)
	if err != nil {
		t.Fatalf("Pending: %v", err)
	}
	return envs
}

func seqs(envs []relay.Envelope) []uint64 {
	var out []uint64
	for _, e := range envs {
		out = append(out, e.Seq)
	}
	return out
}

func usage(t *testing.T, s relay.Store, mb [16]byte) relay.Usage {
	t.Helper()
	u, err := s.Usage(context.Background(), mb)
	if err != nil {
		t.Fatalf("Usage: %v", err)
	}
	return u
}

func testPutPending(t *testing.T, c Config) {
	s := open(t, c)
	mb := mailbox(1)
	makeMailbox(t, s, mb)
	big := bytes.Repeat([]byte{0xab}, 256<<10)
	datas := [][]byte{[]byte("one"), {}, big, []byte("four")}
	var got []uint64
	for i, d := range datas {
		got = append(got, put(t, s, mb, msgID(i), t0.Add(time.Duration(i)*time.Millisecond+time.Microsecond), d))
	}
	for i := 1; i < len(got); i++ {
		if got[i] <= got[i-1] {
			t.Fatalf("seqs %v do not increase", got)
		}
	}
	if got[0] < 1 {
		t.Fatalf("first seq %d, want >= 1", got[0])
	}
	envs := pending(t, s, mb, 0)
	if len(envs) != len(datas) {
		t.Fatalf("Pending returned %d envelopes, want %d", len(envs), len(datas))
	}
	for i, e := range envs {
		want := t0.Add(time.Duration(i) * time.Millisecond)
		wantID := msgID(i)
		if e.Seq != got[i] || e.ID != msgID(i) || !bytes.Equal(e.Data, datas[i]) || !e.Received.Equal(want) {
			t.Errorf("envelope %d: got seq %d id %x received %v len %d, want seq %d id %x received %v len %d",
				i, e.Seq, e.ID[:3], e.Received, len(e.Data), got[i], wantID[:3], want, len(datas[i]))
		}
	}
	if after := seqs(pending(t, s, mb, got[1])); !slices.Equal(after, got[2:]) {
		t.Errorf("Pending(after %d) = %v, want %v", got[1], after, got[2:])
	}
	limited, err := s.Pending(context.Background(), mb, 0, 2)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(seqs(limited), got[:2]) {
		t.Errorf("Pending(limit 2) = %v, want %v", seqs(limited), got[:2])
	}
	if envs := pending(t, s, mb, got[3]); len(envs) != 0 {
		t.Errorf("Pending(after last) = %v, want none", seqs(envs))
	}
	want := relay.Usage{Count: 4, Bytes: int64(3 + len(big) + 4)}
	if u := usage(t, s, mb); u != want {
		t.Errorf("Usage = %+v, want %+v", u, want)
	}
	if envs := pending(t, s, mailbox(99), 0); len(envs) != 0 {
		t.Errorf("Pending of a missing mailbox = %v, want none", seqs(envs))
	}
	if u := usage(t, s, mailbox(99)); u != (relay.Usage{}) {
		t.Errorf("Usage of a missing mailbox = %+v, want zero", u)
	}
}

func testPutUnknownMailbox(t *testing.T, c Config) {
	s := open(t, c)
	_, _, err := s.Put(context.Background(), mailbox(2), relay.Envelope{ID: msgID(1), Received: t0, Data: []byte("x")}, relay.Quota{})
	if !errors.Is(err, relay.ErrNotFound) {
		t.Fatalf("Put to a missing mailbox: got %v, want ErrNotFound", err)
	}
}

func testPutDuplicate(t *testing.T, c Config) {
	s := open(t, c)
	mb := mailbox(3)
	makeMailbox(t, s, mb)
	seq := put(t, s, mb, msgID(1), t0, []byte("first"))
	ctx := context.Background()
	check := func(when string) {
		t.Helper()
		got, dup, err := s.Put(ctx, mb, relay.Envelope{ID: msgID(1), Received: t0.Add(time.Second), Data: []byte("second")}, relay.Quota{})
		// An acknowledged envelope's seq need not be kept.
		if err != nil || !dup || got != seq && !(when == "acknowledged" && got == 0) {
			t.Fatalf("%s: Put of a stored id = (%d, %v, %v), want (%d, true, nil)", when, got, dup, err, seq)
		}
	}
	check("pending")
	envs := pending(t, s, mb, 0)
	if len(envs) != 1 || string(envs[0].Data) != "first" {
		t.Fatalf("after a duplicate Put, pending = %d envelopes (first %q), want only the first", len(envs), envs[0].Data)
	}
	if u := usage(t, s, mb); u.Count != 1 {
		t.Fatalf("Usage.Count = %d after a duplicate, want 1", u.Count)
	}
	if n, err := s.Ack(ctx, mb, []uint64{seq}); err != nil || n != 1 {
		t.Fatalf("Ack = (%d, %v), want (1, nil)", n, err)
	}
	check("acknowledged")
	if envs := pending(t, s, mb, 0); len(envs) != 0 {
		t.Fatalf("a retried send of an acknowledged id came back: pending %v", seqs(envs))
	}
}

func testInputsNotRetained(t *testing.T, c Config) {
	s := open(t, c)
	mb := mailbox(4)
	makeMailbox(t, s, mb)
	data := []byte("hello")
	put(t, s, mb, msgID(1), t0, data)
	data[0] = 'J'
	envs := pending(t, s, mb, 0)
	if string(envs[0].Data) != "hello" {
		t.Fatalf("store kept the caller's slice: got %q", envs[0].Data)
	}
	envs[0].Data[0] = 'Y'
	if envs := pending(t, s, mb, 0); string(envs[0].Data) != "hello" {
		t.Fatalf("store handed out its own slice: got %q", envs[0].Data)
	}
	signed := []byte("signed")
	otk := []byte("otk")
	if err := s.PutPrekeys(context.Background(), mb, relay.PrekeyUpload{Signed: signed, OneTime: []relay.Prekey{{ID: 1, Data: otk}}}, 0); err != nil {
		t.Fatal(err)
	}
	signed[0], otk[0] = 'X', 'X'
	b, err := s.PopBundle(context.Background(), mb)
	if err != nil {
		t.Fatal(err)
	}
	if string(b.Signed) != "signed" || string(b.OneTime.Data) != "otk" {
		t.Fatalf("store kept the caller's prekey slices: got %q, %q", b.Signed, b.OneTime.Data)
	}
}

func testAck(t *testing.T, c Config) {
	s := open(t, c)
	mb := mailbox(5)
	makeMailbox(t, s, mb)
	var all []uint64
	for i := range 5 {
		all = append(all, put(t, s, mb, msgID(i), t0, []byte{byte(i), 1}))
	}
	ctx := context.Background()
	n, err := s.Ack(ctx, mb, []uint64{all[1], all[3], all[3], all[4] + 100})
	if err != nil || n != 2 {
		t.Fatalf("Ack = (%d, %v), want (2, nil)", n, err)
	}
	want := []uint64{all[0], all[2], all[4]}
	if got := seqs(pending(t, s, mb, 0)); !slices.Equal(got, want) {
		t.Fatalf("pending after Ack = %v, want %v", got, want)
	}
	if u := usage(t, s, mb); u != (relay.Usage{Count: 3, Bytes: 6}) {
		t.Fatalf("Usage after Ack = %+v, want {3 6}", u)
	}
	if n, err := s.Ack(ctx, mb, []uint64{all[1]}); err != nil || n != 0 {
		t.Fatalf("second Ack of the same seq = (%d, %v), want (0, nil)", n, err)
	}
	// More seqs than the mailbox holds: zero, acknowledged, unassigned
	// and repeated ones around one pending seq.
	n, err = s.Ack(ctx, mb, []uint64{0, all[1], all[2] + 1000, all[2], all[3], all[2], all[4] + 1, all[4] + 2})
	if err != nil || n != 1 {
		t.Fatalf("Ack naming one pending seq among seven others = (%d, %v), want (1, nil)", n, err)
	}
	if got, want := seqs(pending(t, s, mb, 0)), []uint64{all[0], all[4]}; !slices.Equal(got, want) {
		t.Fatalf("pending after the second Ack = %v, want %v", got, want)
	}
	if n, err := s.Ack(ctx, mailbox(98), []uint64{1}); err != nil || n != 0 {
		t.Fatalf("Ack on a missing mailbox = (%d, %v), want (0, nil)", n, err)
	}
	if n, err := s.Ack(ctx, mb, nil); err != nil || n != 0 {
		t.Fatalf("empty Ack = (%d, %v), want (0, nil)", n, err)
	}
}

func testSeqNeverReused(t *testing.T, c Config) {
	s := open(t, c)
	mb := mailbox(6)
	makeMailbox(t, s, mb)
	a := put(t, s, mb, msgID(1), t0, []byte("a"))
	b := put(t, s, mb, msgID(2), t0, []byte("b"))
	if _, err := s.Ack(context.Background(), mb, []uint64{a, b}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Expire(context.Background(), t0.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if c := put(t, s, mb, msgID(3), t0.Add(2*time.Hour), []byte("c")); c <= b {
		t.Fatalf("seq %d after acknowledging and expiring up to %d: seqs must never be reused", c, b)
	}
}

func testQuota(t *testing.T, c Config) {
	s := open(t, c)
	mb := mailbox(7)
	makeMailbox(t, s, mb)
	ctx := context.Background()
	q := relay.Quota{MaxCount: 3, MaxBytes: 10}
	p := func(id int, data string) (uint64, bool, error) {
		return s.Put(ctx, mb, relay.Envelope{ID: msgID(id), Received: t0, Data: []byte(data)}, q)
	}
	first, _, err := p(1, "aaaa")
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := p(2, "bbbbbbb"); !errors.Is(err, relay.ErrQuota) {
		t.Fatalf("Put past MaxBytes: got %v, want ErrQuota", err)
	}
	if _, _, err := p(3, "bbbbbb"); err != nil {
		t.Fatalf("Put up to MaxBytes exactly: %v", err)
	}
	if _, _, err := p(4, ""); err != nil {
		t.Fatalf("third Put: %v", err)
	}
	if _, _, err := p(5, ""); !errors.Is(err, relay.ErrQuota) {
		t.Fatalf("Put past MaxCount: got %v, want ErrQuota", err)
	}
	if seq, dup, err := p(1, "aaaa"); err != nil || !dup || seq != first {
		t.Fatalf("duplicate Put into a full mailbox = (%d, %v, %v), want (%d, true, nil)", seq, dup, err, first)
	}
	if u := usage(t, s, mb); u != (relay.Usage{Count: 3, Bytes: 10}) {
		t.Fatalf("Usage = %+v, want {3 10}", u)
	}
	if _, err := s.Ack(ctx, mb, []uint64{first}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := p(5, "cccc"); err != nil {
		t.Fatalf("Put after Ack freed space: %v", err)
	}
}

func testExpire(t *testing.T, c Config) {
	s := open(t, c)
	ctx := context.Background()
	mb1, mb2 := mailbox(8), mailbox(9)
	makeMailbox(t, s, mb1)
	makeMailbox(t, s, mb2)
	old1 := put(t, s, mb1, msgID(1), t0, []byte("old"))
	acked := put(t, s, mb1, msgID(2), t0, []byte("acked"))
	put(t, s, mb2, msgID(1), t0.Add(time.Hour-time.Millisecond), []byte("old2"))
	keep := put(t, s, mb1, msgID(3), t0.Add(time.Hour), []byte("keep"))
	if _, err := s.Ack(ctx, mb1, []uint64{acked}); err != nil {
		t.Fatal(err)
	}
	n, err := s.Expire(ctx, t0.Add(time.Hour))
	if err != nil || n != 2 {
		t.Fatalf("Expire = (%d, %v), want (2, nil)", n, err)
	}
	if got := seqs(pending(t, s, mb1, 0)); !slices.Equal(got, []uint64{keep}) {
		t.Fatalf("pending after Expire = %v, want [%d]", got, keep)
	}
	if envs := pending(t, s, mb2, 0); len(envs) != 0 {
		t.Fatalf("mailbox 2 pending after Expire = %v, want none", seqs(envs))
	}
	if u := usage(t, s, mb1); u != (relay.Usage{Count: 1, Bytes: 4}) {
		t.Fatalf("Usage after Expire = %+v, want {1 4}", u)
	}
	// Expired ids are forgotten: the same id is a new envelope again
	// (acknowledged ones: testExpireAcknowledged).
	for _, id := range []int{1} {
		seq, dup, err := s.Put(ctx, mb1, relay.Envelope{ID: msgID(id), Received: t0.Add(2 * time.Hour), Data: []byte("again")}, relay.Quota{})
		if err != nil || dup || seq <= keep || seq == old1 {
			t.Fatalf("Put of expired id %d = (%d, %v, %v), want a new seq above %d", id, seq, dup, err, keep)
		}
	}
	if n, err := s.Expire(ctx, t0.Add(time.Hour)); err != nil || n != 0 {
		t.Fatalf("second Expire = (%d, %v), want (0, nil)", n, err)
	}
	if ok, err := s.HasToken(ctx, mb1, [32]byte{1}); err != nil || !ok {
		t.Fatalf("Expire removed the mailbox: HasToken = (%v, %v)", ok, err)
	}
}

// testExpireAcknowledged checks how long an acknowledged id is remembered:
// never forgotten before cutoff passes its received time, forgotten once
// cutoff is more than a day later (stores may keep the day only).
func testExpireAcknowledged(t *testing.T, c Config) {
	s := open(t, c)
	ctx := context.Background()
	mb := mailbox(30)
	makeMailbox(t, s, mb)
	seq := put(t, s, mb, msgID(1), t0, []byte("x"))
	if _, err := s.Ack(ctx, mb, []uint64{seq}); err != nil {
		t.Fatal(err)
	}
	again := func() bool {
		t.Helper()
		_, dup, err := s.Put(ctx, mb, relay.Envelope{ID: msgID(1), Received: t0.Add(72 * time.Hour), Data: []byte("y")}, relay.Quota{})
		if err != nil {
			t.Fatal(err)
		}
		return dup
	}
	if _, err := s.Expire(ctx, t0); err != nil {
		t.Fatal(err)
	}
	if !again() {
		t.Fatal("an id acknowledged at t0 was forgotten by Expire(t0)")
	}
	if _, err := s.Expire(ctx, t0.Add(48*time.Hour)); err != nil {
		t.Fatal(err)
	}
	// The retry above was stored again only if the id had been forgotten:
	// it was not, so this must now be new.
	if again() {
		t.Fatal("an id acknowledged two days before the cutoff was still remembered")
	}
}

func testIsolation(t *testing.T, c Config) {
	s := open(t, c)
	ctx := context.Background()
	a, b := mailbox(10), mailbox(11)
	makeMailbox(t, s, a)
	makeMailbox(t, s, b)
	put(t, s, a, msgID(1), t0, []byte("for a"))
	sb := put(t, s, b, msgID(1), t0, []byte("for b"))
	if n, err := s.Ack(ctx, b, []uint64{sb}); err != nil || n != 1 {
		t.Fatalf("Ack on b = (%d, %v), want (1, nil)", n, err)
	}
	envs := pending(t, s, a, 0)
	if len(envs) != 1 || string(envs[0].Data) != "for a" {
		t.Fatalf("mailbox a holds %d envelopes, want its own one", len(envs))
	}
	if err := s.PutPrekeys(ctx, a, relay.PrekeyUpload{Signed: []byte("sa"), OneTime: []relay.Prekey{{ID: 1, Data: []byte("a1")}}}, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := s.PopBundle(ctx, b); !errors.Is(err, relay.ErrNotFound) {
		t.Fatalf("PopBundle(b) = %v, want ErrNotFound", err)
	}
	if n, _, err := s.PrekeyCounts(ctx, b); err != nil || n != 0 {
		t.Fatalf("PrekeyCounts(b) = (%d, %v), want (0, nil)", n, err)
	}
}

func hasToken(t *testing.T, s relay.Store, mb [16]byte, h [32]byte) bool {
	t.Helper()
	ok, err := s.HasToken(context.Background(), mb, h)
	if err != nil {
		t.Fatalf("HasToken: %v", err)
	}
	return ok
}

func testToken(t *testing.T, c Config) {
	s := open(t, c)
	ctx := context.Background()
	mb := mailbox(12)
	h1, h2, h3 := [32]byte{1, 2, 3}, [32]byte{4, 5, 6}, [32]byte{7, 8, 9}
	if hasToken(t, s, mb, h1) {
		t.Fatal("a missing mailbox has a token")
	}
	if err := s.RemoveToken(ctx, mb, h1); err != nil {
		t.Fatalf("RemoveToken on a missing mailbox: %v", err)
	}
	// SetToken replaces the whole set.
	for _, h := range [][32]byte{h1, h2} {
		if err := s.SetToken(ctx, mb, h); err != nil {
			t.Fatal(err)
		}
		if !hasToken(t, s, mb, h) {
			t.Fatalf("HasToken(%x) false after SetToken", h[:3])
		}
	}
	if hasToken(t, s, mb, h1) {
		t.Fatal("SetToken kept the earlier token")
	}
	// AddToken adds; RemoveToken removes one and leaves the others.
	for range 2 { // adding one it has changes nothing
		if err := s.AddToken(ctx, mb, h3, 0); err != nil {
			t.Fatal(err)
		}
	}
	if !hasToken(t, s, mb, h2) || !hasToken(t, s, mb, h3) {
		t.Fatal("AddToken lost a token")
	}
	if err := s.RemoveToken(ctx, mb, h2); err != nil {
		t.Fatal(err)
	}
	if hasToken(t, s, mb, h2) || !hasToken(t, s, mb, h3) {
		t.Fatal("RemoveToken removed the wrong token")
	}
	if err := s.RemoveToken(ctx, mb, h2); err != nil {
		t.Fatalf("RemoveToken of a removed token: %v", err)
	}
	// AddToken creates a mailbox; a mailbox made by PutPrekeys has no token
	// yet but takes envelopes.
	added := mailbox(14)
	if err := s.AddToken(ctx, added, h1, 0); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Put(ctx, added, relay.Envelope{ID: msgID(1), Received: t0, Data: []byte("x")}, relay.Quota{}); err != nil {
		t.Fatalf("Put to a mailbox made by AddToken: %v", err)
	}
	other := mailbox(13)
	if err := s.PutPrekeys(ctx, other, relay.PrekeyUpload{Signed: []byte("s")}, 0); err != nil {
		t.Fatal(err)
	}
	if hasToken(t, s, other, [32]byte{}) || hasToken(t, s, other, h1) {
		t.Fatal("a mailbox made by PutPrekeys has a token")
	}
	if _, _, err := s.Put(ctx, other, relay.Envelope{ID: msgID(1), Received: t0, Data: []byte("x")}, relay.Quota{}); err != nil {
		t.Fatalf("Put to a mailbox made by PutPrekeys: %v", err)
	}
}

func testTokenLimit(t *testing.T, c Config) {
	s := open(t, c)
	ctx := context.Background()
	mb := mailbox(15)
	for i := range 3 {
		if err := s.AddToken(ctx, mb, [32]byte{byte(i)}, 3); err != nil {
			t.Fatalf("AddToken %d of 3: %v", i, err)
		}
	}
	if err := s.AddToken(ctx, mb, [32]byte{9}, 3); !errors.Is(err, relay.ErrQuota) {
		t.Fatalf("fourth AddToken with max 3 = %v, want ErrQuota", err)
	}
	if hasToken(t, s, mb, [32]byte{9}) {
		t.Fatal("a refused AddToken added its token")
	}
	if err := s.AddToken(ctx, mb, [32]byte{1}, 3); err != nil {
		t.Fatalf("re-adding a token at the limit: %v", err)
	}
	if err := s.RemoveToken(ctx, mb, [32]byte{0}); err != nil {
		t.Fatal(err)
	}
	if err := s.AddToken(ctx, mb, [32]byte{9}, 3); err != nil {
		t.Fatalf("AddToken after a removal freed a place: %v", err)
	}
}

// farDay is a time later than any real clock running the suite, so that
// mailboxes created now count as older.
var farDay = time.Date(2100, 1, 1, 12, 0, 0, 0, time.UTC)

func testDeleteIdle(t *testing.T, c Config) {
	s := open(t, c)
	ctx := context.Background()
	idle, busy, never := mailbox(40), mailbox(41), mailbox(42)
	for _, mb := range [][16]byte{idle, busy, never} {
		makeMailbox(t, s, mb)
	}
	seq := put(t, s, idle, msgID(1), t0, []byte("left behind"))
	if _, err := s.Ack(ctx, idle, []uint64{seq}); err != nil {
		t.Fatal(err)
	}
	put(t, s, idle, msgID(2), t0, []byte("left behind"))
	if err := s.PutPrekeys(ctx, idle, relay.PrekeyUpload{Signed: []byte("s"), OneTime: []relay.Prekey{pk(1)}}, 0); err != nil {
		t.Fatal(err)
	}
	if err := s.Touch(ctx, idle, farDay); err != nil {
		t.Fatal(err)
	}
	if err := s.Touch(ctx, busy, farDay.Add(48*time.Hour)); err != nil {
		t.Fatal(err)
	}
	if err := s.Touch(ctx, busy, farDay); err != nil { // never moves back
		t.Fatal(err)
	}
	if err := s.Touch(ctx, mailbox(43), farDay); err != nil {
		t.Fatalf("Touch of a missing mailbox: %v", err)
	}
	// The same day as the last activity is not before it.
	if n, err := s.DeleteIdle(ctx, farDay.Add(time.Hour)); err != nil || n != 1 {
		t.Fatalf("DeleteIdle(last activity's day) = (%d, %v), want (1, nil): only the never-touched mailbox", n, err)
	}
	if hasToken(t, s, never, [32]byte{1}) {
		t.Fatal("the mailbox never touched since its creation was kept")
	}
	if n, err := s.DeleteIdle(ctx, farDay.Add(24*time.Hour)); err != nil || n != 1 {
		t.Fatalf("DeleteIdle(a day later) = (%d, %v), want (1, nil)", n, err)
	}
	if hasToken(t, s, idle, [32]byte{1}) || !hasToken(t, s, busy, [32]byte{1}) {
		t.Fatal("DeleteIdle deleted the wrong mailbox")
	}
	if envs := pending(t, s, idle, 0); len(envs) != 0 {
		t.Fatalf("a deleted mailbox still has %d envelopes", len(envs))
	}
	if u := usage(t, s, idle); u != (relay.Usage{}) {
		t.Fatalf("a deleted mailbox's usage = %+v", u)
	}
	if n, k, err := s.PrekeyCounts(ctx, idle); err != nil || n+k != 0 {
		t.Fatalf("a deleted mailbox's prekeys = (%d, %d, %v)", n, k, err)
	}
	if _, err := s.PopBundle(ctx, idle); !errors.Is(err, relay.ErrNotFound) {
		t.Fatalf("PopBundle of a deleted mailbox = %v, want ErrNotFound", err)
	}
	if _, _, err := s.Put(ctx, idle, relay.Envelope{ID: msgID(3), Received: t0, Data: []byte("x")}, relay.Quota{}); !errors.Is(err, relay.ErrNotFound) {
		t.Fatalf("Put to a deleted mailbox = %v, want ErrNotFound", err)
	}
	// Made again, it starts empty: its old ids are forgotten, seqs restart.
	makeMailbox(t, s, idle)
	if seq, dup, err := s.Put(ctx, idle, relay.Envelope{ID: msgID(1), Received: t0, Data: []byte("x")}, relay.Quota{}); err != nil || dup {
		t.Fatalf("Put to a re-made mailbox = (%d, %v, %v), want a new envelope", seq, dup, err)
	}
}

func testBundleConsumesNothing(t *testing.T, c Config) {
	s := open(t, c)
	ctx := context.Background()
	mb := mailbox(44)
	if _, err := s.Bundle(ctx, mb); !errors.Is(err, relay.ErrNotFound) {
		t.Fatalf("Bundle of a missing mailbox = %v, want ErrNotFound", err)
	}
	if err := s.PutPrekeys(ctx, mb, relay.PrekeyUpload{Signed: []byte("s"), OneTime: []relay.Prekey{pk(1)}, KEM: []relay.Prekey{pk(2)}, LastResort: []byte("lr")}, 0); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		b, err := s.Bundle(ctx, mb)
		if err != nil {
			t.Fatal(err)
		}
		if string(b.Signed) != "s" || b.HasOneTime || !b.HasKEM || !b.KEMLastResort || string(b.KEM.Data) != "lr" || b.KEM.ID != 0 {
			t.Fatalf("Bundle = %+v, want the signed and last-resort keys only", b)
		}
	}
	if n, k, err := s.PrekeyCounts(ctx, mb); err != nil || n != 1 || k != 1 {
		t.Fatalf("PrekeyCounts after Bundle = (%d, %d, %v), want (1, 1, nil)", n, k, err)
	}
}

func pop(t *testing.T, s relay.Store, mb [16]byte) relay.Bundle {
	t.Helper()
	b, err := s.PopBundle(context.Background(), mb)
	if err != nil {
		t.Fatalf("PopBundle: %v", err)
	}
	return b
}

func pk(id uint32) relay.Prekey { return relay.Prekey{ID: id, Data: []byte(fmt.Sprintf("key %d", id))} }

func testPrekeys(t *testing.T, c Config) {
	s := open(t, c)
	ctx := context.Background()
	mb := mailbox(14)
	if _, err := s.PopBundle(ctx, mb); !errors.Is(err, relay.ErrNotFound) {
		t.Fatalf("PopBundle of a missing mailbox: got %v, want ErrNotFound", err)
	}
	up := relay.PrekeyUpload{
		Signed:     []byte("signed v1"),
		OneTime:    []relay.Prekey{pk(3), pk(1), pk(2)},
		KEM:        []relay.Prekey{pk(11), pk(10)},
		LastResort: []byte("last resort v1"),
	}
	if err := s.PutPrekeys(ctx, mb, up, 0); err != nil {
		t.Fatal(err)
	}
	if o, k, err := s.PrekeyCounts(ctx, mb); err != nil || o != 3 || k != 2 {
		t.Fatalf("PrekeyCounts = (%d, %d, %v), want (3, 2, nil)", o, k, err)
	}
	// Re-uploading id 2 replaces it; the signed record is replaced; an
	// empty LastResort keeps the old one.
	if err := s.PutPrekeys(ctx, mb, relay.PrekeyUpload{Signed: []byte("signed v2"), OneTime: []relay.Prekey{{ID: 2, Data: []byte("key 2 v2")}}}, 0); err != nil {
		t.Fatal(err)
	}
	wantOne := []relay.Prekey{pk(1), {ID: 2, Data: []byte("key 2 v2")}, pk(3)}
	wantKEM := []relay.Prekey{pk(10), pk(11)}
	seenOne := map[uint32]bool{}
	for i := range 5 {
		b := pop(t, s, mb)
		if string(b.Signed) != "signed v2" {
			t.Fatalf("pop %d: signed = %q, want the replaced record", i, b.Signed)
		}
		if i < 3 {
			if !b.HasOneTime || seenOne[b.OneTime.ID] {
				t.Fatalf("pop %d: one-time = %+v (has %v), want a fresh one", i, b.OneTime, b.HasOneTime)
			}
			seenOne[b.OneTime.ID] = true
			if want := wantOne[b.OneTime.ID-1]; !bytes.Equal(b.OneTime.Data, want.Data) {
				t.Fatalf("pop %d: one-time %d data %q, want %q", i, b.OneTime.ID, b.OneTime.Data, want.Data)
			}
		} else if b.HasOneTime {
			t.Fatalf("pop %d: one-time %+v after the pool ran out", i, b.OneTime)
		}
		switch {
		case i < 2:
			if !b.HasKEM || b.KEMLastResort || b.KEM.ID != wantKEM[i].ID && b.KEM.ID != wantKEM[1-i].ID {
				t.Fatalf("pop %d: KEM = %+v (has %v, last resort %v), want a one-time KEM prekey", i, b.KEM, b.HasKEM, b.KEMLastResort)
			}
		default:
			if !b.HasKEM || !b.KEMLastResort || string(b.KEM.Data) != "last resort v1" {
				t.Fatalf("pop %d: KEM = %+v (has %v, last resort %v), want the last-resort key", i, b.KEM, b.HasKEM, b.KEMLastResort)
			}
		}
	}
	if o, k, err := s.PrekeyCounts(ctx, mb); err != nil || o != 0 || k != 0 {
		t.Fatalf("PrekeyCounts after popping = (%d, %d, %v), want (0, 0, nil)", o, k, err)
	}
	// Without a last-resort key the bundle has no KEM prekey.
	bare := mailbox(15)
	if err := s.PutPrekeys(ctx, bare, relay.PrekeyUpload{Signed: []byte("s")}, 0); err != nil {
		t.Fatal(err)
	}
	if b := pop(t, s, bare); b.HasKEM || b.HasOneTime {
		t.Fatalf("bare bundle = %+v, want only the signed record", b)
	}
}

func testPrekeyLimit(t *testing.T, c Config) {
	s := open(t, c)
	ctx := context.Background()
	mb := mailbox(16)
	if err := s.PutPrekeys(ctx, mb, relay.PrekeyUpload{Signed: []byte("s"), OneTime: []relay.Prekey{pk(1), pk(2)}}, 3); err != nil {
		t.Fatal(err)
	}
	// Replacing ids already held does not count against the limit.
	if err := s.PutPrekeys(ctx, mb, relay.PrekeyUpload{OneTime: []relay.Prekey{pk(1), pk(2), pk(3)}, KEM: []relay.Prekey{pk(1), pk(2), pk(3)}}, 3); err != nil {
		t.Fatalf("upload up to the limit: %v", err)
	}
	err := s.PutPrekeys(ctx, mb, relay.PrekeyUpload{Signed: []byte("s2"), KEM: []relay.Prekey{pk(4)}}, 3)
	if !errors.Is(err, relay.ErrQuota) {
		t.Fatalf("upload past the limit: got %v, want ErrQuota", err)
	}
	if b := pop(t, s, mb); string(b.Signed) != "s" {
		t.Fatalf("a refused upload changed the signed record to %q", b.Signed)
	}
}

func testPopWithoutSigned(t *testing.T, c Config) {
	s := open(t, c)
	ctx := context.Background()
	mb := mailbox(17)
	if err := s.PutPrekeys(ctx, mb, relay.PrekeyUpload{OneTime: []relay.Prekey{pk(1)}, KEM: []relay.Prekey{pk(1)}}, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := s.PopBundle(ctx, mb); !errors.Is(err, relay.ErrNotFound) {
		t.Fatalf("PopBundle without a signed record: got %v, want ErrNotFound", err)
	}
	if o, k, err := s.PrekeyCounts(ctx, mb); err != nil || o != 1 || k != 1 {
		t.Fatalf("a failed PopBundle removed prekeys: counts (%d, %d, %v), want (1, 1, nil)", o, k, err)
	}
}

func testConcurrentPops(t *testing.T, c Config) {
	s := open(t, c)
	ctx := context.Background()
	mb := mailbox(18)
	const keys, workers = 200, 16
	up := relay.PrekeyUpload{Signed: []byte("s"), LastResort: []byte("lr")}
	for i := range uint32(keys) {
		up.OneTime = append(up.OneTime, pk(i))
		up.KEM = append(up.KEM, pk(i+1000))
	}
	if err := s.PutPrekeys(ctx, mb, up, 0); err != nil {
		t.Fatal(err)
	}
	var (
		mu      sync.Mutex
		oneSeen = map[uint32]int{}
		kemSeen = map[uint32]int{}
		wg      sync.WaitGroup
		stores  = peers(t, c, s)
	)
	for w := range workers {
		wg.Go(func() {
			for {
				b, err := stores[w%len(stores)].PopBundle(ctx, mb)
				if err != nil {
					t.Errorf("PopBundle: %v", err)
					return
				}
				mu.Lock()
				if b.HasOneTime {
					oneSeen[b.OneTime.ID]++
				}
				if b.HasKEM && !b.KEMLastResort {
					kemSeen[b.KEM.ID]++
				}
				mu.Unlock()
				if !b.HasOneTime && b.KEMLastResort {
					return
				}
			}
		})
	}
	wg.Wait()
	for name, seen := range map[string]map[uint32]int{"one-time": oneSeen, "KEM": kemSeen} {
		if len(seen) != keys {
			t.Errorf("%s prekeys handed out: %d distinct, want %d", name, len(seen), keys)
		}
		for id, n := range seen {
			if n != 1 {
				t.Errorf("%s prekey %d handed out %d times", name, id, n)
			}
		}
	}
}

func testConcurrentPuts(t *testing.T, c Config) {
	s := open(t, c)
	ctx := context.Background()
	mb := mailbox(19)
	makeMailbox(t, s, mb)
	const workers, each = 8, 25
	var (
		mu     sync.Mutex
		got    = map[uint64][16]byte{}
		wg     sync.WaitGroup
		stores = peers(t, c, s)
	)
	for w := range workers {
		wg.Go(func() {
			var last uint64
			for i := range each {
				id := msgID(w*each + i)
				seq, dup, err := stores[w%len(stores)].Put(ctx, mb, relay.Envelope{ID: id, Received: t0, Data: id[:]}, relay.Quota{})
				if err != nil || dup {
					t.Errorf("Put = (%d, %v, %v)", seq, dup, err)
					return
				}
				if seq <= last {
					t.Errorf("one writer's seqs went %d then %d", last, seq)
				}
				last = seq
				mu.Lock()
				if _, ok := got[seq]; ok {
					t.Errorf("seq %d handed out twice", seq)
				}
				got[seq] = id
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	envs, err := s.Pending(ctx, mb, 0, workers*each+1)
	if err != nil {
		t.Fatal(err)
	}
	if len(envs) != workers*each {
		t.Fatalf("pending %d envelopes, want %d", len(envs), workers*each)
	}
	for i, e := range envs {
		if i > 0 && e.Seq <= envs[i-1].Seq {
			t.Fatalf("Pending out of order at %d: %d after %d", i, e.Seq, envs[i-1].Seq)
		}
		if got[e.Seq] != e.ID || !bytes.Equal(e.Data, e.ID[:]) {
			t.Fatalf("envelope seq %d has id %x, Put said %x", e.Seq, e.ID[:3], got[e.Seq])
		}
	}
}

func testConcurrentDuplicates(t *testing.T, c Config) {
	s := open(t, c)
	ctx := context.Background()
	mb := mailbox(20)
	makeMailbox(t, s, mb)
	const workers = 16
	seqCh := make(chan uint64, workers)
	var news sync.WaitGroup
	var mu sync.Mutex
	fresh := 0
	stores := peers(t, c, s)
	for w := range workers {
		news.Go(func() {
			seq, dup, err := stores[w%len(stores)].Put(ctx, mb, relay.Envelope{ID: msgID(7), Received: t0, Data: []byte("same")}, relay.Quota{})
			if err != nil {
				t.Errorf("Put: %v", err)
				return
			}
			if !dup {
				mu.Lock()
				fresh++
				mu.Unlock()
			}
			seqCh <- seq
		})
	}
	news.Wait()
	close(seqCh)
	first := <-seqCh
	for seq := range seqCh {
		if seq != first {
			t.Fatalf("concurrent Puts of one id got seqs %d and %d", first, seq)
		}
	}
	if fresh != 1 {
		t.Fatalf("%d concurrent Puts of one id reported new, want 1", fresh)
	}
	if envs := pending(t, s, mb, 0); len(envs) != 1 {
		t.Fatalf("pending %d envelopes, want 1", len(envs))
	}
}

func testAfterClose(t *testing.T, c Config) {
	s := c.Open(t)
	ctx := context.Background()
	mb := mailbox(21)
	makeMailbox(t, s, mb)
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	calls := map[string]error{}
	_, _, calls["Put"] = s.Put(ctx, mb, relay.Envelope{ID: msgID(1), Received: t0}, relay.Quota{})
	_, calls["Pending"] = s.Pending(ctx, mb, 0, 10)
	_, calls["Ack"] = s.Ack(ctx, mb, []uint64{1})
	_, calls["Expire"] = s.Expire(ctx, t0)
	_, calls["Usage"] = s.Usage(ctx, mb)
	calls["SetToken"] = s.SetToken(ctx, mb, [32]byte{})
	calls["AddToken"] = s.AddToken(ctx, mb, [32]byte{}, 0)
	calls["RemoveToken"] = s.RemoveToken(ctx, mb, [32]byte{})
	_, calls["HasToken"] = s.HasToken(ctx, mb, [32]byte{})
	calls["Touch"] = s.Touch(ctx, mb, t0)
	_, calls["DeleteIdle"] = s.DeleteIdle(ctx, t0)
	_, calls["Bundle"] = s.Bundle(ctx, mb)
	calls["PutPrekeys"] = s.PutPrekeys(ctx, mb, relay.PrekeyUpload{Signed: []byte("s")}, 0)
	_, calls["PopBundle"] = s.PopBundle(ctx, mb)
	_, _, calls["PrekeyCounts"] = s.PrekeyCounts(ctx, mb)
	for name, err := range calls {
		if !errors.Is(err, relay.ErrClosed) {
			t.Errorf("%s after Close: got %v, want ErrClosed", name, err)
		}
	}
}

// testAsyncPutOrder checks the AsyncPutter contract: Puts started one after
// another take effect in that order, whatever order they are waited in,
// and a duplicate in flight resolves to the first.
func testAsyncPutOrder(t *testing.T, c Config) {
	s := open(t, c)
	a := s.(relay.AsyncPutter)
	ctx := context.Background()
	mb := mailbox(23)
	makeMailbox(t, s, mb)
	const n = 100
	data := make([]byte, 7)
	var waits []func() (uint64, bool, error)
	for i := range n {
		copy(data, fmt.Sprintf("msg %03d", i))
		waits = append(waits, a.PutAsync(ctx, mb, relay.Envelope{ID: msgID(i % 90), Received: t0, Data: data}, relay.Quota{}))
		copy(data, "XXXXXXX") // the store must have copied what it needs
	}
	seqs := make([]uint64, n)
	for i := n - 1; i >= 0; i-- {
		seq, dup, err := waits[i]()
		if err != nil {
			t.Fatalf("PutAsync %d: %v", i, err)
		}
		if dup != (i >= 90) {
			t.Fatalf("PutAsync %d: dup = %v", i, dup)
		}
		seqs[i] = seq
	}
	for i := 1; i < 90; i++ {
		if seqs[i] <= seqs[i-1] {
			t.Fatalf("PutAsync seqs out of start order: %d then %d", seqs[i-1], seqs[i])
		}
	}
	for i := 90; i < n; i++ {
		if seqs[i] != seqs[i-90] {
			t.Fatalf("duplicate PutAsync %d got seq %d, the first got %d", i, seqs[i], seqs[i-90])
		}
	}
	for i, e := range pending(t, s, mb, 0) {
		if want := fmt.Sprintf("msg %03d", i); string(e.Data) != want {
			t.Fatalf("envelope %d holds %q, want %q", i, e.Data, want)
		}
	}
}

func testDurable(t *testing.T, c Config) {
	s := c.Open(t)
	ctx := context.Background()
	mb := mailbox(22)
	makeMailbox(t, s, mb)
	if err := s.SetToken(ctx, mb, [32]byte{9, 9}); err != nil {
		t.Fatal(err)
	}
	if err := s.AddToken(ctx, mb, [32]byte{8}, 0); err != nil {
		t.Fatal(err)
	}
	if err := s.Touch(ctx, mb, farDay); err != nil {
		t.Fatal(err)
	}
	a := put(t, s, mb, msgID(1), t0, []byte("a"))
	b := put(t, s, mb, msgID(2), t0.Add(time.Millisecond), []byte("b"))
	if _, err := s.Ack(ctx, mb, []uint64{a}); err != nil {
		t.Fatal(err)
	}
	up := relay.PrekeyUpload{Signed: []byte("s"), OneTime: []relay.Prekey{pk(1), pk(2)}, KEM: []relay.Prekey{pk(5)}, LastResort: []byte("lr")}
	if err := s.PutPrekeys(ctx, mb, up, 0); err != nil {
		t.Fatal(err)
	}
	popped := pop(t, s, mb)

	s = c.Reopen(t, s)
	t.Cleanup(func() { s.Close() })
	if !hasToken(t, s, mb, [32]byte{9, 9}) || !hasToken(t, s, mb, [32]byte{8}) || hasToken(t, s, mb, [32]byte{1}) {
		t.Fatal("tokens changed across a reopen")
	}
	if n, err := s.DeleteIdle(ctx, farDay); err != nil || n != 0 {
		t.Fatalf("DeleteIdle after reopen = (%d, %v): the last activity was lost", n, err)
	}
	envs := pending(t, s, mb, 0)
	if len(envs) != 1 || envs[0].Seq != b || string(envs[0].Data) != "b" || !envs[0].Received.Equal(t0.Add(time.Millisecond)) {
		t.Fatalf("pending after reopen = %+v, want only seq %d", envs, b)
	}
	if u := usage(t, s, mb); u != (relay.Usage{Count: 1, Bytes: 1}) {
		t.Fatalf("Usage after reopen = %+v, want {1 1}", u)
	}
	if seq, dup, err := s.Put(ctx, mb, relay.Envelope{ID: msgID(1), Received: t0, Data: []byte("a")}, relay.Quota{}); err != nil || !dup || seq != a && seq != 0 {
		t.Fatalf("retry of an acknowledged id after reopen = (%d, %v, %v), want (%d, true, nil)", seq, dup, err, a)
	}
	if c := put(t, s, mb, msgID(3), t0, []byte("c")); c <= b {
		t.Fatalf("seq %d after reopen, want above %d", c, b)
	}
	next := pop(t, s, mb)
	if !next.HasOneTime || next.OneTime.ID == popped.OneTime.ID {
		t.Fatalf("after reopen the pool handed out %+v again (popped before: %+v)", next.OneTime, popped.OneTime)
	}
	if !next.KEMLastResort || string(next.KEM.Data) != "lr" {
		t.Fatalf("after reopen KEM = %+v, want the last-resort key", next.KEM)
	}
}
