package ferry_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ferry-im/ferry"
	"github.com/ferry-im/ferry/relay"
)

// slowPending is a relay store whose Pending reads are slow when slow is
// set, as on a busy disk: the relay then pushes a backlog in pages with
// pauses between them.
type slowPending struct {
	relay.Store
	slow  *atomic.Bool
	delay time.Duration
}

func (s slowPending) Pending(ctx context.Context, mb [16]byte, after uint64, limit int) ([]relay.Envelope, error) {
	if s.slow.Load() {
		time.Sleep(s.delay)
	}
	return s.Store.Pending(ctx, mb, after, limit)
}

// TestDrainGetsWholeBacklog checks that one Sync without Wait (what
// `ferry read` runs) stores every waiting message, however slowly the relay
// reads its store: the drain ends at the relay's answer to Subscribe,
// which follows the backlog (docs/protocol.md section 6.4), not after a
// quiet spell.
func TestDrainGetsWholeBacklog(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	var slow atomic.Bool
	alice, bob := relayPair(t, "", func(st relay.Store) relay.Store {
		// Longer than a page takes to store, and longer than the quiet
		// spells after which a drain once gave up.
		return slowPending{Store: st, slow: &slow, delay: 400 * time.Millisecond}
	})

	const n = 500 // about 8 of the relay's store pages
	texts := make([]string, n)
	for i := range texts {
		texts[i] = "message " + string(rune('a'+i%26))
	}
	if _, err := bob.SendMany(ctx, "alice", texts); err != nil {
		t.Fatal(err)
	}
	slow.Store(true)
	if err := alice.Sync(ctx, ferry.SyncOptions{}); err != nil {
		t.Fatal(err)
	}
	got, err := alice.Messages(ctx, ferry.Query{Unread: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != n {
		t.Fatalf("one drain stored %d of the %d waiting messages", len(got), n)
	}
}
