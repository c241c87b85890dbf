package inbox

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/ferry-im/ferry/internal/account"
	"github.com/ferry-im/ferry/internal/content"
	"github.com/ferry-im/ferry/internal/localstore"
	"github.com/ferry-im/ferry/internal/relayclient"
	"github.com/ferry-im/ferry/session"
	"github.com/ferry-im/ferry/wire"
)

// Sync connects to the user's relay with the device key, uploads what
// registration lacks, flushes the outbox and receives the mailbox. With
// wait zero it drains: it returns once the relay has delivered what was
// waiting (an error wrapping relayclient.ErrUnreachable if it could not).
// With wait positive it stays connected that long, reconnecting with
// backoff, and returns nil when the time is up.
func (in *Inbox) Sync(ctx context.Context, wait time.Duration, ev Events) error {
	if wait <= 0 {
		in.flush(ctx, ev)
		in.upload(ctx, ev)
		return in.syncOnce(ctx, true, ev)
	}
	wctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	// Uploads run beside the receive loop, so that a long one does not
	// hold up what arrives.
	kick := make(chan struct{}, 1)
	ev.kickUploads = func() {
		select {
		case kick <- struct{}{}:
		default:
		}
	}
	var wg sync.WaitGroup
	wg.Go(func() { in.uploader(wctx, ev, kick) })
	defer wg.Wait()
	defer cancel()
	backoff := 100 * time.Millisecond
	failures := 0 // failed or lost connections in a row
	for {
		in.flush(wctx, ev)
		start := time.Now()
		err := in.syncOnce(wctx, false, ev)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if wctx.Err() != nil {
			return nil
		}
		if err != nil && !errors.Is(err, relayclient.ErrUnreachable) {
			return err
		}
		in.a.Log.Info("relay connection lost; reconnecting", "err", err)
		if time.Since(start) > 10*time.Second || errors.Is(err, relayclient.ErrStalled) {
			// A stalled transport is not a relay that is down: the next
			// dial races the other transports first.
			backoff, failures = 100*time.Millisecond, 0
		}
		failures++
		in.tellDown(ev, err, backoff, failures)
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

// flush delivers the outbox, best effort, and tells ev if it sent
// something.
func (in *Inbox) flush(ctx context.Context, ev Events) {
	res, err := in.ob.Flush(ctx)
	if err != nil && ctx.Err() == nil {
		in.a.Log.Info("outbox flush failed", "err", err)
	}
	if (len(res.Sent) > 0 || len(res.Failed) > 0) && ev.States != nil {
		ev.States()
	}
	if len(res.Notices) > 0 && ev.Messages != nil {
		ss := make([]Stored, len(res.Notices))
		for i, n := range res.Notices {
			ss[i] = Stored{Message: n.Message, Conversation: n.Conversation}
		}
		ev.Messages(ss)
	}
	if ev.kickUploads != nil {
		ev.kickUploads()
	}
}

// syncOnce runs one connection to the user's relay. The relay answers the
// Subscribe only after it has pushed every envelope waiting in the mailbox
// (docs/protocol.md section 6.4): a drain ends once it has that answer
// and has stored everything before it.
func (in *Inbox) syncOnce(ctx context.Context, drain bool, ev Events) error {
	cn, err := in.a.Dialer.Dial(ctx, in.a.Relay, in.a.Device)
	if err != nil {
		if drain {
			in.tellDown(ev, err, 0, 1)
		}
		return err
	}
	defer cn.Close()
	in.tellUp(ev, cn)
	if ev.Online != nil {
		ev.Online(true)
		defer ev.Online(false)
	}
	if err := in.prepare(ctx, cn, ev); err != nil {
		return err
	}
	if err := cn.Subscribe(ctx); err != nil {
		return err
	}
	kick := make(chan struct{}, 1)
	if !drain {
		dctx, stop := context.WithCancel(ctx)
		var wg sync.WaitGroup
		wg.Go(func() { in.downloader(dctx, cn, ev, kick) })
		defer func() { stop(); wg.Wait() }()
		kick <- struct{}{}
	}
	return in.receive(ctx, cn, drain, ev, kick)
}

// prepare does what a connection does before it subscribes: prekeys,
// the outbox once the relay granted them, rankings and housekeeping.
func (in *Inbox) prepare(ctx context.Context, cn *relayclient.Conn, ev Events) error {
	granted, err := in.opts.Prekeys.Sync(ctx, in.a, cn)
	if err != nil {
		if !temporary(err) {
			return err
		}
		// A relay asking to slow down: the next connection uploads.
		in.a.Log.Info("prekey upload put off", "err", err)
	}
	if granted {
		in.flush(ctx, ev)
	}
	if err := in.checkPrekeys(ctx, cn, ev); err != nil {
		return err
	}
	if r := in.a.Rankings; r != nil && r.Due() {
		if err := r.Fetch(ctx, cn); err != nil {
			in.a.Log.Debug("no transport rankings", "err", err)
		}
	}
	return in.housekeeping(ctx, ev)
}

// subscription is what the receive loop keeps about its Subscribe.
type subscription struct {
	resub        *time.Timer   // asks again after a temporary refusal
	backoff      time.Duration // the next wait before asking again
	busy         error         // the last temporary refusal, while one is pending
	reregistered bool          // the mailbox was registered again on this connection
}

// receive stores what the relay pushes on cn until the drain ends (drain)
// or ctx ends, kicking the downloader after each batch.
func (in *Inbox) receive(ctx context.Context, cn *relayclient.Conn, drain bool, ev Events, kick chan struct{}) error {
	// A drain gives up after DrainStall without a frame before the
	// answer, and after MaxDrain in all (what it stored stays stored).
	stall := time.NewTimer(orDefault(in.opts.DrainStall, defaultDrainStall))
	defer stall.Stop()
	end := time.NewTimer(orDefault(in.opts.MaxDrain, defaultMaxDrain))
	defer end.Stop()
	var stallC, endC <-chan time.Time
	if drain {
		stallC, endC = stall.C, end.C
	}
	// While connected, retry the outbox now and then: a contact's relay
	// may come back while the user's own stays up.
	retry := time.NewTicker(orDefault(in.opts.OutboxRetry, defaultOutboxRetry))
	defer retry.Stop()
	// A Subscribe refused for now (rate limited) is asked again after a
	// backoff, on the same connection; a drain keeps its limits.
	sub := subscription{resub: time.NewTimer(0), backoff: resubscribeMin}
	if !sub.resub.Stop() {
		<-sub.resub.C
	}
	defer sub.resub.Stop()
	// While waiting, send each batch of receipts once its delay is over.
	var receiptsC <-chan time.Time
	if !drain {
		t := time.NewTicker(receiptTick)
		defer t.Stop()
		receiptsC = t.C
	}
	for {
		select {
		case <-cn.Ready():
			// One batch per turn, so that the drain's limits are checked
			// between batches however fast the relay pushes (Ready fires
			// again while more wait).
			select {
			case <-endC:
				return in.drainTooLong(sub.busy)
			default:
			}
			finished, err := in.takeBatch(ctx, cn, drain, ev, kick, &sub)
			if finished || err != nil {
				return err
			}
			stall.Reset(orDefault(in.opts.DrainStall, defaultDrainStall))
		case <-receiptsC:
			if due := in.ob.ReceiptsDue(); !due.IsZero() && !due.After(in.a.Now()) {
				in.flush(ctx, ev)
			}
		case <-sub.resub.C:
			sub.busy = nil
			if err := cn.Subscribe(ctx); err != nil {
				return err
			}
			stall.Reset(orDefault(in.opts.DrainStall, defaultDrainStall))
		case <-stallC:
			return fmt.Errorf("%w: the relay went silent before the end of the waiting messages", relayclient.ErrUnreachable)
		case <-endC:
			return in.drainTooLong(sub.busy)
		case <-retry.C:
			if !drain {
				if err := in.meanwhile(ctx, cn, ev, kick); err != nil {
					return err
				}
			}
		case <-cn.Done():
			return cn.Err()
		case <-ctx.Done():
			if !drain {
				return nil
			}
			return ctx.Err()
		}
	}
}

// takeBatch stores one batch of what the relay pushed and looks at the
// Subscribe's answer: finished is true when a drain is over (err is then
// the downloads' result). A temporary refusal schedules another
// Subscribe; a mailbox the relay lost is registered again, once.
func (in *Inbox) takeBatch(ctx context.Context, cn *relayclient.Conn, drain bool, ev Events, kick chan struct{}, sub *subscription) (finished bool, err error) {
	if ds := cn.Take(batchSize); len(ds) > 0 {
		if err := in.receiveBatch(ctx, cn, ds, ev); err != nil {
			return false, err
		}
		select {
		case kick <- struct{}{}:
		default:
		}
	}
	done, err := cn.Drained()
	if err == nil && drain && done {
		return true, in.downloadAll(ctx, cn, ev)
	}
	if err != nil && temporary(err) {
		if sub.busy == nil {
			in.a.Log.Info("the relay asks to slow down; subscribing again later", "err", err, "after", sub.backoff)
			sub.busy = err
			sub.resub.Reset(sub.backoff)
			sub.backoff = min(2*sub.backoff, resubscribeMax)
		}
		return false, nil
	}
	if relayclient.Lost(err) && !sub.reregistered {
		// The relay does not know the mailbox: register it again, once,
		// and subscribe again.
		sub.reregistered = true
		if err := in.reregister(ctx, cn, ev); err != nil {
			return false, err
		}
		return false, cn.Subscribe(ctx)
	}
	return false, err
}

// meanwhile is what a waiting connection does now and then: the outbox,
// housekeeping, downloads that came too early, the prekey count.
func (in *Inbox) meanwhile(ctx context.Context, cn *relayclient.Conn, ev Events, kick chan struct{}) error {
	in.flush(ctx, ev)
	if err := in.housekeeping(ctx, ev); err != nil {
		return err
	}
	// A download tried before its sender's upload ended is still pending,
	// and no message may come to kick the downloader again: try it now
	// and then.
	select {
	case kick <- struct{}{}:
	default:
	}
	return in.checkPrekeys(ctx, cn, ev)
}

// Backoff of a Subscribe the relay refused for now.
const (
	resubscribeMin = 500 * time.Millisecond
	resubscribeMax = 8 * time.Second
)

// temporary reports whether err is the relay's refusal of a request that
// may pass later unchanged (rate limited, over quota, unavailable).
func temporary(err error) bool {
	var re *relayclient.RefusedError
	return errors.As(err, &re) && re.Code.Temporary()
}

// drainTooLong is the error of a drain past its limit; busy is the
// relay's refusal of the Subscribe if it was still refusing.
func (in *Inbox) drainTooLong(busy error) error {
	if busy != nil {
		return fmt.Errorf("%w: %w: %v", relayclient.ErrUnreachable, relayclient.ErrBusy, busy)
	}
	return fmt.Errorf("%w: the waiting messages were not all delivered within %v", relayclient.ErrUnreachable, orDefault(in.opts.MaxDrain, defaultMaxDrain))
}

// receiveBatch stores a batch in one transaction, acknowledges it, and
// then acts on it: events, the receipts it queued, the prekeys it used.
func (in *Inbox) receiveBatch(ctx context.Context, cn *relayclient.Conn, ds []wire.Deliver, ev Events) error {
	var res result
	err := in.a.Store.Update(ctx, func(tx *localstore.Tx) error {
		b := in.newBatch(tx)
		for _, d := range ds {
			if err := b.receive(d); err != nil {
				return err
			}
		}
		if err := b.finish(); err != nil {
			return err
		}
		res = b.res
		return nil
	})
	if err != nil {
		return err
	}
	if err := cn.Ack(ctx, res.acks); err != nil {
		return err
	}
	res.tell(ev)
	if res.queued {
		in.flush(ctx, ev)
	}
	if res.needUpload {
		granted, err := in.opts.Prekeys.Sync(ctx, in.a, cn)
		if err != nil {
			return err
		}
		if granted {
			in.flush(ctx, ev) // the token contents, now that the relay has the tokens
		}
	}
	return nil
}

// result is what one stored batch produced.
type result struct {
	acks        []uint64
	messages    []Stored
	contacts    []*localstore.Contact
	queued      bool // something was queued in the outbox
	stateMoved  bool // outgoing messages changed state
	needUpload  bool // new one-time prekeys were made
	attachments bool // attachments arrived: the downloader has work
	features         // what the conversation features changed (features.go)
}

func (r *result) tell(ev Events) {
	if len(r.contacts) > 0 && ev.Contacts != nil {
		ev.Contacts(r.contacts)
	}
	if len(r.messages) > 0 && ev.Messages != nil {
		ev.Messages(r.messages)
	}
	if r.stateMoved && ev.States != nil {
		ev.States()
	}
	r.features.tell(ev)
}

// batch is the state of one batch's transaction.
type batch struct {
	in         *Inbox
	tx         *localstore.Tx
	now        time.Time
	ks         []*localstore.Contact
	byIdentity map[session.PublicIdentity]*localstore.Contact
	peers      map[int64]*peer // contacts heard from in this batch
	order      []*peer
	prekeys    prekeyState   // loaded by the first introduction
	groups     []*groupBatch // loaded by the first group message
	res        result
}

// peer is a contact heard from in the batch, with what the batch changed.
type peer struct {
	k         *localstore.Contact
	conv      *localstore.Conversation
	s         *session.Session
	shown     uint64     // the contact's counter shown in order
	delivered [][16]byte // ids to acknowledge with a delivery receipt
	// receiptNow sends the delivery receipt at once rather than after the
	// receipts' delay: the answer to an introduction, which the new
	// contact waits for.
	receiptNow bool
	group      bool // a member in a group conversation (no session, no receipts)
}

func (in *Inbox) newBatch(tx *localstore.Tx) *batch {
	return &batch{in: in, tx: tx, now: in.a.Now(), peers: make(map[int64]*peer)}
}

// contacts loads the contacts, indexed by the canonical form of their
// identity: the sign-flipped encoding of a key authenticates exactly as
// the key does (docs/protocol.md section 2.1), so it is the same contact.
func (b *batch) contacts() error {
	if b.byIdentity != nil {
		return nil
	}
	ks, err := b.tx.Contacts()
	if err != nil {
		return err
	}
	b.ks = ks
	b.byIdentity = make(map[session.PublicIdentity]*localstore.Contact, len(ks))
	for _, k := range ks {
		b.byIdentity[session.PublicIdentity(k.Identity).Canonical()] = k
	}
	return nil
}

// peer returns the batch's state for contact k, loading it on first use.
func (b *batch) peer(k *localstore.Contact) (*peer, error) {
	if p := b.peers[k.ID]; p != nil {
		return p, nil
	}
	p := &peer{k: k}
	var err error
	if p.s, err = b.in.a.Session(k); err != nil {
		return nil, err
	}
	if p.conv, err = b.tx.DirectConversation(k.ID); err != nil {
		return nil, fmt.Errorf("conversation with %s: %w", k.Name, err)
	}
	if p.shown, err = b.tx.Counter(p.conv.ID, k.ID); err != nil {
		return nil, err
	}
	b.addPeer(p)
	return p, nil
}

func (b *batch) addPeer(p *peer) {
	b.peers[p.k.ID] = p
	b.order = append(b.order, p)
}

// receive stores one envelope. Envelopes seen before, and envelopes that
// fail to open or decrypt (they never will), are acknowledged without
// being stored.
func (b *batch) receive(d wire.Deliver) error {
	log := b.in.a.Log
	b.res.acks = append(b.res.acks, d.Seq)
	if fresh, err := b.tx.MarkSeen(d.ID, b.now); err != nil || !fresh {
		return err
	}
	if session.IsGroupEnvelope(d.Envelope) {
		return b.receiveGroup(d.Envelope)
	}
	sender, ct, inner, err := b.in.opts.Open(b.in.a.Identity, d.Envelope)
	if err == nil && ct == account.ContentTypeDirect {
		return b.receiveDirect(sender, inner)
	}
	if err != nil || ct != account.ContentType {
		log.Warn("dropped an envelope that does not open", "err", err)
		return nil
	}
	if err := b.contacts(); err != nil {
		return err
	}
	k := b.byIdentity[sender.Canonical()]
	if k == nil {
		return b.introduce(sender, inner)
	}
	p, err := b.peer(k)
	if err != nil {
		return err
	}
	// The sealed sender picked the contact; the session must be with that
	// same identity (Decrypt checks an initial message's identity against
	// the session's).
	if !p.s.RemoteIdentity().Equal(sender) {
		log.Warn("dropped a message whose sealed sender is not its session's peer")
		return nil
	}
	pt, err := p.s.Decrypt(inner, account.RatchetAD)
	if err != nil {
		log.Warn("dropped a message that does not decrypt", "err", err)
		return nil
	}
	c, err := content.Parse(pt)
	if err != nil {
		log.Warn("dropped a malformed message", "err", err)
		return nil
	}
	if k.Blocked {
		// Dropped unread; its place in the sender's order is taken, so
		// that what comes after unblocking is not held back for it.
		if o, ok := c.Body.(content.Ordered); ok {
			p.shown = max(p.shown, o.Counter())
		}
		log.Debug("dropped a message from a blocked contact")
		return nil
	}
	if p.k.Status == localstore.Pending && c.Body.Kind() != content.KindRefusal {
		b.confirm(p) // the inviter answered in the session: it took the introduction
	}
	return b.dispatch(p, c)
}

// handlers maps each content kind to its handler. A kind without one
// (from a newer client) goes to handleUnknown and is kept as unsupported.
var handlers = map[content.Kind]func(*batch, *peer, *content.Content) error{
	content.KindText:         (*batch).handleText,
	content.KindReceipt:      (*batch).handleReceipt,
	content.KindIntroduction: (*batch).handleIntroduction,
	content.KindRefusal:      (*batch).handleRefusal,
	content.KindAttachment:   (*batch).handleAttachment,
	content.KindGroupControl: (*batch).handleGroupControl,
	content.KindReaction:     (*batch).handleAnnotation,
	content.KindEdit:         (*batch).handleAnnotation,
	content.KindDelete:       (*batch).handleAnnotation,
	content.KindReply:        (*batch).handleReply,
	content.KindTimer:        (*batch).handleTimer,
	content.KindTyping:       (*batch).handleTyping,
	content.KindToken:        (*batch).handleToken,
}

func (b *batch) dispatch(p *peer, c *content.Content) error {
	h, ok := handlers[c.Body.Kind()]
	if !ok {
		h = (*batch).handleUnknown
	}
	return h(b, p, c)
}

// finish queues the delivery receipts, saves the sessions, contacts and
// counters of the peers heard from, and the prekeys introductions used.
func (b *batch) finish() error {
	for _, p := range b.order {
		if p.receiptNow {
			if err := b.queueReceipt(p, content.ReceiptDelivered, p.delivered); err != nil {
				return err
			}
		} else if len(p.delivered) > 0 {
			// Batched and sent after a random delay (SealDueReceipts).
			b.in.a.DeferReceipt(p.k, content.ReceiptDelivered, p.delivered)
			b.res.queued = true
		}
		if err := account.SaveSession(p.k, p.s); err != nil {
			return err
		}
		if err := b.tx.PutContact(p.k); err != nil {
			return err
		}
		if err := b.tx.SetCounter(p.conv.ID, p.k.ID, p.shown); err != nil {
			return err
		}
	}
	if err := b.finishGroups(); err != nil {
		return err
	}
	return b.savePrekeys()
}

// ordered stores an ordered message of p. A message whose predecessors
// from p have not arrived is held back (stored, not shown) until they do,
// or until the hold timeout passes.
func (b *batch) ordered(p *peer, m *localstore.Message) error {
	m.Held = m.N > p.shown+1
	if m.Kind != int(content.KindTimer) {
		m.Timer = timerFor(p.conv, p.k.ID, m.N)
	}
	inserted, err := b.tx.InsertMessage(m)
	if err != nil || !inserted {
		return err
	}
	if err := b.applyPending(p, m); err != nil {
		return err
	}
	p.delivered = append(p.delivered, m.ID)
	if m.Held {
		return nil
	}
	b.res.messages = append(b.res.messages, p.stored(m))
	if m.N == p.shown+1 {
		p.shown = m.N
		rel, err := releaseInOrder(b.tx, p.conv.ID, p.k.ID, &p.shown)
		if err != nil {
			return err
		}
		for _, r := range rel {
			b.res.messages = append(b.res.messages, p.stored(r))
		}
	}
	return nil
}

// stored is m, from p, as the events report it.
func (p *peer) stored(m *localstore.Message) Stored {
	if p.group {
		return Stored{Message: m, From: p.k.Name, Conversation: p.conv.Name}
	}
	return Stored{Message: m, From: p.k.Name, Conversation: p.k.Name}
}

// releaseInOrder shows the sender's held messages that now follow in
// order, moving *shown past them.
func releaseInOrder(tx *localstore.Tx, conv, sender int64, shown *uint64) ([]*localstore.Message, error) {
	held, err := tx.HeldMessages(conv, sender)
	if err != nil {
		return nil, err
	}
	var out []*localstore.Message
	for _, h := range held {
		if h.N > *shown+1 {
			break
		}
		if err := tx.Release(h); err != nil {
			return nil, err
		}
		*shown = max(*shown, h.N)
		out = append(out, h)
	}
	return out, nil
}
