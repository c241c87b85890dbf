package relay_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ferry-im/ferry/relay"
	"github.com/ferry-im/ferry/relay/memstore"
	"github.com/ferry-im/ferry/wire"
)

// sizedStore is a memstore that reports a disk use the test sets.
type sizedStore struct {
	*memstore.Store
	used atomic.Int64
}

func (s *sizedStore) DiskUsage(context.Context) (relay.DiskUsage, error) {
	return relay.DiskUsage{Used: s.used.Load(), Free: -1}, nil
}

// TestDiskBudget checks that once the store reaches Budgets.Disk the relay
// refuses new envelopes and mailboxes with Unavailable, keeps taking Acks,
// and takes writes again once space is freed. Before the fix nothing
// stopped a relay from filling its disk (2.5 GB in 20 s).
func TestDiskBudget(t *testing.T) {
	t.Parallel()
	store := &sizedStore{Store: memstore.New()}
	e := newEnv(t, func(c *relay.Config) {
		c.Store = store
		c.Budgets.Disk = 10_000
		c.Budgets.DiskCheckInterval = time.Hour // the test checks by hand
	})
	bob := e.dial(mustKey(t), nil)
	bob.register(token(1))
	anon := e.dial(mustKey(t), nil)
	seq := func() uint64 { return expect[wire.Deliver](bob).Seq }
	mustSendOK(t, anon.sendTo(bob.mailbox, token(1), id(1), []byte("fits")))

	store.used.Store(9_000)
	e.srv.CheckDisk(context.Background())
	// 1,000 bytes of room are counted between checks.
	wantSendErr(t, anon.sendTo(bob.mailbox, token(1), id(2), make([]byte, 1_500)), wire.CodeUnavailable)
	mustSendOK(t, anon.sendTo(bob.mailbox, token(1), id(3), make([]byte, 1_000)))
	wantSendErr(t, anon.sendTo(bob.mailbox, token(1), id(4), make([]byte, 1)), wire.CodeUnavailable)
	carol := e.dial(mustKey(t), nil)
	carol.send(wire.SetToken{ReqID: 1, Token: token(2)})
	if er := expect[wire.Error](carol); er.Code != wire.CodeUnavailable || er.ReqID != 1 {
		t.Fatalf("SetToken on a full relay: got %+v, want Unavailable", er)
	}
	// Acks still go through: they free space.
	bob.send(wire.Subscribe{ReqID: 2})
	first, second := seq(), seq()
	expect[wire.OK](bob)
	bob.send(wire.Ack{Seqs: []uint64{first, second}})
	bob.quiet()
	if u, _ := e.store.Usage(context.Background(), bob.mailbox); u.Count != 0 {
		t.Fatalf("after the Ack on a full relay %d envelopes remain, want 0", u.Count)
	}
	if got := e.metric("ferry_relay_budget_used", "disk_full"); got != 1 {
		t.Errorf("ferry_relay_budget_used{disk_full} = %v, want 1", got)
	}
	store.used.Store(1_000)
	e.srv.CheckDisk(context.Background())
	mustSendOK(t, anon.sendTo(bob.mailbox, token(1), id(5), make([]byte, 200)))
}

// TestDiskReserveForLightMailboxes checks that the last DiskReserve bytes
// of the disk budget go to mailboxes that hold little: a flooder who
// filled its own mailbox is refused there while a user who reads their
// mail still gets text, new mailboxes wait, and the metrics say so.
// Before the reserve a disk filled by one sender refused everyone's text
// (issue 13's disk-fill attack).
func TestDiskReserveForLightMailboxes(t *testing.T) {
	t.Parallel()
	store := &sizedStore{Store: memstore.New()}
	e := newEnv(t, func(c *relay.Config) {
		c.Store = store
		c.Budgets.Disk = 64 << 20
		c.Budgets.DiskReserve = 4 << 20
		c.Budgets.DiskCheckInterval = time.Hour // the test checks by hand
	})
	flooder := e.dial(mustKey(t), nil)
	flooder.register(token(1))
	bob := e.dial(mustKey(t), nil)
	bob.register(token(2))
	anon := e.dial(mustKey(t), nil)
	big := make([]byte, wire.MaxEnvelope)
	for i := range relay.ReserveMailboxBytes/wire.MaxEnvelope + 1 {
		mustSendOK(t, anon.sendTo(flooder.mailbox, token(1), id(100+i), big))
	}

	store.used.Store(61 << 20) // 3 MiB of room: within the reserve
	e.srv.CheckDisk(context.Background())
	wantSendErr(t, anon.sendTo(flooder.mailbox, token(1), id(1), []byte("more")), wire.CodeUnavailable)
	mustSendOK(t, anon.sendTo(bob.mailbox, token(2), id(2), []byte("hello bob")))
	carol := e.dial(mustKey(t), nil)
	carol.send(wire.SetToken{ReqID: 1, Token: token(3)})
	if er := expect[wire.Error](carol); er.Code != wire.CodeUnavailable || er.ReqID != 1 {
		t.Fatalf("SetToken within the reserve: got %+v, want Unavailable", er)
	}
	if r := e.metric("ferry_relay_budget_limit", "disk_reserve"); r != 4<<20 {
		t.Errorf("ferry_relay_budget_limit{disk_reserve} = %v, want %v", r, 4<<20)
	}
	if low, full := e.metric("ferry_relay_budget_used", "disk_low"), e.metric("ferry_relay_budget_used", "disk_full"); low != 1 || full != 0 {
		t.Errorf("ferry_relay_budget_used{disk_low, disk_full} = %v, %v, want 1, 0", low, full)
	}

	store.used.Store(64 << 20) // the reserve spent too
	e.srv.CheckDisk(context.Background())
	wantSendErr(t, anon.sendTo(bob.mailbox, token(2), id(3), []byte("no room at all")), wire.CodeUnavailable)
	if full := e.metric("ferry_relay_budget_used", "disk_full"); full != 1 {
		t.Errorf("ferry_relay_budget_used{disk_full} = %v with no room, want 1", full)
	}
}

// TestIdleMailboxesDeleted checks that a mailbox whose owner has not
// connected for MailboxIdle is deleted with its envelopes, and that one
// whose owner keeps subscribing is kept. Before the fix mailboxes and
// prekeys were never deleted.
func TestIdleMailboxesDeleted(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(c *relay.Config) { c.Limits.TTL = -1 })
	gone := e.dial(mustKey(t), nil)
	gone.register(token(1))
	gone.send(wire.PutPrekeys{ReqID: 5, Signed: []byte("s"), OneTime: []wire.Prekey{{ID: 1, Data: []byte("k")}}})
	expect[wire.OK](gone)
	stays := e.dial(mustKey(t), nil)
	stays.register(token(2))
	anon := e.dial(mustKey(t), nil)
	mustSendOK(t, anon.sendTo(gone.mailbox, token(1), id(1), []byte("never read")))

	e.clock.Advance(60 * 24 * time.Hour)
	stays.subscribe() // the owner comes back on day 60
	e.clock.Advance(31 * 24 * time.Hour)
	if err := e.srv.Sweep(context.Background()); err != nil {
		t.Fatal(err)
	}
	wantSendErr(t, anon.sendTo(gone.mailbox, token(1), id(2), []byte("x")), wire.CodeDenied)
	if u, _ := e.store.Usage(context.Background(), gone.mailbox); u.Count != 0 {
		t.Fatalf("the deleted mailbox still holds %d envelopes", u.Count)
	}
	if n, k, _ := e.store.PrekeyCounts(context.Background(), gone.mailbox); n+k != 0 {
		t.Fatal("the deleted mailbox's prekeys were kept")
	}
	mustSendOK(t, anon.sendTo(stays.mailbox, token(2), id(3), []byte("x")))
	if got := e.metric("ferry_relay_idle_mailboxes_deleted_total", ""); got != 1 {
		t.Errorf("ferry_relay_idle_mailboxes_deleted_total = %v, want 1", got)
	}
}

// TestBundleRatePerMailbox checks that past a mailbox's one-time rate a
// GetBundle gets the signed and last-resort prekeys only and consumes
// nothing. Before the fix 31 GetBundle calls drained the pools.
func TestBundleRatePerMailbox(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(c *relay.Config) { c.Limits.BundleBurst = 2 })
	bob := e.dial(mustKey(t), nil)
	bob.register(token(1))
	var keys []wire.Prekey
	for i := range uint32(5) {
		keys = append(keys, wire.Prekey{ID: i + 1, Data: []byte("otk")})
	}
	bob.send(wire.PutPrekeys{ReqID: 5, Signed: []byte("s"), OneTime: keys, KEM: keys, LastResort: []byte("lr")})
	expect[wire.OK](bob)
	anon := e.dial(mustKey(t), nil)
	for i := range 4 {
		anon.send(wire.GetBundle{ReqID: uint32(i), Mailbox: bob.mailbox, Token: token(1)})
		b := expect[wire.Bundle](anon)
		if consumed := b.OneTimeID != 0; consumed != (i < 2) {
			t.Fatalf("GetBundle %d: one-time prekey %d, want one only for the first 2", i, b.OneTimeID)
		}
		if i >= 2 && (!b.KEMLastResort || string(b.KEM) != "lr" || string(b.Signed) != "s") {
			t.Fatalf("GetBundle %d past the rate = %+v, want signed and last resort", i, b)
		}
	}
	bob.send(wire.GetPrekeyCount{ReqID: 9})
	if c := expect[wire.PrekeyCount](bob); c != (wire.PrekeyCount{ReqID: 9, OneTime: 3, KEM: 3}) {
		t.Fatalf("PrekeyCount = %+v, want 3 and 3 left", c)
	}
	if got := e.metric("ferry_relay_bundles_total", "last_resort"); got != 2 {
		t.Errorf("ferry_relay_bundles_total{last_resort} = %v, want 2", got)
	}
}

// TestTokenPerContact checks AddToken and RemoveToken: each token works
// on its own, revoking one leaves the others, SetToken replaces all, and
// the per-mailbox limit holds.
func TestTokenPerContact(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(c *relay.Config) { c.Limits.Tokens = 2 })
	bob := e.dial(mustKey(t), nil)
	anon := e.dial(mustKey(t), nil)
	for i, tok := range [][32]byte{token(1), token(2)} {
		bob.send(wire.AddToken{ReqID: uint32(i), Token: tok})
		expect[wire.OK](bob)
	}
	bob.send(wire.AddToken{ReqID: 7, Token: token(3)})
	if er := expect[wire.Error](bob); er.Code != wire.CodeQuota || er.ReqID != 7 {
		t.Fatalf("a third token with a limit of 2: got %+v, want Quota", er)
	}
	mustSendOK(t, anon.sendTo(bob.mailbox, token(1), id(1), []byte("x")))
	mustSendOK(t, anon.sendTo(bob.mailbox, token(2), id(2), []byte("x")))
	bob.send(wire.RemoveToken{ReqID: 8, Token: token(1)})
	expect[wire.OK](bob)
	wantSendErr(t, anon.sendTo(bob.mailbox, token(1), id(3), []byte("x")), wire.CodeDenied)
	mustSendOK(t, anon.sendTo(bob.mailbox, token(2), id(4), []byte("x")))
	bob.send(wire.SetToken{ReqID: 9, Token: token(4)})
	expect[wire.OK](bob)
	wantSendErr(t, anon.sendTo(bob.mailbox, token(2), id(5), []byte("x")), wire.CodeDenied)
	mustSendOK(t, anon.sendTo(bob.mailbox, token(4), id(6), []byte("x")))
	bob.send(wire.AddToken{ReqID: 10})
	if er := expect[wire.Error](bob); er.Code != wire.CodeBadRequest {
		t.Fatalf("AddToken of the zero token: got %+v, want BadRequest", er)
	}
}

// TestReceivedToTheMinute checks that the relay keeps and reports the
// time an envelope came to the minute only.
func TestReceivedToTheMinute(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	e.clock.Advance(42*time.Second + 123*time.Millisecond)
	bob := e.dial(mustKey(t), nil)
	bob.register(token(1))
	anon := e.dial(mustKey(t), nil)
	mustSendOK(t, anon.sendTo(bob.mailbox, token(1), id(1), []byte("x")))
	d := bob.subscribe()
	if len(d) != 1 {
		t.Fatalf("%d envelopes, want 1", len(d))
	}
	want := e.clock.Now().Truncate(time.Minute).UnixMilli()
	if d[0].Received != want {
		t.Fatalf("Received = %d, want %d (the minute)", d[0].Received, want)
	}
}

// TestRuntimeMetrics checks that the registry serves the Go runtime's and
// the process's metrics and every budget's limit and use.
func TestRuntimeMetrics(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(c *relay.Config) { c.Budgets.Memory = 64 << 20 })
	families, err := e.srv.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	have := map[string]bool{}
	for _, f := range families {
		have[f.GetName()] = true
	}
	for _, name := range []string{"go_goroutines", "go_memstats_heap_inuse_bytes", "go_gc_duration_seconds",
		"process_resident_memory_bytes", "process_open_fds", "ferry_relay_budget_limit", "ferry_relay_budget_used"} {
		if !have[name] {
			t.Errorf("metric %s missing", name)
		}
	}
	if got := e.metric("ferry_relay_budget_limit", "frame_memory"); got != 16<<20 {
		t.Errorf("frame_memory limit = %v, want Memory/4 = %d", got, 16<<20)
	}
}

// TestPrekeyCountUnregistered checks that GetPrekeyCount answers NotFound
// for a mailbox without a signed prekey record (never registered, or
// deleted as idle), which is how an owner learns to register again.
func TestPrekeyCountUnregistered(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(c *relay.Config) { c.Limits.TTL = -1 })
	bob := e.dial(mustKey(t), nil)
	bob.send(wire.GetPrekeyCount{ReqID: 1})
	if got := expect[wire.Error](bob); got.ReqID != 1 || got.Code != wire.CodeNotFound {
		t.Fatalf("GetPrekeyCount before registering = %+v, want NotFound", got)
	}
	bob.register(token(1))
	bob.send(wire.PutPrekeys{ReqID: 2, Signed: []byte("s"), OneTime: []wire.Prekey{{ID: 1, Data: []byte("k")}}})
	expect[wire.OK](bob)
	bob.send(wire.GetPrekeyCount{ReqID: 3})
	if c := expect[wire.PrekeyCount](bob); c != (wire.PrekeyCount{ReqID: 3, OneTime: 1}) {
		t.Fatalf("PrekeyCount = %+v, want 1 one-time prekey", c)
	}
	e.clock.Advance(91 * 24 * time.Hour)
	if err := e.srv.Sweep(context.Background()); err != nil {
		t.Fatal(err)
	}
	bob.send(wire.GetPrekeyCount{ReqID: 4})
	if got := expect[wire.Error](bob); got.ReqID != 4 || got.Code != wire.CodeNotFound {
		t.Fatalf("GetPrekeyCount after the mailbox was deleted = %+v, want NotFound", got)
	}
}
