package outbox

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/ferry-im/ferry/internal/localstore"
	"github.com/ferry-im/ferry/internal/relayclient"
	"github.com/ferry-im/ferry/internal/transfer"
	"github.com/ferry-im/ferry/link"
	"github.com/ferry-im/ferry/wire"
)

// Attachments. The message that announces a blob is an envelope like any
// other: the flush sends it at once, in order, so the texts that follow
// it are not held up. The blob itself is uploaded apart (Upload), without
// the flush's locks, on the kept anonymous connection of the recipient's
// mailbox when there is one, so that the flush's envelopes to that
// mailbox share the connection with it and their small frames overtake
// its pieces (docs/protocol.md 5.5). A recipient whose download starts
// before the upload ends is told to try again later (6.13).

// ErrRefused wraps an upload the relay refused for good (too large,
// denied): its message has failed.
var ErrRefused = errors.New("the recipient's relay refused the attachment")

// Upload uploads the pending attachments (only the one of message only,
// if it is not zero), each to every relay it is for, resuming from what
// the relay has. progress, if not nil, is told how far each is. An
// upload another process is doing is skipped. It returns the first
// failure: an error wrapping relayclient.ErrUnreachable (the rest stays
// pending, for a later call), one wrapping ErrRefused, or a local error.
// done counts the attachments whose upload it finished.
func (o *Outbox) Upload(ctx context.Context, only [16]byte, progress func(id [16]byte, done, total int64)) (done int, err error) {
	o.upMu.Lock()
	defer o.upMu.Unlock()
	var trs []*localstore.Transfer
	err = o.a.Store.Update(ctx, func(tx *localstore.Tx) (err error) {
		trs, err = tx.Transfers(localstore.TransferPending, true)
		return err
	})
	if err != nil {
		return 0, err
	}
	var first error
	for _, tr := range trs {
		if only != ([16]byte{}) && tr.ID != only {
			continue
		}
		err := o.uploadOne(ctx, tr, progress)
		if ctx.Err() != nil {
			return done, ctx.Err()
		}
		if err != nil && first == nil {
			first = err
		}
		if err == nil && tr.State == localstore.TransferDone {
			done++
		}
	}
	return done, first
}

// uploadOne uploads tr to each of its targets, under a lock file that
// keeps other processes from uploading it at the same time.
func (o *Outbox) uploadOne(ctx context.Context, tr *localstore.Transfer, progress func(id [16]byte, done, total int64)) error {
	release, ok, err := tryLock(filepath.Join(o.a.Home, transfer.BlobsDir, hex.EncodeToString(tr.Blob[:])+".lock"))
	if err != nil || !ok {
		return err
	}
	defer release()
	for i := range tr.Targets {
		if tr.Targets[i].Done {
			continue
		}
		err := o.uploadTo(ctx, tr, i, progress)
		var re *relayclient.RefusedError
		switch {
		case errors.As(err, &re) && !re.Code.Temporary():
			return o.fail(ctx, tr, refusal(re))
		case errors.As(err, &re):
			return fmt.Errorf("%w: %w: %s", relayclient.ErrUnreachable, relayclient.ErrBusy, refusal(re))
		case err != nil:
			return err
		}
	}
	return nil
}

// uploadTo uploads tr to its target i and records it.
func (o *Outbox) uploadTo(ctx context.Context, tr *localstore.Transfer, i int, progress func(id [16]byte, done, total int64)) error {
	tg := tr.Targets[i]
	a, key, err := o.uploadConn(ctx, tg)
	if err != nil {
		return err
	}
	lastTouch := time.Now()
	err = transfer.Upload(ctx, o.a.Home, a.cn, tr, tg, func(done int64) {
		if time.Since(lastTouch) > time.Second {
			lastTouch = time.Now()
			o.mu.Lock()
			a.last = lastTouch // the flush must not drop it as idle
			o.mu.Unlock()
		}
		if progress != nil {
			progress(tr.ID, done, tr.Size)
		}
	})
	if err != nil {
		if errors.Is(err, relayclient.ErrUnreachable) {
			o.mu.Lock()
			if o.anon[key] == a {
				o.drop(key)
			}
			o.mu.Unlock()
		}
		return err
	}
	tr.Targets[i].Done = true
	all := true
	for _, t := range tr.Targets {
		all = all && t.Done
	}
	if all {
		tr.State, tr.Done = localstore.TransferDone, tr.Size
	}
	if err := o.a.Store.Update(ctx, func(tx *localstore.Tx) error { return tx.PutTransfer(tr) }); err != nil {
		return err
	}
	if all {
		os.Remove(filepath.Join(o.a.Home, tr.Source))
	}
	return nil
}

// uploadConn returns the kept anonymous connection to the target's
// mailbox, dialling one if needed.
func (o *Outbox) uploadConn(ctx context.Context, tg localstore.Target) (*anon, string, error) {
	r, err := link.ParseRelay(tg.Relay)
	if err != nil {
		return nil, "", fmt.Errorf("recipient's relay link: %w", err)
	}
	key := tg.Relay + "|" + string(tg.Mailbox[:])
	o.mu.Lock()
	defer o.mu.Unlock()
	a, _, err := o.conn(ctx, key, r)
	return a, key, err
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

// fail records that tr will not be uploaded and that its message failed.
func (o *Outbox) fail(ctx context.Context, tr *localstore.Transfer, why string) error {
	tr.State, tr.Err = localstore.TransferFailed, why
	err := o.a.Store.Update(ctx, func(tx *localstore.Tx) error {
		if err := tx.PutTransfer(tr); err != nil {
			return err
		}
		if _, err := tx.Dequeue(tr.ID); err != nil {
			return err
		}
		_, err := tx.AdvanceState(tr.ID, 0, true, localstore.Failed)
		return err
	})
	if err != nil {
		return err
	}
	os.Remove(filepath.Join(o.a.Home, tr.Source))
	return fmt.Errorf("%w: %s", ErrRefused, why)
}
