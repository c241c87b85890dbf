// Package outbox delivers the envelopes queued in the local store
// (docs/client.md section 4.1): grouped by recipient mailbox, each group
// on its own connection authenticated with a throwaway key, in queue
// order, pipelined; an envelope leaves the outbox only once the relay has
// answered SendOK (it is durable there) or refused it for good. One flush
// runs at a time per profile, across processes too.
//
// It is not where envelopes are made (account.Seal queues them) and it
// never re-encrypts: a retry sends the same bytes with the same id.
package outbox

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ferry-im/ferry/channel"
	"github.com/ferry-im/ferry/internal/account"
	"github.com/ferry-im/ferry/internal/localstore"
	"github.com/ferry-im/ferry/internal/relayclient"
	"github.com/ferry-im/ferry/link"
	"github.com/ferry-im/ferry/wire"
)

// Tunables.
const (
	sendWindow    = 256         // Sends in flight per connection
	anonIdle      = time.Minute // a kept connection unused this long is closed
	perConnection = 768         // envelopes per throwaway key (below the relay's burst)
	busyRetries   = 4           // retries of a busy relay
	busyBackoff   = 250 * time.Millisecond
)

// Outbox flushes one profile's outbox. Its methods are safe for
// concurrent use.
type Outbox struct {
	a *account.Account

	mu   sync.Mutex       // mu serialises flushes and protects anon
	anon map[string]*anon // kept anonymous connections by relay and mailbox

	upMu sync.Mutex // upMu serialises this process's uploads

	receiptsDue atomic.Int64 // unix ms of the next batch of receipts, as the last flush saw it; 0 none
}

// ReceiptsDue returns when the next batch of receipts is due, as the last
// flush of this process saw it (zero if none): a long-running Sync
// flushes again then.
func (o *Outbox) ReceiptsDue() time.Time {
	if ms := o.receiptsDue.Load(); ms != 0 {
		return time.UnixMilli(ms)
	}
	return time.Time{}
}

// New returns the outbox of a.
func New(a *account.Account) *Outbox { return &Outbox{a: a} }

// Close closes the kept connections.
func (o *Outbox) Close() {
	o.mu.Lock()
	defer o.mu.Unlock()
	for key := range o.anon {
		o.drop(key)
	}
}

// Result says what a flush achieved.
type Result struct {
	// Sent holds the ids of the envelopes the relays acknowledged.
	Sent map[[16]byte]bool
	// Unreachable is the error of a relay that could not be reached (the
	// first one), or nil.
	Unreachable error
	// Left is how many envelopes are still queued.
	Left int
	// Failed holds the envelopes a relay refused for good (denied, too
	// large, bad request), with the relay's reason; their messages are
	// now Failed.
	Failed map[[16]byte]string
	// Notices are the notices the flush stored: one per conversation
	// whose messages a relay refused for good.
	Notices []Notice
	// ReceiptsDue is when the next batch of receipts still waiting for
	// its delay is due (zero if none): flush again then.
	ReceiptsDue time.Time
}

// Notice is a notice the flush stored, with its conversation's name.
type Notice struct {
	*localstore.Message
	Conversation string
}

// group is the envelopes for one mailbox, in queue order.
type group struct {
	key     string
	name    string // the contact's name, "" for a destination
	relay   string
	mailbox [16]byte
	token   [32]byte
	queue   []*localstore.Outgoing
}

// Flush delivers the outbox. It returns an error only for a local failure
// or ctx; relays that cannot be reached are reported in the Result.
func (o *Outbox) Flush(ctx context.Context) (Result, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	res := Result{Sent: make(map[[16]byte]bool), Failed: make(map[[16]byte]string)}
	unlock, err := lockFlush(o.a.Home)
	if err != nil {
		return res, fmt.Errorf("lock outbox: %w", err)
	}
	defer unlock()
	for key, a := range o.anon {
		if time.Since(a.last) >= anonIdle {
			o.drop(key)
		}
	}
	// Receipts whose batch is due join the queue now.
	if err := o.a.Store.Update(ctx, func(tx *localstore.Tx) (err error) {
		_, res.ReceiptsDue, err = o.a.SealDueReceipts(tx)
		return err
	}); err != nil {
		return res, err
	}
	var due int64
	if !res.ReceiptsDue.IsZero() {
		due = res.ReceiptsDue.UnixMilli()
	}
	o.receiptsDue.Store(due)
	groups, fanouts, err := o.groups(ctx)
	if err != nil {
		return res, err
	}
	for _, g := range groups {
		err := o.flushGroupRetrying(ctx, g, &res)
		if err == nil {
			continue
		}
		if ctx.Err() != nil {
			return res, ctx.Err()
		}
		if !errors.Is(err, relayclient.ErrUnreachable) {
			return res, err
		}
		o.a.Log.Info("relay unreachable; outbox kept", "queued", len(g.queue), "err", err)
		if res.Unreachable == nil {
			res.Unreachable = err
		}
	}
	if err := o.flushFanouts(ctx, fanouts, &res); err != nil {
		return res, err
	}
	err = o.a.Store.Update(ctx, func(tx *localstore.Tx) (err error) { res.Left, err = tx.OutboxLen(); return })
	return res, err
}

// groups reads the outbox and groups it by mailbox (one contact, or one
// destination), keeping queue order within each. Each group goes on its
// own connection: envelopes for two recipients on one connection would
// tell the relay that they have a common correspondent.
func (o *Outbox) groups(ctx context.Context) ([]*group, []*localstore.Outgoing, error) {
	var queue []*localstore.Outgoing
	contacts := make(map[int64]*localstore.Contact)
	err := o.a.Store.Update(ctx, func(tx *localstore.Tx) error {
		var err error
		if queue, err = tx.Outbox(0); err != nil {
			return err
		}
		ks, err := tx.Contacts()
		for _, k := range ks {
			contacts[k.ID] = k
		}
		return err
	})
	if err != nil {
		return nil, nil, err
	}
	var out []*group
	var fanouts []*localstore.Outgoing
	byKey := make(map[string]*group)
	var gone [][16]byte
	for _, q := range queue {
		g := &group{}
		switch k := contacts[q.Contact]; {
		case q.Dest != nil && len(q.Dest.Fanout) > 0:
			fanouts = append(fanouts, q)
			continue
		case q.Dest != nil:
			g.relay, g.mailbox, g.token = q.Dest.Relay, q.Dest.Mailbox, q.Dest.Token
		case k != nil:
			g.relay, g.mailbox, g.token, g.name = k.RelayLink, [16]byte(k.Mailbox), [32]byte(k.Token), k.Name
		default:
			gone = append(gone, q.ID) // the contact is gone; nothing can deliver this
			continue
		}
		g.key = g.relay + "|" + string(g.mailbox[:])
		if have := byKey[g.key]; have != nil {
			g = have
		} else {
			byKey[g.key] = g
			out = append(out, g)
		}
		g.queue = append(g.queue, q)
	}
	if len(gone) > 0 {
		err = o.a.Store.Update(ctx, func(tx *localstore.Tx) error {
			for _, id := range gone {
				if _, err := tx.Dequeue(id); err != nil {
					return err
				}
			}
			return nil
		})
	}
	return out, fanouts, err
}

// flushGroupRetrying flushes g, retrying a busy relay a few times with
// backoff before leaving the rest queued.
func (o *Outbox) flushGroupRetrying(ctx context.Context, g *group, res *Result) error {
	sent := res.Sent
	err := o.flushGroup(ctx, g, g.queue, res)
	if errors.Is(err, relayclient.ErrStalled) {
		// The transport stopped carrying; the next dial races the
		// others first.
		err = o.flushGroup(ctx, g, unsent(g.queue, sent), res)
	}
	for i := 0; errors.Is(err, relayclient.ErrBusy) && i < busyRetries; i++ {
		select {
		case <-time.After(busyBackoff << i):
		case <-ctx.Done():
			return ctx.Err()
		}
		err = o.flushGroup(ctx, g, unsent(g.queue, sent), res)
	}
	return err
}

func unsent(queue []*localstore.Outgoing, sent map[[16]byte]bool) []*localstore.Outgoing {
	var rest []*localstore.Outgoing
	for _, q := range queue {
		if !sent[q.ID] {
			rest = append(rest, q)
		}
	}
	return rest
}

// flushGroup sends queue to g's mailbox. Each connection carries at most
// perConnection envelopes and is then replaced by one with a new
// throwaway key: the relay rate-limits per key, and a limit hit in the
// middle of a pipelined window could let a later envelope in before an
// earlier one.
func (o *Outbox) flushGroup(ctx context.Context, g *group, queue []*localstore.Outgoing, res *Result) error {
	r, err := link.ParseRelay(g.relay)
	if err != nil {
		return fmt.Errorf("recipient's relay link: %w", err)
	}
	retried := false
	for len(queue) > 0 {
		a, reused, err := o.conn(ctx, g.key, r)
		if err != nil {
			return err
		}
		n := min(len(queue), perConnection-a.used)
		a.used += n
		a.last = time.Now()
		if err := o.send(ctx, a.cn, g, queue[:n], res); err != nil {
			o.drop(g.key)
			if !reused || retried || !errors.Is(err, relayclient.ErrUnreachable) || errors.Is(err, relayclient.ErrBusy) || ctx.Err() != nil {
				return err
			}
			// A kept connection may have died unnoticed (a relay
			// restart): try once more on a fresh one, skipping what the
			// relay already acknowledged.
			retried = true
			queue = unsent(queue, res.Sent)
			continue
		}
		queue = queue[n:]
	}
	return nil
}

// anon is a kept anonymous connection to one mailbox's relay.
type anon struct {
	cn   *relayclient.Conn
	used int       // envelopes sent on it
	last time.Time // last use
}

// conn returns the kept connection for key, with reused set, or dials one
// with a new throwaway key if there is none, it died, it has carried
// perConnection envelopes or it was idle for anonIdle. Keeping it spares
// a handshake per message in long-running clients (the relay limits
// handshakes per address). o.mu is held.
func (o *Outbox) conn(ctx context.Context, key string, r link.Relay) (a *anon, reused bool, err error) {
	if a := o.anon[key]; a != nil {
		if a.cn.Err() == nil && a.used < perConnection && time.Since(a.last) < anonIdle {
			return a, true, nil
		}
		o.drop(key)
	}
	kp, err := channel.GenerateKeyPair(o.a.Rand)
	if err != nil {
		return nil, false, err
	}
	cn, err := o.a.Dialer.Dial(ctx, r, kp)
	if err != nil {
		return nil, false, err
	}
	if o.anon == nil {
		o.anon = make(map[string]*anon)
	}
	a = &anon{cn: cn, last: time.Now()}
	o.anon[key] = a
	return a, false, nil
}

// drop closes and forgets the kept connection for key. o.mu is held.
func (o *Outbox) drop(key string) {
	if a := o.anon[key]; a != nil {
		a.cn.Close()
		delete(o.anon, key)
	}
}

// send sends queue on cn, a window at a time, committing each window's
// answers before the next.
func (o *Outbox) send(ctx context.Context, cn *relayclient.Conn, g *group, queue []*localstore.Outgoing, res *Result) error {
	for len(queue) > 0 {
		win := queue[:min(len(queue), sendWindow)]
		queue = queue[len(win):]
		batch := make([]wire.Send, len(win))
		for i, q := range win {
			batch[i] = wire.Send{ID: q.ID, To: g.mailbox, Token: g.token, Envelope: q.Envelope}
		}
		answers, serr := cn.SendBatch(ctx, batch)
		if err := o.commit(ctx, g, answers, res); err != nil {
			return err
		}
		if serr != nil {
			return serr
		}
	}
	return nil
}

// commit removes acknowledged and refused envelopes from the outbox and
// advances their messages' states, in one transaction. A message refused
// for good is Failed, and a notice in its conversation says why (one per
// conversation and window), so the user is not left believing it queued.
func (o *Outbox) commit(ctx context.Context, g *group, answers []relayclient.SendResult, res *Result) error {
	if len(answers) == 0 {
		return nil
	}
	var notices []Notice
	err := o.a.Store.Update(ctx, func(tx *localstore.Tx) error {
		notices = notices[:0]
		failed := make(map[int64][]string) // conversation -> reasons, in order
		var convs []int64
		for _, a := range answers {
			if _, err := tx.Dequeue(a.ID); err != nil {
				return err
			}
			st := localstore.Sent
			if a.Code != 0 {
				st = localstore.Failed
			}
			moved, err := tx.AdvanceState(a.ID, 0, true, st)
			if err != nil {
				return err
			}
			if !moved || a.Code == 0 {
				continue
			}
			m, err := tx.Message(a.ID)
			if err != nil {
				return err
			}
			if failed[m.Conversation] == nil {
				convs = append(convs, m.Conversation)
			}
			failed[m.Conversation] = append(failed[m.Conversation], sendRefusal(a))
		}
		for _, conv := range convs {
			id, err := o.a.NewID()
			if err != nil {
				return err
			}
			m, err := tx.InsertNotice(id, conv, o.a.Now(), localstore.NoticeUndelivered, undelivered(g.name, failed[conv]))
			if err != nil {
				return err
			}
			notices = append(notices, Notice{Message: m, Conversation: g.name})
		}
		return nil
	})
	if err != nil {
		return err
	}
	res.Notices = append(res.Notices, notices...)
	for _, a := range answers {
		if a.Code == 0 {
			res.Sent[a.ID] = true
		} else {
			res.Failed[a.ID] = sendRefusal(a)
		}
	}
	return nil
}

// sendRefusal says in a few words why a relay refused an envelope for good.
func sendRefusal(a relayclient.SendResult) string {
	switch a.Code {
	case wire.CodeDenied:
		return "the relay did not accept the delivery token (the contact may have removed you, or their relay lost their mailbox)"
	case wire.CodeTooLarge:
		return "the message is too large for the relay"
	case wire.CodeNotFound:
		return "the relay has no such mailbox"
	}
	return fmt.Sprintf("the relay said %s (%s)", a.Code, a.Msg)
}

// undelivered is the text of the notice for messages refused for good.
func undelivered(name string, why []string) string {
	to := "this conversation"
	if name != "" {
		to = name
	}
	n := "a message"
	if len(why) > 1 {
		n = fmt.Sprintf("%d messages", len(why))
	}
	return fmt.Sprintf("%s to %s failed and will not be sent again: %s.", capitalize(n), to, why[0])
}

func capitalize(s string) string { return strings.ToUpper(s[:1]) + s[1:] }
