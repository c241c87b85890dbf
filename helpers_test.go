package ferry

import (
	"context"
	"encoding/base64"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/ferry-im/ferry/internal/clienttest"
	"github.com/ferry-im/ferry/internal/inbox"
	"github.com/ferry-im/ferry/internal/prekeys"
)

// world is one test's network, censor, clock and relay
// (internal/clienttest), with helpers to make clients on it.
type world struct {
	*clienttest.Harness
	relay *clienttest.Relay
}

func newWorld(t *testing.T) *world {
	h := clienttest.New(t)
	return &world{Harness: h, relay: h.StartRelay(clienttest.RelayConfig{})}
}

// config is a client configuration on the world's network and clock.
func (w *world) config(t *testing.T, name string) Config {
	// Receipts go out at the next flush, not after their random delay
	// (TestReceiptsBatchedAndDelayed checks the delay).
	return Config{Home: filepath.Join(t.TempDir(), name), Transports: w.Transports(), Now: w.Clock.Now,
		ImmediateReceipts: true}
}

// client makes a profile named name on relay r (the world's if nil).
func (w *world) client(t *testing.T, name string, r *clienttest.Relay) *Client {
	t.Helper()
	if r == nil {
		r = w.relay
	}
	c, err := Init(context.Background(), w.config(t, name), r.Link.String(), name)
	if err != nil {
		t.Fatalf("Init %s: %v", name, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// introduce has b accept an invite of a, and a sync to take it.
func introduce(t *testing.T, a, b *Client) {
	t.Helper()
	ctx := context.Background()
	inv, err := a.Invite(ctx)
	if err != nil {
		t.Fatal(err)
	}
	k, err := b.Accept(ctx, inv)
	if err != nil {
		t.Fatalf("Accept: %v", err)
	}
	if k.Name != a.Name() || k.Status != ContactPending {
		t.Fatalf("Accept: got %+v, want %s pending", k, a.Name())
	}
	var added []string
	if err := a.Sync(ctx, SyncOptions{OnContact: func(k Contact) { added = append(added, k.Name) }}); err != nil {
		t.Fatalf("%s Sync: %v", a.Name(), err)
	}
	if len(added) != 1 || added[0] != b.Name() {
		t.Fatalf("%s learned contacts %q, want [%s]", a.Name(), added, b.Name())
	}
}

// pair makes alice and bob contacts of each other on the world's relay.
func (w *world) pair(t *testing.T) (alice, bob *Client) {
	t.Helper()
	alice, bob = w.client(t, "alice", nil), w.client(t, "bob", nil)
	introduce(t, alice, bob)
	// alice was told of bob (a notice): she has read it.
	if err := alice.MarkShown(context.Background(), unread(t, alice)); err != nil {
		t.Fatal(err)
	}
	return alice, bob
}

// with replaces c's inbox options (the tunables tests shorten).
func (c *Client) with(o inbox.Options) *Client {
	c.in = inbox.New(c.a, c.ob, o)
	return c
}

// conv returns the id of c's conversation named name.
func conv(t *testing.T, c *Client, name string) ConversationID {
	t.Helper()
	return conversationOf(t, c, name)
}

// contactID returns the id of c's contact named name.
func contactID(t *testing.T, c *Client, name string) ContactID {
	t.Helper()
	k, err := c.FindContact(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	return k.ID
}

// send sends text from c to its conversation named to.
func send(t *testing.T, c *Client, to string, texts ...string) []*Message {
	t.Helper()
	ms, err := c.SendMany(context.Background(), conv(t, c, to), texts)
	if err != nil {
		t.Fatalf("%s sends to %s: %v", c.Name(), to, err)
	}
	return ms
}

// syncNow runs a draining Sync of c.
func syncNow(t *testing.T, c *Client) {
	t.Helper()
	if err := c.Sync(context.Background(), SyncOptions{}); err != nil {
		t.Fatalf("%s Sync: %v", c.Name(), err)
	}
}

// unread returns c's unread messages.
func unread(t *testing.T, c *Client) []*Message {
	t.Helper()
	ms, err := c.Messages(context.Background(), Query{Unread: true})
	if err != nil {
		t.Fatal(err)
	}
	return ms
}

// texts renders messages as "from:text" ("ferry:" for notices, "me:" for
// the user's own).
func texts(ms []*Message) []string {
	var out []string
	for _, m := range ms {
		from := m.From
		switch {
		case m.Outgoing:
			from = "me"
		case m.Kind == KindNotice:
			from = "ferry"
		}
		out = append(out, from+":"+m.Text())
	}
	return out
}

func show(ms []*Message) string { return fmt.Sprint(texts(ms)) }

func prekeysPolicy(initial, min int) prekeys.Policy {
	return prekeys.Policy{Initial: initial, Min: min}
}

func base64Decode(s string) ([]byte, error) { return base64.RawURLEncoding.DecodeString(s) }

// prekeysPolicyEvery is the default prekey policy asking the relay for
// its count at most every d.
func prekeysPolicyEvery(d time.Duration) prekeys.Policy {
	return prekeys.Policy{CountEvery: d}
}
