package inbox

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"time"

	"github.com/ferry-im/ferry/internal/localstore"
	"github.com/ferry-im/ferry/internal/relayclient"
	"github.com/ferry-im/ferry/internal/transfer"
)

// Downloads. Attachments up to the profile's auto-download size are
// downloaded by themselves on the connection that receives the mailbox,
// one at a time, by a goroutine beside the receive loop: a text that
// arrives meanwhile is stored and shown at once, and its frames overtake
// the download's on the channel (docs/protocol.md 5.5). Larger ones wait
// for ferry save (package ferry, Client.Save).

// AutoDownloadKey is the meta cursor that holds the auto-download size
// plus one (0: unset, the default applies).
const AutoDownloadKey = "auto-download"

// DefaultAutoDownload is the auto-download size when the profile sets
// none.
const DefaultAutoDownload = 100 << 20

// uploadGrace is how long after its message arrived a blob the relay
// does not have is taken as not uploaded yet rather than gone: a sender
// whose upload failed for now (the recipient's quota, a lost path) tries
// again later, and relays keep an unfinished blob 2 days.
const uploadGrace = 48 * time.Hour

// autoDownloadLimit reads the profile's auto-download size.
func autoDownloadLimit(tx *localstore.Tx) (int64, error) {
	v, err := tx.Cursor(AutoDownloadKey)
	if err != nil || v == 0 {
		return DefaultAutoDownload, err
	}
	return v - 1, nil
}

// Backoff of the downloads that failed for now, while a Sync waits.
const (
	downloadRetryMin = time.Second
	downloadRetryMax = 5 * time.Minute
)

// downloadAll downloads, one after the other, every pending incoming
// attachment within the auto-download size, and returns when none is
// left, or with an error wrapping relayclient.ErrUnreachable when the
// connection failed (what is left is downloaded on the next one).
func (in *Inbox) downloadAll(ctx context.Context, cn *relayclient.Conn, ev Events) error {
	_, err := in.downloadRound(ctx, cn, ev)
	return err
}

// downloadRound is downloadAll; left says whether a download failed for
// now (not uploaded yet, the relay busy, the transfer cut) and stays
// pending, to be tried again.
func (in *Inbox) downloadRound(ctx context.Context, cn *relayclient.Conn, ev Events) (left bool, err error) {
	tried := make(map[[16]byte]bool)
	for {
		var next *localstore.Transfer
		err := in.a.Store.Update(ctx, func(tx *localstore.Tx) error {
			limit, err := autoDownloadLimit(tx)
			if err != nil {
				return err
			}
			trs, err := tx.Transfers(localstore.TransferPending, false)
			for _, tr := range trs {
				if !tried[tr.ID] && plainSize(tr) <= limit {
					next = tr
					break
				}
			}
			return err
		})
		if err != nil || next == nil {
			return left, err
		}
		tried[next.ID] = true
		err = in.Download(ctx, cn, next, "", ev)
		if err != nil && !errors.Is(err, transfer.ErrCorrupt) && !errors.Is(err, transfer.ErrGone) && !errors.Is(err, transfer.ErrExpired) {
			left = true
		}
		if err != nil && (errors.Is(err, relayclient.ErrUnreachable) || ctx.Err() != nil) {
			return true, err
		}
	}
}

// downloader runs a round of downloads whenever kick fires, until ctx
// ends; while downloads failed for now, it runs again after a backoff
// (1 s doubling to 5 min) without waiting for a kick, so an attachment
// whose blob was not there yet, or whose transfer was cut, arrives by
// itself. A failed connection ends the receive loop too, which starts
// another (and a fresh downloader, kicked at once).
func (in *Inbox) downloader(ctx context.Context, cn *relayclient.Conn, ev Events, kick <-chan struct{}) {
	retry := time.NewTimer(0)
	if !retry.Stop() {
		<-retry.C
	}
	defer retry.Stop()
	backoff := downloadRetryMin
	for {
		select {
		case <-kick:
		case <-retry.C:
		case <-ctx.Done():
			return
		}
		left, err := in.downloadRound(ctx, cn, ev)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			in.a.Log.Info("download stopped", "err", err)
		}
		retry.Stop()
		select {
		case <-retry.C:
		default:
		}
		if !left {
			backoff = downloadRetryMin
			continue
		}
		in.a.Log.Info("downloads wait to be tried again", "after", backoff)
		retry.Reset(backoff)
		backoff = min(2*backoff, downloadRetryMax)
	}
}

// plainSize is about the plaintext size of an attachment from its blob's.
func plainSize(tr *localstore.Transfer) int64 { return tr.Size * 65536 / 65552 }

// Download downloads tr over cn, saves it to dst (or, if empty, a new
// file in the profile's files directory) and records the outcome: done
// with its path, or failed with a sentence (damaged, gone). It returns
// the error too; a lost connection leaves tr pending, with its progress.
func (in *Inbox) Download(ctx context.Context, cn *relayclient.Conn, tr *localstore.Transfer, dst string, ev Events) error {
	if dst == "" {
		dst = transfer.FreeName(filepath.Join(in.a.Home, transfer.FilesDir), tr.Name)
	}
	save := func(tr *localstore.Transfer) {
		// Recorded even as ctx ends (the connection was lost, the Sync
		// stopped): the next attempt resumes from it.
		if err := in.a.Store.Update(context.WithoutCancel(ctx), func(tx *localstore.Tx) error { return tx.PutTransfer(tr) }); err != nil {
			in.a.Log.Warn("record download", "err", err)
		}
	}
	err := transfer.Download(ctx, in.a.Home, cn, tr, tr.SHA256, dst, func(done int64) {
		tr.Done = done
		save(tr)
		if ev.Transfer != nil {
			ev.Transfer(tr.ID, false, done, tr.Size)
		}
	})
	pending := in.a.Now().Sub(time.UnixMilli(tr.Received)) < uploadGrace
	if errors.Is(err, transfer.ErrGone) && pending {
		err = transfer.ErrNotYet // the sender's upload may not have started
	}
	if errors.Is(err, transfer.ErrNotYet) && !pending {
		err = transfer.ErrExpired // its sender never finished the upload
	}
	switch {
	case errors.Is(err, transfer.ErrNotYet):
		return err // still pending: tried again later
	case err == nil:
		tr.State, tr.Path, tr.Done, tr.Err = localstore.TransferDone, dst, tr.Size, ""
	case errors.Is(err, transfer.ErrCorrupt):
		tr.State, tr.Err = localstore.TransferFailed, fmt.Sprintf("%v; ferry save tries again", err)
	case errors.Is(err, transfer.ErrGone):
		tr.State, tr.Err = localstore.TransferFailed, err.Error()+" (attachments are kept 30 days)"
	case errors.Is(err, transfer.ErrExpired):
		tr.State, tr.Err = localstore.TransferFailed, err.Error()
	default:
		return err
	}
	save(tr)
	if ev.States != nil {
		ev.States()
	}
	return err
}

// upload resumes the pending uploads (docs/client.md section 9), telling
// ev how far they are.
func (in *Inbox) upload(ctx context.Context, ev Events) {
	var progress func(id [16]byte, done, total int64)
	if ev.Transfer != nil {
		progress = func(id [16]byte, done, total int64) { ev.Transfer(id, true, done, total) }
	}
	n, err := in.ob.Upload(ctx, [16]byte{}, progress)
	if err != nil && ctx.Err() == nil {
		in.a.Log.Info("upload stopped", "err", err)
	}
	if n > 0 && ev.States != nil {
		ev.States()
	}
}

// uploader runs upload whenever kick fires, until ctx ends.
func (in *Inbox) uploader(ctx context.Context, ev Events, kick <-chan struct{}) {
	for {
		select {
		case <-kick:
		case <-ctx.Done():
			return
		}
		in.upload(ctx, ev)
	}
}
