package ferry

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/ferry-im/ferry/internal/localstore"
	"github.com/ferry-im/ferry/link"
	"github.com/ferry-im/ferry/session"
	"github.com/ferry-im/ferry/wire"
)

// SyncOptions configure Sync. The zero value fetches what is waiting and
// returns.
type SyncOptions struct {
	// Wait, if positive, keeps Sync connected (reconnecting after failures)
	// for that long, storing messages as they arrive. If zero, Sync returns
	// once the relay has delivered what was waiting.
	Wait time.Duration
	// OnMessages, if set, is called from Sync's goroutine after new
	// incoming text messages are stored (committed).
	OnMessages func([]*Message)
	// OnContact, if set, is called after a new contact introduced itself
	// with one of the user's invites.
	OnContact func(name string)
	// OnState, if set, is called after receipts moved the state of
	// outgoing messages, or the outbox delivered some.
	OnState func()
}

// Sync connects to the user's relay with the device key, registers the
// delivery token and prekeys if needed, delivers the outbox, and receives
// the mailbox: each envelope is opened, decrypted, de-duplicated by message
// id and stored, and only then acknowledged to the relay (so a crash never
// loses one, and a redelivered one is stored once). Delivery receipts are
// queued for stored messages and sent.
//
// Without opts.Wait it returns an error wrapping ErrUnreachable if the
// relay cannot be reached. With opts.Wait it retries until the time is up
// and returns nil then.
func (c *Client) Sync(ctx context.Context, opts SyncOptions) error {
	if opts.Wait <= 0 {
		c.flushBestEffort(ctx, opts)
		return c.syncOnce(ctx, true, opts)
	}
	wctx, cancel := context.WithTimeout(ctx, opts.Wait)
	defer cancel()
	backoff := 100 * time.Millisecond
	for {
		c.flushBestEffort(wctx, opts)
		start := time.Now()
		err := c.syncOnce(wctx, false, opts)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if wctx.Err() != nil {
			return nil
		}
		if err != nil && !errors.Is(err, ErrUnreachable) {
			return err
		}
		c.log.Info("relay connection lost; reconnecting", "err", err)
		if time.Since(start) > 10*time.Second {
			backoff = 100 * time.Millisecond
		}
		select {
		case <-time.After(backoff):
		case <-wctx.Done():
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return nil
		}
		backoff = min(2*backoff, 2*time.Second)
	}
}

func (c *Client) flushBestEffort(ctx context.Context, opts SyncOptions) {
	res, err := c.flush(ctx)
	if err != nil && ctx.Err() == nil {
		c.log.Info("outbox flush failed", "err", err)
	}
	if len(res.sent) > 0 && opts.OnState != nil {
		opts.OnState()
	}
}

// syncOnce runs one connection to the user's relay.
func (c *Client) syncOnce(ctx context.Context, drain bool, opts SyncOptions) error {
	fc, err := c.dial(ctx, c.relay, c.device)
	if err != nil {
		return err
	}
	cn := newConn(fc)
	defer cn.Close()
	if err := c.upload(ctx, cn, nil); err != nil {
		return err
	}
	if err := c.housekeeping(ctx, opts); err != nil {
		return err
	}
	// The relay answers the Subscribe only after it has pushed every
	// envelope waiting in the mailbox (docs/protocol.md section 6.4): a
	// drain ends once it has that OK and has stored everything before it.
	const subReq = 3
	if err := cn.send(ctx, wire.Subscribe{ReqID: subReq}); err != nil {
		return fmt.Errorf("%w: %v", ErrUnreachable, err)
	}
	subscribed := false
	// Until the OK, the relay must keep sending: a drain gives up after
	// responseTimeout without a frame, and after maxDrain in all (what it
	// stored by then stays stored).
	var stall *time.Timer
	var stallC, drainEnd <-chan time.Time
	if drain {
		stall = time.NewTimer(c.cfg.drainStall)
		defer stall.Stop()
		stallC = stall.C
		t := time.NewTimer(c.cfg.maxDrain)
		defer t.Stop()
		drainEnd = t.C
	}
	ping := time.NewTicker(pingInterval)
	defer ping.Stop()
	// While connected, retry the outbox now and then: a contact's relay
	// may come back while the user's own stays up.
	retry := time.NewTicker(c.cfg.outboxRetry)
	defer retry.Stop()
	var batch []wire.Deliver

	// handle deals with one frame; Delivers are collected into batch.
	handle := func(f wire.Frame) error {
		m, err := wire.Decode(f)
		if errors.Is(err, wire.ErrUnknownType) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("decode %v frame: %w", f.Type, err)
		}
		switch m := m.(type) {
		case wire.Deliver:
			batch = append(batch, m)
		case wire.OK:
			if m.ReqID == subReq {
				subscribed = true
			}
		case wire.Error:
			if m.ReqID == subReq {
				return fmt.Errorf("relay refused the subscription: %s (%s)", m.Code, m.Msg)
			}
		case wire.Ping:
			return cn.send(ctx, wire.Pong(m))
		}
		return nil
	}
	// other sees the frames that arrive while receiveBatch waits for an
	// answer of its own (a prekey upload).
	other := func(m wire.Message) {
		if ok, isOK := m.(wire.OK); isOK && ok.ReqID == subReq {
			subscribed = true
		}
	}
	for {
		select {
		case f := <-cn.in:
			if err := handle(f); err != nil {
				return err
			}
			// Take whatever else is already here, up to a batch.
		more:
			for len(batch) < batchSize {
				select {
				case f := <-cn.in:
					if err := handle(f); err != nil {
						return err
					}
				default:
					break more
				}
			}
			if len(batch) > 0 {
				if err := c.receiveBatch(ctx, cn, batch, opts, other); err != nil {
					return err
				}
				batch = batch[:0]
			}
			if drain {
				if subscribed {
					return nil
				}
				stall.Reset(c.cfg.drainStall)
			}
		case <-stallC:
			return fmt.Errorf("%w: no answer to the subscription for %v", ErrUnreachable, c.cfg.drainStall)
		case <-drainEnd:
			return fmt.Errorf("%w: the waiting messages were not all delivered within %v", ErrUnreachable, c.cfg.maxDrain)
		case <-retry.C:
			if !drain {
				c.flushBestEffort(ctx, opts)
				if err := c.housekeeping(ctx, opts); err != nil {
					return err
				}
			}
		case <-ping.C:
			if err := cn.send(ctx, wire.Ping{Nonce: uint64(time.Now().UnixNano())}); err != nil {
				return fmt.Errorf("%w: %v", ErrUnreachable, err)
			}
		case <-cn.done:
			return fmt.Errorf("%w: connection lost: %v", ErrUnreachable, cn.err)
		case <-ctx.Done():
			if !drain {
				return nil
			}
			return ctx.Err()
		}
	}
}

// batchResult is what one stored batch produced.
type batchResult struct {
	acks       []uint64
	messages   []*Message
	contacts   []string
	queued     bool // receipts were queued
	stateMoved bool // receipts moved outgoing messages' states
	needUpload bool // new one-time prekeys were made
}

// receiveBatch stores a batch, acknowledges it, and then acts on it.
// Frames other than Deliver that arrive while it waits for an answer go
// to other.
func (c *Client) receiveBatch(ctx context.Context, cn *conn, batch []wire.Deliver, opts SyncOptions, other func(wire.Message)) error {
	var res batchResult
	err := c.store.Update(ctx, func(tx *localstore.Tx) (err error) {
		res, err = c.storeBatch(tx, batch)
		return err
	})
	if err != nil {
		return err
	}
	for len(res.acks) > 0 {
		n := min(len(res.acks), wire.MaxAcks)
		if err := cn.send(ctx, wire.Ack{Seqs: res.acks[:n]}); err != nil {
			return fmt.Errorf("%w: %v", ErrUnreachable, err)
		}
		res.acks = res.acks[n:]
	}
	if len(res.contacts) > 0 && opts.OnContact != nil {
		for _, n := range res.contacts {
			opts.OnContact(n)
		}
	}
	if len(res.messages) > 0 && opts.OnMessages != nil {
		opts.OnMessages(res.messages)
	}
	if res.stateMoved && opts.OnState != nil {
		opts.OnState()
	}
	if res.queued {
		c.flushBestEffort(ctx, opts)
	}
	if res.needUpload {
		var later []wire.Message
		err := c.upload(ctx, cn, func(m wire.Message) error {
			later = append(later, m)
			return nil
		})
		if err != nil {
			return err
		}
		var again []wire.Deliver
		for _, m := range later {
			if d, ok := m.(wire.Deliver); ok {
				again = append(again, d)
			} else {
				other(m)
			}
		}
		if len(again) > 0 {
			return c.receiveBatch(ctx, cn, again, opts, other)
		}
	}
	return nil
}

// storeBatch opens, decrypts and stores every envelope of batch in tx.
// Envelopes seen before, and envelopes that fail to open or decrypt (they
// can never succeed later), are acknowledged without being stored.
func (c *Client) storeBatch(tx *localstore.Tx, batch []wire.Deliver) (batchResult, error) {
	var res batchResult
	now := c.now()
	ks, err := tx.Contacts()
	if err != nil {
		return res, err
	}
	// Contacts are found by the canonical form of their identity: the
	// sign-flipped encoding of a key authenticates exactly as the key
	// does (docs/protocol.md section 2.1), so it is the same contact.
	byIdentity := make(map[session.PublicIdentity]*localstore.Contact, len(ks))
	byID := make(map[int64]*localstore.Contact, len(ks))
	for _, k := range ks {
		byIdentity[session.PublicIdentity(k.Identity).Canonical()] = k
		byID[k.ID] = k
	}
	sessions := make(map[int64]*session.Session)
	delivered := make(map[int64][][16]byte)
	var deliveredOrder []int64
	var prof *localstore.Profile
	var ps *session.PrekeySet
	for _, d := range batch {
		res.acks = append(res.acks, d.Seq)
		fresh, err := tx.MarkSeen(d.ID, now)
		if err != nil {
			return res, err
		}
		if !fresh {
			continue
		}
		sender, ct, inner, err := c.cfg.open(c.identity, d.Envelope)
		if err != nil || ct != contentTypeV1 {
			c.log.Warn("dropped an envelope that does not open", "err", err)
			continue
		}
		k := byIdentity[sender.Canonical()]
		if k == nil {
			if prof == nil {
				if prof, err = tx.Profile(); err != nil {
					return res, err
				}
				ps = new(session.PrekeySet)
				if err := ps.UnmarshalBinary(prof.Prekeys); err != nil {
					return res, fmt.Errorf("load prekeys: %w", err)
				}
			}
			nk, s, next, err := c.introduce(tx, ps, ks, sender, inner, now, &res.messages)
			if err != nil {
				return res, err
			}
			if nk == nil {
				continue
			}
			ps = next
			ks = append(ks, nk)
			byIdentity[sender.Canonical()], byID[nk.ID], sessions[nk.ID] = nk, nk, s
			res.contacts = append(res.contacts, nk.Name)
			continue
		}
		s := sessions[k.ID]
		if s == nil {
			if s, err = c.loadSession(k); err != nil {
				return res, err
			}
			sessions[k.ID] = s
		}
		// The sealed sender picked the contact; the session must be with
		// that same identity (Decrypt checks an initial message's identity
		// against the session's).
		if !s.RemoteIdentity().Equal(sender) {
			c.log.Warn("dropped a message whose sealed sender is not its session's peer")
			continue
		}
		pt, err := s.Decrypt(inner, ratchetAD)
		if err != nil {
			c.log.Warn("dropped a message that does not decrypt", "err", err)
			continue
		}
		m, err := parseContent(pt)
		if err != nil {
			c.log.Warn("dropped a malformed message", "err", err)
			continue
		}
		switch m.Kind {
		case KindText:
			// A message whose predecessors from this sender have not
			// arrived yet is held back (stored, not shown) until they
			// do, or until holdTimeout passes.
			lm := &localstore.Message{
				ID: m.ID, Contact: k.ID, Sent: time.UnixMilli(m.Sent), Received: now,
				State: localstore.Delivered, Text: m.Text, N: m.N, Held: m.N > k.RecvN+1,
			}
			inserted, err := tx.InsertMessage(lm)
			if err != nil {
				return res, err
			}
			if !inserted {
				break
			}
			if _, ok := delivered[k.ID]; !ok {
				deliveredOrder = append(deliveredOrder, k.ID)
			}
			delivered[k.ID] = append(delivered[k.ID], m.ID)
			if lm.Held {
				break
			}
			res.messages = append(res.messages, publicMessage(lm, k.Name))
			if m.N == k.RecvN+1 {
				k.RecvN = m.N
				rel, err := releaseInOrder(tx, k)
				if err != nil {
					return res, err
				}
				res.messages = append(res.messages, rel...)
			}
		case KindReceipt:
			st := localstore.Delivered
			if m.Status == ReceiptRead {
				st = localstore.Read
			}
			for _, id := range m.IDs {
				moved, err := tx.AdvanceState(id, k.ID, st)
				if err != nil {
					return res, err
				}
				res.stateMoved = res.stateMoved || moved
			}
		case KindIntroduction:
			// A known contact introducing itself again (a repeated
			// Accept): nothing to do.
		}
	}
	for _, id := range deliveredOrder {
		if err := c.queueReceipt(tx, byID[id], sessions[id], ReceiptDelivered, delivered[id]); err != nil {
			return res, err
		}
		res.queued = true
	}
	for id, s := range sessions {
		k := byID[id]
		if err := saveSession(k, s); err != nil {
			return res, err
		}
		if err := tx.PutContact(k); err != nil {
			return res, err
		}
	}
	if len(res.contacts) > 0 {
		x, kem := ps.OneTimeCount()
		if x < c.cfg.minPrekeys || kem < c.cfg.minPrekeys {
			if err := ps.AddOneTime(c.rand, c.identity, c.cfg.prekeys); err != nil {
				return res, err
			}
			res.needUpload = true
		}
		if prof.Prekeys, err = ps.MarshalBinary(); err != nil {
			return res, err
		}
		if err := tx.PutProfile(prof); err != nil {
			return res, err
		}
	}
	return res, nil
}

// introduce handles an initial message from an unknown identity: it must
// carry an introduction with an outstanding invite secret. It returns the
// new contact (already stored, without its session), the session and the
// prekey set with the used one-time prekeys removed; or a nil contact (and
// nothing changed) if the message is not a valid introduction.
func (c *Client) introduce(tx *localstore.Tx, ps *session.PrekeySet, ks []*localstore.Contact, sender session.PublicIdentity, inner []byte, now time.Time, notices *[]*Message) (*localstore.Contact, *session.Session, *session.PrekeySet, error) {
	if !session.IsInitialMessage(inner) {
		c.log.Warn("dropped a message from an unknown sender")
		return nil, nil, nil, nil
	}
	// Respond on a copy, so a rejected introduction keeps the prekeys.
	b, err := ps.MarshalBinary()
	if err != nil {
		return nil, nil, nil, err
	}
	trial := new(session.PrekeySet)
	if err := trial.UnmarshalBinary(b); err != nil {
		return nil, nil, nil, err
	}
	s, pt, _, err := session.Respond(c.rand, c.identity, trial, inner, ratchetAD)
	if err != nil {
		c.log.Warn("dropped an initial message that does not decrypt", "err", err)
		return nil, nil, nil, nil
	}
	// The sealed sender is who the contact will be stored as; it must be
	// the identity that made the PQXDH handshake, or anyone could re-seal
	// someone else's initial message under their own identity. (Equal:
	// the session layer authenticates identities up to the sign bit.)
	if !s.RemoteIdentity().Equal(sender) {
		c.log.Warn("dropped an initial message whose sealed sender is not its PQXDH identity")
		return nil, nil, nil, nil
	}
	s.Rand = c.rand
	m, err := parseContent(pt)
	if err != nil || m.Kind != KindIntroduction {
		c.log.Warn("dropped a first message that is not an introduction")
		return nil, nil, nil, nil
	}
	if _, err := link.ParseRelay(m.Relay); err != nil {
		c.log.Warn("dropped an introduction with a bad relay link", "err", err)
		return nil, nil, nil, nil
	}
	if err := link.CheckName(m.Name); err != nil {
		c.log.Warn("dropped an introduction with a bad name", "err", err)
		return nil, nil, nil, nil
	}
	ok, err := tx.TakeInvite(m.Secret[:])
	if err != nil {
		return nil, nil, nil, err
	}
	if !ok {
		c.log.Warn("dropped an introduction for an unknown or used invite")
		return nil, nil, nil, c.noteReusedInvite(tx, ks, m, now, notices)
	}
	if now.Sub(inviteIssued(m.Secret)) > InviteTTL {
		c.log.Warn("dropped an introduction for an expired invite")
		return nil, nil, nil, nil
	}
	k := &localstore.Contact{
		Name: uniqueName(ks, m.Name), Identity: sender[:], RelayLink: m.Relay,
		Mailbox: m.Mailbox[:], Token: m.Token[:], Added: now.UnixMilli(),
	}
	if err := saveSession(k, s); err != nil {
		return nil, nil, nil, err
	}
	if err := tx.PutContact(k); err != nil {
		return nil, nil, nil, err
	}
	if err := tx.AddInvite(usedInvite(m.Secret, k.ID), now); err != nil {
		return nil, nil, nil, err
	}
	c.log.Info("new contact", "name", k.Name)
	return k, s, trial, nil
}

// noteReusedInvite tells the user that an introduction came with the
// secret of an invite a contact already used: the link was copied, and
// either that contact or this newcomer is not who the user meant to invite
// (docs/client.md, "Invites"). The notice is stored as a message from the
// contact that used the invite first, and appended to notices. An unknown
// secret (never issued, or expired and used by nobody) is only logged.
func (c *Client) noteReusedInvite(tx *localstore.Tx, ks []*localstore.Contact, m *content, now time.Time, notices *[]*Message) error {
	for _, k := range ks {
		used, err := tx.TakeInvite(usedInvite(m.Secret, k.ID))
		if err != nil {
			return err
		}
		if !used {
			continue
		}
		// Keep the marker: a third use must be reported too.
		if err := tx.AddInvite(usedInvite(m.Secret, k.ID), now); err != nil {
			return err
		}
		id, err := c.newID()
		if err != nil {
			return err
		}
		lm := &localstore.Message{
			ID: id, Contact: k.ID, Sent: now, Received: now, State: localstore.Delivered,
			Text: fmt.Sprintf("%s someone else (calling themselves %q) also used the invite link that %s used; "+
				"the link was copied. Compare safety numbers with %s over another channel.", NoticePrefix, m.Name, k.Name, k.Name),
		}
		if _, err := tx.InsertMessage(lm); err != nil {
			return err
		}
		*notices = append(*notices, publicMessage(lm, k.Name))
		return nil
	}
	return nil
}

// NoticePrefix starts the text of a message the client itself stored in a
// conversation (a warning for the user, not sent by the contact).
const NoticePrefix = "[ferry notice]"

// holdTimeout bounds how long a message waits for the sender's earlier
// messages (which may never come: refused by the relay for good, or queued
// on a device that went away) before it is shown anyway.
const holdTimeout = 2 * time.Minute

// releaseInOrder shows k's held messages that now follow in order, and
// moves k.RecvN past them. The caller saves k.
func releaseInOrder(tx *localstore.Tx, k *localstore.Contact) ([]*Message, error) {
	held, err := tx.HeldMessages(k.ID)
	if err != nil {
		return nil, err
	}
	var out []*Message
	for _, h := range held {
		if h.N > k.RecvN+1 {
			break
		}
		if err := tx.Release(h); err != nil {
			return nil, err
		}
		k.RecvN = max(k.RecvN, h.N)
		out = append(out, publicMessage(h, k.Name))
	}
	return out, nil
}

// releaseExpired shows messages held for longer than holdTimeout, with
// everything held before them, giving up on the gap.
func (c *Client) releaseExpired(tx *localstore.Tx) ([]*Message, error) {
	held, err := tx.HeldMessages(0)
	if err != nil || len(held) == 0 {
		return nil, err
	}
	cutoff := c.now().Add(-holdTimeout)
	upTo := make(map[int64]uint64) // contact -> highest expired counter
	for _, h := range held {
		if h.Received.Before(cutoff) {
			upTo[h.Contact] = max(upTo[h.Contact], h.N)
		}
	}
	var out []*Message
	for id, n := range upTo {
		k, err := tx.Contact(id)
		if err != nil {
			return nil, err
		}
		hs, err := tx.HeldMessages(id)
		if err != nil {
			return nil, err
		}
		for _, h := range hs {
			if h.N > n {
				break
			}
			if err := tx.Release(h); err != nil {
				return nil, err
			}
			out = append(out, publicMessage(h, k.Name))
		}
		k.RecvN = max(k.RecvN, n)
		rel, err := releaseInOrder(tx, k)
		if err != nil {
			return nil, err
		}
		out = append(out, rel...)
		if err := tx.PutContact(k); err != nil {
			return nil, err
		}
	}
	if len(out) > 0 {
		c.log.Warn("showing messages whose predecessors never arrived", "count", len(out))
	}
	return out, nil
}

// housekeeping forgets old seen ids and releases expired held messages,
// reporting those to opts.OnMessages.
func (c *Client) housekeeping(ctx context.Context, opts SyncOptions) error {
	var rel []*Message
	err := c.store.Update(ctx, func(tx *localstore.Tx) error {
		if _, err := tx.ForgetSeen(c.now().Add(-seenRetention)); err != nil {
			return err
		}
		var err error
		rel, err = c.releaseExpired(tx)
		return err
	})
	if err == nil && len(rel) > 0 && opts.OnMessages != nil {
		opts.OnMessages(rel)
	}
	return err
}
