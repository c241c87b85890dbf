package outbox

import (
	"context"
	"errors"
	"fmt"

	"github.com/ferry-im/ferry/internal/localstore"
	"github.com/ferry-im/ferry/internal/relayclient"
	"github.com/ferry-im/ferry/internal/transfer"
	"github.com/ferry-im/ferry/wire"
)

// Attachments: an envelope that announces a blob leaves only once the blob
// is whole at the recipient's relay. Its upload goes on the same
// anonymous connection as the envelopes to that mailbox, so their frames
// (and any text queued meanwhile) share the connection and overtake the
// blob's pieces (docs/protocol.md 5.5).

// loadUploads reads the pending uploads, by message id. o.mu is held.
func (o *Outbox) loadUploads(ctx context.Context) error {
	return o.a.Store.Update(ctx, func(tx *localstore.Tx) error {
		trs, err := tx.Transfers(localstore.TransferPending, true)
		o.uploads = make(map[[16]byte]*localstore.Transfer, len(trs))
		for _, tr := range trs {
			o.uploads[tr.ID] = tr
		}
		return err
	})
}

// uploadFirst uploads the blob of queue's first envelope to g's relay if
// it still needs it, and returns how many envelopes from the start of
// queue may now be sent: up to the next one whose blob is not there yet
// (it is uploaded on the next turn). If the relay refused the first
// blob for good, its message has failed and skip is set: the caller
// drops it from queue. o.mu is held.
func (o *Outbox) uploadFirst(ctx context.Context, cn *relayclient.Conn, g *group, queue []*localstore.Outgoing) (n int, skip bool, err error) {
	for i, q := range queue {
		tr := o.uploads[q.ID]
		tg := target(tr, g)
		if tg < 0 {
			continue
		}
		if i > 0 {
			return i, false, nil // send what comes before it first, in order
		}
		err := o.upload(ctx, cn, tr, tg)
		var re *relayclient.RefusedError
		switch {
		case errors.As(err, &re) && !re.Code.Temporary():
			return 0, true, o.fail(ctx, tr, refusal(re))
		case errors.As(err, &re):
			return 0, false, fmt.Errorf("%w: %w: %s", relayclient.ErrUnreachable, relayclient.ErrBusy, refusal(re))
		case err != nil:
			return 0, false, err
		}
	}
	return len(queue), false, nil
}

// refusal says in a sentence why the relay refused an upload.
func refusal(re *relayclient.RefusedError) string {
	switch re.Code {
	case wire.CodeQuota:
		return "the recipient's attachment storage on their relay is full; try again later"
	case wire.CodeTooLarge:
		return "the recipient's relay does not take attachments this large (" + re.Msg + ")"
	case wire.CodeDenied:
		return "the recipient's relay refused the attachment (the contact's delivery token is no longer valid)"
	case wire.CodeUnavailable:
		return "the recipient's relay cannot store attachments now (" + re.Msg + ")"
	}
	return "the recipient's relay refused the attachment (" + re.Msg + ")"
}

// fail records that tr will not be uploaded and its message failed.
func (o *Outbox) fail(ctx context.Context, tr *localstore.Transfer, why string) error {
	tr.State, tr.Err = localstore.TransferFailed, why
	delete(o.uploads, tr.ID)
	return o.a.Store.Update(ctx, func(tx *localstore.Tx) error {
		if err := tx.PutTransfer(tr); err != nil {
			return err
		}
		if _, err := tx.Dequeue(tr.ID); err != nil {
			return err
		}
		_, err := tx.AdvanceState(tr.ID, 0, true, localstore.Failed)
		return err
	})
}

// target is the index in tr's targets of g's relay and mailbox when that
// upload is still to do, else -1.
func target(tr *localstore.Transfer, g *group) int {
	if tr == nil {
		return -1
	}
	for i, t := range tr.Targets {
		if !t.Done && t.Relay == g.relay && t.Mailbox == g.mailbox {
			return i
		}
	}
	return -1
}

// upload sends tr's blob to its target i and records it done.
func (o *Outbox) upload(ctx context.Context, cn *relayclient.Conn, tr *localstore.Transfer, i int) error {
	progress := func(done int64) {
		if o.progress != nil {
			o.progress(tr.ID, done, tr.Size)
		}
	}
	if err := transfer.Upload(ctx, o.a.Home, cn, tr, tr.Targets[i], progress); err != nil {
		return err
	}
	tr.Targets[i].Done = true
	tr.Done = tr.Size
	all := true
	for _, t := range tr.Targets {
		all = all && t.Done
	}
	if all {
		tr.State = localstore.TransferDone
	}
	return o.a.Store.Update(ctx, func(tx *localstore.Tx) error { return tx.PutTransfer(tr) })
}
