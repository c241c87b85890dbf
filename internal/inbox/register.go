package inbox

import (
	"context"
	"errors"

	"github.com/ferry-im/ferry/internal/localstore"
	"github.com/ferry-im/ferry/internal/relayclient"
)

// checkPrekeys asks the relay, when due (prekeys.Policy.CountEvery), how
// many one-time prekeys it has left, uploads more if they run low, and
// registers the mailbox again if the relay lost it, telling the user.
func (in *Inbox) checkPrekeys(ctx context.Context, cn *relayclient.Conn, ev Events) error {
	got, err := in.opts.Prekeys.Check(ctx, in.a, cn, false)
	if got.Registered {
		if nerr := in.noticeRegistered(ctx, ev); nerr != nil && err == nil {
			err = nerr
		}
	}
	var re *relayclient.RefusedError
	if errors.As(err, &re) {
		// A busy relay (rate limited, storage full) is asked again later.
		in.a.Log.Info("prekey check refused", "err", err)
		return nil
	}
	return err
}

// reregister registers the mailbox again after the relay refused one of
// the owner's requests as if it did not know the mailbox.
func (in *Inbox) reregister(ctx context.Context, cn *relayclient.Conn, ev Events) error {
	in.a.Log.Warn("the relay does not know this profile's mailbox; registering it again")
	if err := in.opts.Prekeys.Reregister(ctx, in.a, cn); err != nil {
		return err
	}
	return in.noticeRegistered(ctx, ev)
}

// noticeRegistered tells the user, in a notice of no conversation, that
// the relay had lost the mailbox and that it is registered again.
func (in *Inbox) noticeRegistered(ctx context.Context, ev Events) error {
	var m *localstore.Message
	err := in.a.Store.Update(ctx, func(tx *localstore.Tx) error {
		id, err := in.a.NewID()
		if err != nil {
			return err
		}
		m, err = tx.InsertNotice(id, 0, in.a.Now(), localstore.NoticeRegistered,
			"Your relay had lost your mailbox (it was restored after damage, or cleaned up after a long absence); Ferry registered it again. Messages sent to you in the meantime may have failed: ask your contacts to send them again.")
		return err
	})
	if err == nil && ev.Messages != nil {
		ev.Messages([]Stored{{Message: m}})
	}
	return err
}
