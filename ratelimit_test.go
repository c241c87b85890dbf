package ferry

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"

	"github.com/ferry-im/ferry/internal/clienttest"
	"github.com/ferry-im/ferry/relay"
)

// logRecorder is a slog handler that keeps the messages logged.
type logRecorder struct {
	mu   sync.Mutex // mu protects msgs
	msgs []string
}

func (r *logRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (r *logRecorder) WithAttrs([]slog.Attr) slog.Handler       { return r }
func (r *logRecorder) WithGroup(string) slog.Handler            { return r }
func (r *logRecorder) Handle(_ context.Context, rec slog.Record) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.msgs = append(r.msgs, rec.Message)
	return nil
}

func (r *logRecorder) has(sub string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, m := range r.msgs {
		if strings.Contains(m, sub) {
			return true
		}
	}
	return false
}

// TestSyncRateLimited: a relay that answers a Subscribe with a rate
// limit is asked again after a pause, on the same connection: the
// draining Sync gets what waits and returns nil (ferry read exited 1).
func TestSyncRateLimited(t *testing.T) {
	w := &world{Harness: clienttest.New(t)}
	// One Subscribe per second per key, no burst: two Syncs in a row
	// run into the limit.
	w.relay = w.StartRelay(clienttest.RelayConfig{Limits: relay.Limits{SubscribeRate: 1, SubscribeBurst: 1}})
	rec := &logRecorder{}
	cfg := w.config(t, "alice")
	cfg.Logger = slog.New(rec)
	alice, err := Init(context.Background(), cfg, w.relay.Link.String(), "alice")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { alice.Close() })
	bob := w.client(t, "bob", nil)
	introduce(t, alice, bob)
	syncNow(t, bob)
	for i, text := range []string{"one", "two", "three"} {
		send(t, bob, "alice", text)
		syncNow(t, alice)
		ms := unread(t, alice)
		if len(ms) == 0 || ms[len(ms)-1].Text() != text {
			t.Fatalf("alice after sync %d reads %d messages, want %q last", i+1, len(ms), text)
		}
	}
	if !rec.has("slow down") {
		t.Errorf("alice's Syncs never met the rate limit; the test proves nothing")
	}
}
