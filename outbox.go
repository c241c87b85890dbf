package ferry

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/ferry-im/ferry/channel"
	"github.com/ferry-im/ferry/internal/localstore"
	"github.com/ferry-im/ferry/link"
	"github.com/ferry-im/ferry/session"
	"github.com/ferry-im/ferry/wire"
)

// encryptTo encrypts content m for contact k with its session s, seals the
// result and queues the envelope in the outbox, all inside tx. The caller
// saves s (the contact's session state) in the same transaction.
func (c *Client) encryptTo(tx *localstore.Tx, k *localstore.Contact, s *session.Session, m *content) error {
	pt, err := m.marshal()
	if err != nil {
		return err
	}
	inner, err := s.Encrypt(pt, ratchetAD)
	if err != nil {
		return fmt.Errorf("encrypt message: %w", err)
	}
	env, err := session.Seal(c.rand, c.identity, session.PublicIdentity(k.Identity), contentTypeV1, inner)
	if err != nil {
		return fmt.Errorf("seal message: %w", err)
	}
	if len(env) > wire.MaxEnvelope {
		return fmt.Errorf("encrypt message: envelope of %d bytes: %w", len(env), wire.ErrTooLarge)
	}
	return tx.Enqueue(&localstore.Outgoing{ID: m.ID, Contact: k.ID, Created: c.now(), Envelope: env})
}

// loadSession restores a contact's session.
func (c *Client) loadSession(k *localstore.Contact) (*session.Session, error) {
	s := &session.Session{Rand: c.rand}
	if err := s.UnmarshalBinary(k.Session); err != nil {
		return nil, fmt.Errorf("load session with %s: %w", k.Name, err)
	}
	return s, nil
}

func saveSession(k *localstore.Contact, s *session.Session) error {
	b, err := s.MarshalBinary()
	if err != nil {
		return err
	}
	k.Session = b
	return nil
}

// flushResult says what a flush achieved.
type flushResult struct {
	sent        map[[16]byte]bool // envelopes the relays acknowledged
	unreachable bool              // some relay could not be reached
	left        int               // envelopes still queued
}

// flush delivers the outbox: envelopes go to their contact's relay in the
// order they were queued, on one connection per relay authenticated with a
// throwaway key (so the relay cannot link sender and recipient), pipelined
// up to sendWindow at a time. An envelope leaves the outbox only when the
// relay has answered SendOK (it is durable there) or refused it for good.
func (c *Client) flush(ctx context.Context) (flushResult, error) {
	c.flushMu.Lock()
	defer c.flushMu.Unlock()
	res := flushResult{sent: make(map[[16]byte]bool)}
	unlock, err := lockFlush(c.cfg.Home)
	if err != nil {
		return res, fmt.Errorf("lock outbox: %w", err)
	}
	defer unlock()
	// Close kept connections nobody used for anonIdle.
	for key, a := range c.anon {
		if time.Since(a.last) >= anonIdle {
			c.dropAnon(key)
		}
	}
	var queue []*localstore.Outgoing
	contacts := make(map[int64]*localstore.Contact)
	err = c.store.Update(ctx, func(tx *localstore.Tx) error {
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
	if err != nil || len(queue) == 0 {
		return res, err
	}
	// Group by contact (one mailbox on one relay), keeping queue order
	// within each. Each contact's envelopes go on their own anonymous
	// connection: envelopes for two recipients on one connection would
	// tell the relay that they have a common correspondent.
	var order []int64
	byContact := make(map[int64][]*localstore.Outgoing)
	for _, o := range queue {
		k := contacts[o.Contact]
		if k == nil {
			// The contact is gone; nothing can deliver this.
			c.store.Update(ctx, func(tx *localstore.Tx) error { _, err := tx.Dequeue(o.ID); return err })
			continue
		}
		if _, ok := byContact[k.ID]; !ok {
			order = append(order, k.ID)
		}
		byContact[k.ID] = append(byContact[k.ID], o)
	}
	for _, kid := range order {
		k := contacts[kid]
		err := c.flushContact(ctx, k, byContact[kid], res.sent)
		// A busy relay (rate limit, quota, storage trouble) is retried a
		// few times with backoff before the envelopes are left queued.
		for i := 0; errors.Is(err, errBusy) && i < busyRetries; i++ {
			select {
			case <-time.After(busyBackoff << i):
			case <-ctx.Done():
				return res, ctx.Err()
			}
			var rest []*localstore.Outgoing
			for _, o := range byContact[kid] {
				if !res.sent[o.ID] {
					rest = append(rest, o)
				}
			}
			err = c.flushContact(ctx, k, rest, res.sent)
		}
		if err != nil {
			if ctx.Err() != nil {
				return res, ctx.Err()
			}
			if !errors.Is(err, ErrUnreachable) {
				return res, err
			}
			c.log.Info("relay unreachable; outbox kept", "queued", len(byContact[kid]))
			res.unreachable = true
		}
	}
	err = c.store.Update(ctx, func(tx *localstore.Tx) (err error) { res.left, err = tx.OutboxLen(); return })
	return res, err
}

func (c *Client) flushContact(ctx context.Context, k *localstore.Contact, queue []*localstore.Outgoing, sent map[[16]byte]bool) error {
	r, err := link.ParseRelay(k.RelayLink)
	if err != nil {
		return fmt.Errorf("contact's relay link: %w", err)
	}
	key := k.RelayLink + "|" + string(k.Mailbox)
	// Each connection carries at most perConnection envelopes and then
	// is replaced by one with a new throwaway key: the relay rate-limits
	// per key, and a limit hit in the middle of a pipelined window could
	// let a later envelope in before an earlier one.
	retried := false
	for len(queue) > 0 {
		a, reused, err := c.anonConn(ctx, key, r)
		if err != nil {
			return err
		}
		n := min(len(queue), perConnection-a.used)
		a.used += n
		a.last = time.Now()
		if err := c.flushConn(ctx, a.cn, k, queue[:n], sent); err != nil {
			c.dropAnon(key)
			if !reused || retried || !errors.Is(err, ErrUnreachable) || errors.Is(err, errBusy) || ctx.Err() != nil {
				return err
			}
			// A cached connection may have died unnoticed (a relay
			// restart): try once more on a fresh one, skipping what the
			// relay already acknowledged.
			retried = true
			var rest []*localstore.Outgoing
			for _, o := range queue {
				if !sent[o.ID] {
					rest = append(rest, o)
				}
			}
			queue = rest
			continue
		}
		queue = queue[n:]
	}
	return nil
}

// anon is a cached anonymous connection to one contact's mailbox.
type anon struct {
	cn   *conn
	used int       // envelopes sent on it
	last time.Time // last use
}

// anonConn returns the cached anonymous connection for key (a relay and
// mailbox) with reused set, or dials one with a new throwaway key if there is none, it
// died, it has carried perConnection envelopes or it was idle for anonIdle.
// Keeping it spares a handshake per message in long-running clients (the
// relay limits handshakes per address). The caller holds flushMu.
func (c *Client) anonConn(ctx context.Context, key string, r link.Relay) (a *anon, reused bool, err error) {
	if a := c.anon[key]; a != nil {
		alive := true
		select {
		case <-a.cn.done:
			alive = false
		default:
		}
		if alive && a.used < perConnection && time.Since(a.last) < anonIdle {
			return a, true, nil
		}
		c.dropAnon(key)
	}
	kp, err := channel.GenerateKeyPair(c.rand)
	if err != nil {
		return nil, false, err
	}
	fc, err := c.dial(ctx, r, kp)
	if err != nil {
		return nil, false, err
	}
	if c.anon == nil {
		c.anon = make(map[string]*anon)
	}
	a = &anon{cn: newConn(fc), last: time.Now()}
	c.anon[key] = a
	return a, false, nil
}

// dropAnon closes and forgets the cached connection for key. The caller
// holds flushMu.
func (c *Client) dropAnon(key string) {
	if a := c.anon[key]; a != nil {
		a.cn.Close()
		delete(c.anon, key)
	}
}

// errBusy is wrapped by flushConn when the relay answered a temporary
// SendErr (rate limited, over quota, unavailable).
var errBusy = errors.New("relay busy")

const (
	anonIdle      = time.Minute
	perConnection = 768
	busyRetries   = 4
	busyBackoff   = 250 * time.Millisecond
)

func (c *Client) flushConn(ctx context.Context, cn *conn, k *localstore.Contact, queue []*localstore.Outgoing, sent map[[16]byte]bool) error {
	for len(queue) > 0 {
		win := queue[:min(len(queue), sendWindow)]
		queue = queue[len(win):]
		pending := make(map[[16]byte]*localstore.Outgoing, len(win))
		for _, o := range win {
			m := wire.Send{ID: o.ID, To: [16]byte(k.Mailbox), Token: [32]byte(k.Token), Envelope: o.Envelope}
			if err := cn.send(ctx, m); err != nil {
				return fmt.Errorf("%w: %v", ErrUnreachable, err)
			}
			pending[o.ID] = o
		}
		var ok []*localstore.Outgoing
		var failed []*localstore.Outgoing
		var werr error
		for len(pending) > 0 && werr == nil {
			m, err := cn.next(ctx, responseTimeout)
			if err != nil {
				werr = err
				break
			}
			switch m := m.(type) {
			case wire.SendOK:
				if o := pending[m.ID]; o != nil {
					delete(pending, m.ID)
					ok = append(ok, o)
				}
			case wire.SendErr:
				o := pending[m.ID]
				if o == nil {
					continue
				}
				if m.Code.Temporary() {
					werr = fmt.Errorf("%w: %w: relay says %s (%s)", ErrUnreachable, errBusy, m.Code, m.Msg)
					break
				}
				c.log.Warn("relay refused a message for good", "code", m.Code.String())
				delete(pending, m.ID)
				failed = append(failed, o)
			case wire.Ping:
				cn.send(ctx, wire.Pong(m))
			}
		}
		if err := c.commitSent(ctx, ok, failed, sent); err != nil {
			return err
		}
		if werr != nil {
			return werr
		}
	}
	return nil
}

// commitSent removes acknowledged and refused envelopes from the outbox
// and advances their messages' states, in one transaction.
func (c *Client) commitSent(ctx context.Context, ok, failed []*localstore.Outgoing, sent map[[16]byte]bool) error {
	if len(ok) == 0 && len(failed) == 0 {
		return nil
	}
	err := c.store.Update(ctx, func(tx *localstore.Tx) error {
		for _, o := range ok {
			if _, err := tx.Dequeue(o.ID); err != nil {
				return err
			}
			if _, err := tx.AdvanceState(o.ID, o.Contact, localstore.Sent); err != nil {
				return err
			}
		}
		for _, o := range failed {
			if _, err := tx.Dequeue(o.ID); err != nil {
				return err
			}
			if _, err := tx.AdvanceState(o.ID, o.Contact, localstore.Failed); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, o := range ok {
		sent[o.ID] = true
	}
	return nil
}

// Send queues text for the contact with the given name and delivers the
// outbox. It returns once the contact's relay has durably accepted the
// message, or ErrQueued if the relay could not be reached (the message
// stays queued and a later Send or Sync delivers it).
func (c *Client) Send(ctx context.Context, contact, text string) (*Message, error) {
	msgs, err := c.SendMany(ctx, contact, []string{text})
	if len(msgs) == 1 {
		return msgs[0], err
	}
	return nil, err
}

// SendMany queues each text as its own message to the contact, in order,
// in one transaction, then delivers the outbox like Send. It returns ErrQueued
// unless every one of them was acknowledged by the relay.
func (c *Client) SendMany(ctx context.Context, contact string, texts []string) ([]*Message, error) {
	for _, t := range texts {
		if len(t) > MaxText {
			return nil, fmt.Errorf("message of %d bytes is longer than the limit of %d", len(t), MaxText)
		}
	}
	var msgs []*Message
	err := c.store.Update(ctx, func(tx *localstore.Tx) error {
		msgs = nil
		k, err := findContact(tx, contact)
		if err != nil {
			return err
		}
		s, err := c.loadSession(k)
		if err != nil {
			return err
		}
		for _, text := range texts {
			id, err := c.newID()
			if err != nil {
				return err
			}
			now := c.now()
			k.SendN++
			ct := &content{Kind: KindText, ID: id, Sent: now.UnixMilli(), N: k.SendN, Text: text}
			if err := c.encryptTo(tx, k, s, ct); err != nil {
				return err
			}
			m := &localstore.Message{ID: id, Contact: k.ID, Outgoing: true, Sent: time.UnixMilli(ct.Sent), State: localstore.Queued, Text: text}
			if _, err := tx.InsertMessage(m); err != nil {
				return err
			}
			msgs = append(msgs, publicMessage(m, k.Name))
		}
		if err := saveSession(k, s); err != nil {
			return err
		}
		return tx.PutContact(k)
	})
	if err != nil {
		return nil, err
	}
	res, err := c.flush(ctx)
	if err != nil {
		return msgs, err
	}
	for _, m := range msgs {
		if !res.sent[m.ID] {
			return msgs, ErrQueued
		}
		m.State = StateSent
	}
	return msgs, nil
}

// Flush delivers whatever waits in the outbox and returns how many
// envelopes are still queued. It returns an error wrapping ErrUnreachable
// if a relay could not be reached.
func (c *Client) Flush(ctx context.Context) (int, error) {
	res, err := c.flush(ctx)
	if err == nil && res.unreachable {
		err = ErrUnreachable
	}
	return res.left, err
}
