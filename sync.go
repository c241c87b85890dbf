package ferry

import (
	"context"
	"time"

	"github.com/ferry-im/ferry/internal/inbox"
	"github.com/ferry-im/ferry/internal/localstore"
)

// SyncOptions configure Sync. The zero value fetches what is waiting and
// returns. The callbacks are called from Sync's goroutine, after what they
// report is stored.
type SyncOptions struct {
	// Wait, if positive, keeps Sync connected (reconnecting after
	// failures) for that long, storing messages as they arrive. If zero,
	// Sync returns once the relay has delivered what was waiting.
	Wait time.Duration
	// OnMessages, if set, gets new incoming messages and notices once
	// they are shown (a message waiting for its sender's earlier ones is
	// reported when they come).
	OnMessages func([]*Message)
	// OnContact, if set, gets each new contact (someone accepted an
	// invite) and each contact whose status changed (an inviter confirmed
	// or refused the user).
	OnContact func(Contact)
	// OnState, if set, is called after outgoing messages changed state
	// (receipts came, or the outbox delivered some).
	OnState func()
	// OnOnline, if set, is called when the connection to the user's relay
	// comes up (true) and when it is lost (false).
	OnOnline func(online bool)
	// OnTransfer, if set, is told how far each upload and download is.
	// While Sync waits it is called from the uploading and downloading
	// goroutines, which run beside Sync's (and may call it at the same
	// time); Sync returns only after they have stopped.
	OnTransfer func(Progress)
	// OnRoute, if set, is called when the client reaches its relay over
	// another transport than before (and for the first connection), with
	// why the previous one was left.
	OnRoute func(Route)
	// OnChanged, if set, gets the conversations whose messages changed
	// other than by new ones: reactions, edits, deletes for everyone, a
	// new disappearing-message timer, messages that disappeared.
	OnChanged func([]ConversationID)
	// OnTyping, if set, gets the contacts' typing indicators (none when
	// the user turned them off).
	OnTyping func([]TypingEvent)
	// OnStatus, if set, gets the connection's status each time it
	// changes: up over which transport, or down, why, and when the next
	// attempt is.
	OnStatus func(Status)
}

// Sync connects to the user's relay with the device key, registers the
// delivery token and prekeys if needed, delivers the outbox, and receives
// the mailbox: each envelope is opened, decrypted, de-duplicated by
// message id and stored, and only then acknowledged to the relay (so a
// crash never loses one, and a redelivered one is stored once). Delivery
// receipts are queued for stored messages and sent.
//
// Without opts.Wait it returns an error wrapping ErrUnreachable if the
// relay cannot be reached. With opts.Wait it retries until the time is up
// and returns nil then.
func (c *Client) Sync(ctx context.Context, opts SyncOptions) error {
	if opts.OnRoute != nil {
		c.rw.notify.Store(&opts.OnRoute)
		defer c.rw.notify.Store(nil)
	}
	ev := inbox.Events{States: opts.OnState, Online: opts.OnOnline}
	if opts.OnTransfer != nil {
		ev.Transfer = func(id [16]byte, out bool, done, total int64) {
			opts.OnTransfer(Progress{Message: id, Outgoing: out, Done: done, Total: total})
		}
	}
	if opts.OnMessages != nil {
		ev.Messages = func(ss []inbox.Stored) {
			ms := make([]*Message, len(ss))
			for i, s := range ss {
				ms[i] = messageOf(s.Message, s.From, s.Conversation)
			}
			opts.OnMessages(ms)
		}
	}
	if opts.OnContact != nil {
		ev.Contacts = func(ks []*localstore.Contact) {
			for _, k := range ks {
				var pk Contact
				err := c.a.Store.Update(ctx, func(tx *localstore.Tx) (err error) { pk, err = publicContact(tx, k); return })
				if err != nil {
					c.a.Log.Warn("read new contact", "err", err)
					continue
				}
				opts.OnContact(pk)
			}
		}
	}
	c.featureEvents(&ev, opts)
	return c.in.Sync(ctx, opts.Wait, ev)
}
