package ferry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/ferry-im/ferry/internal/content"
	"github.com/ferry-im/ferry/internal/inbox"
	"github.com/ferry-im/ferry/internal/localstore"
	"github.com/ferry-im/ferry/internal/media"
	"github.com/ferry-im/ferry/internal/outbox"
	"github.com/ferry-im/ferry/internal/relayclient"
	"github.com/ferry-im/ferry/internal/transfer"
	"github.com/ferry-im/ferry/internal/voice"
)

// MaxAttachment is the largest file SendFile sends (relays take up to 4
// GiB by default).
const MaxAttachment = 4 << 30

// DefaultAutoDownload is how large an attachment may be for Sync to
// download it by itself, until SetAutoDownload says otherwise.
const DefaultAutoDownload = inbox.DefaultAutoDownload

// Errors callers branch on.
var (
	// ErrCorrupt means a downloaded attachment failed its checks: it was
	// damaged or cut short on the way. Nothing was saved; trying again
	// downloads it anew.
	ErrCorrupt = transfer.ErrCorrupt
	// ErrGone means the relay no longer has an attachment (it expired
	// after 30 days, or its sender never finished the upload).
	ErrGone = transfer.ErrGone
	// ErrNotVoice means a voice note is not an Ogg Opus file.
	ErrNotVoice = voice.ErrNotOpus
)

// Progress is how far a transfer is.
type Progress struct {
	// Message is the id of the message carrying the attachment.
	Message [16]byte
	// Outgoing is set for an upload.
	Outgoing bool
	// Done and Total are bytes of the encrypted blob.
	Done, Total int64
}

// SendFileOptions configure SendFile. The zero value sends a file.
type SendFileOptions struct {
	// Voice sends the file as a voice note: it must be Ogg Opus, and its
	// duration and waveform go with it.
	Voice bool
	// Name, if set, is the name the recipient sees instead of the file's.
	Name string
	// Progress, if set, is told how far the upload is, from SendFile's
	// goroutine.
	Progress func(Progress)
}

// SendFile sends the file at path to a conversation as an attachment: it
// encrypts it (once) into the profile, queues the message that announces
// it, uploads the blob to the recipient's relay and then delivers the
// message, resuming from what the relay has after a lost connection. It
// returns once the message is at the relay, or ErrQueued if the relay
// could not be reached: the upload and the message stay queued, and a
// later Send, Flush or Sync resumes them where they stopped.
func (c *Client) SendFile(ctx context.Context, conv ConversationID, path string, opts SendFileOptions) (*Message, error) {
	f, size, err := openAttachment(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	att, err := describe(ctx, f, path, opts)
	if err != nil {
		return nil, err
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return nil, fmt.Errorf("cannot read %s: %v", path, err)
	}
	prep, err := transfer.Prepare(c.a.Home, c.a.Rand, f, path)
	if err != nil {
		return nil, err
	}
	if prep.Size != size {
		os.Remove(filepath.Join(c.a.Home, prep.Transfer.Source))
		return nil, fmt.Errorf("%s changed while it was read; send it again", path)
	}
	att.Pointer, att.Blob, att.SHA256 = prep.Pointer, prep.Transfer.Blob, prep.SHA256
	var msg *Message
	err = c.a.Store.Update(ctx, func(tx *localstore.Tx) (err error) {
		msg, err = c.queueAttachment(tx, conv, att, prep.Transfer)
		return err
	})
	if err != nil {
		os.Remove(filepath.Join(c.a.Home, prep.Transfer.Source))
		return nil, err
	}
	return msg, c.deliver(ctx, msg, opts.Progress)
}

// openAttachment opens a file to send, saying in one sentence why not.
func openAttachment(path string) (*os.File, int64, error) {
	st, err := os.Stat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil, 0, fmt.Errorf("there is no file %s", path)
	case err != nil:
		return nil, 0, fmt.Errorf("cannot read %s: %v", path, errors.Unwrap(err))
	case st.IsDir():
		return nil, 0, fmt.Errorf("%s is a directory; send the files in it one by one, or an archive of it", path)
	case st.Size() > MaxAttachment:
		return nil, 0, fmt.Errorf("%s is %s, over the limit of %s", path, humanBytes(st.Size()), humanBytes(MaxAttachment))
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, 0, fmt.Errorf("cannot read %s: %v", path, errors.Unwrap(err))
	}
	return f, st.Size(), nil
}

// describe makes the attachment's description: type, name, thumbnail,
// and for a voice note its duration and waveform.
func describe(ctx context.Context, f *os.File, path string, opts SendFileOptions) (*content.Attachment, error) {
	head := make([]byte, 512)
	n, _ := io.ReadFull(f, head)
	att := &content.Attachment{Name: filepath.Base(path)}
	if opts.Name != "" {
		att.Name = opts.Name
	}
	if !content.ValidName(att.Name) {
		return nil, fmt.Errorf("the name %q cannot be sent: use at most 255 bytes without control characters or slashes", att.Name)
	}
	att.Type = media.Type(path, head[:n])
	if opts.Voice {
		if _, err := f.Seek(0, io.SeekStart); err != nil {
			return nil, err
		}
		note, err := voice.Parse(f)
		if err != nil {
			return nil, fmt.Errorf("%s is not an Ogg Opus voice note (%v); record one with ferry send --record, or convert it with ffmpeg -i IN -c:a libopus OUT.ogg", path, err)
		}
		att.Type, att.Voice, att.Waveform = "audio/ogg", true, note.Waveform
		att.Duration = uint32(min(note.Duration.Milliseconds(), 1<<32-1))
		return att, nil
	}
	att.Thumb = media.Thumbnail(ctx, path, att.Type)
	return att, nil
}

// queueAttachment seals att for conv's contact, queues it and stores the
// message and its transfer, uploading to the contact's relay and mailbox.
func (c *Client) queueAttachment(tx *localstore.Tx, id ConversationID, att *content.Attachment, tr *localstore.Transfer) (*Message, error) {
	conv, err := conversation(tx, id)
	if err != nil {
		return nil, err
	}
	if conv.Kind == localstore.Group {
		return c.queueGroupAttachment(tx, conv, att, tr)
	}
	k, s, n, err := c.direct(tx, conv)
	if err != nil {
		return nil, err
	}
	msgID, err := c.a.NewID()
	if err != nil {
		return nil, err
	}
	att.N = n + 1
	now := c.a.Now()
	if err := c.a.Seal(tx, k, s, &content.Content{ID: msgID, Sent: now.UnixMilli(), Body: att}); err != nil {
		return nil, err
	}
	body, err := content.EncodeBody(att)
	if err != nil {
		return nil, err
	}
	m := &localstore.Message{ID: msgID, Conversation: conv.ID, Sender: localstore.SenderSelf, Sent: time.UnixMilli(now.UnixMilli()),
		State: localstore.Queued, Kind: int(content.KindAttachment), Body: body, N: att.N}
	if _, err := tx.InsertMessage(m); err != nil {
		return nil, err
	}
	tr.ID = msgID
	tr.Targets = []localstore.Target{{Relay: k.RelayLink, Mailbox: [16]byte(k.Mailbox), Token: [32]byte(k.Token)}}
	if err := tx.PutTransfer(tr); err != nil {
		return nil, err
	}
	if err := tx.SetCounter(conv.ID, localstore.SenderSelf, att.N); err != nil {
		return nil, err
	}
	if err := saveContactSession(tx, k, s); err != nil {
		return nil, err
	}
	names := &names{contacts: map[int64]*localstore.Contact{k.ID: k}, byID: map[int64]*localstore.Conversation{conv.ID: conv},
		transfers: map[[16]byte]*localstore.Transfer{msgID: tr}}
	return names.message(m), nil
}

// queueGroupAttachment sends att to a group: the blob goes once to each
// relay the members use (charged to the first member's mailbox there),
// the message once to all.
func (c *Client) queueGroupAttachment(tx *localstore.Tx, conv *localstore.Conversation, att *content.Attachment, tr *localstore.Transfer) (*Message, error) {
	g, sg, err := c.group(tx, ConversationID(conv.ID), false)
	if err != nil {
		return nil, err
	}
	m, err := c.sendGroup(tx, g, sg, att)
	if err != nil {
		return nil, err
	}
	if err := c.saveGroup(tx, g, sg); err != nil {
		return nil, err
	}
	tr.ID = m.ID
	for _, mb := range g.Members {
		if !slices.ContainsFunc(tr.Targets, func(t localstore.Target) bool { return t.Relay == mb.Relay }) {
			tr.Targets = append(tr.Targets, localstore.Target{Relay: mb.Relay, Mailbox: mb.Mailbox, Token: mb.Token})
		}
	}
	if len(tr.Targets) == 0 {
		tr.State = localstore.TransferDone
	}
	if err := tx.PutTransfer(tr); err != nil {
		return nil, err
	}
	names, err := loadNames(tx)
	if err != nil {
		return nil, err
	}
	names.transfers = map[[16]byte]*localstore.Transfer{m.ID: tr}
	return names.message(m), nil
}

// uploadPatience is how long deliver keeps retrying an upload that makes
// no progress before it leaves it queued.
const uploadPatience = 30 * time.Second

// deliver sends msg's envelope (the flush sends it at once, in order with
// what else is queued) and uploads its blob, retrying while the upload
// makes progress (a flaky path drops connections; each retry resumes
// where the relay is), and reports progress. It returns nil once both are
// at the relay.
func (c *Client) deliver(ctx context.Context, msg *Message, progress func(Progress)) error {
	var last int64
	report := func(id [16]byte, done, total int64) {
		last = max(last, done)
		if progress != nil {
			progress(Progress{Message: id, Outgoing: true, Done: done, Total: total})
		}
	}
	seen, since := int64(-1), time.Now()
	backoff := 100 * time.Millisecond
	for {
		if msg.State == StateQueued {
			res, err := c.ob.Flush(ctx)
			if err != nil {
				return err
			}
			if res.Sent[msg.ID] {
				msg.State = StateSent
			}
		}
		_, err := c.ob.Upload(ctx, msg.ID, report)
		switch {
		case errors.Is(err, outbox.ErrRefused):
			msg.State = StateFailed
			return errors.New(strings.TrimPrefix(err.Error(), outbox.ErrRefused.Error()+": "))
		case err == nil && msg.State == StateSent:
			if a, ok := msg.Body.(*Attachment); ok {
				a.Transfer = TransferDone
			}
			return nil
		case err != nil && !errors.Is(err, relayclient.ErrUnreachable):
			return err
		case errors.Is(err, relayclient.ErrBusy):
			return queued(err)
		}
		if last > seen {
			seen, since, backoff = last, time.Now(), 100*time.Millisecond
		}
		if time.Since(since) > uploadPatience {
			return queued(err)
		}
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
			return ctx.Err()
		}
		backoff = min(2*backoff, 2*time.Second)
	}
}

// humanBytes writes n bytes for people: 512 bytes, 1.5 MB, 4 GB.
func humanBytes(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.3g GB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.3g MB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.3g KB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d bytes", n)
}

// SetAutoDownload sets how large an attachment may be for Sync to
// download it by itself (0: none are; negative: back to the default,
// DefaultAutoDownload). The setting is kept in the profile.
func (c *Client) SetAutoDownload(ctx context.Context, n int64) error {
	return c.a.Store.Update(ctx, func(tx *localstore.Tx) error {
		if n < 0 {
			return tx.SetCursor(inbox.AutoDownloadKey, 0)
		}
		return tx.SetCursor(inbox.AutoDownloadKey, n+1)
	})
}

// AutoDownload returns the profile's auto-download size.
func (c *Client) AutoDownload(ctx context.Context) (int64, error) {
	var n int64
	err := c.a.Store.Update(ctx, func(tx *localstore.Tx) error {
		v, err := tx.Cursor(inbox.AutoDownloadKey)
		n = DefaultAutoDownload
		if v > 0 {
			n = v - 1
		}
		return err
	})
	return n, err
}

// Save writes the attachment of message id to path (a file, or a
// directory to put it in under its name): a copy of the saved file if it
// was downloaded already, else it is downloaded from the user's relay and
// checked first. The file at path appears only once whole and checked.
// It returns the path written.
func (c *Client) Save(ctx context.Context, id [16]byte, path string, progress func(Progress)) (string, error) {
	var tr *localstore.Transfer
	err := c.a.Store.Update(ctx, func(tx *localstore.Tx) (err error) { tr, err = tx.Transfer(id); return })
	if errors.Is(err, localstore.ErrNotFound) {
		return "", errors.New("no attachment has that message id; ferry read --json shows them")
	}
	if err != nil {
		return "", err
	}
	name := tr.Name
	if tr.Outgoing {
		name = filepath.Base(tr.Path)
	}
	if st, err := os.Stat(path); err == nil && st.IsDir() {
		path = transfer.FreeName(path, name)
	}
	if tr.State == localstore.TransferDone || tr.Outgoing {
		if err := copyFile(tr.Path, path); err != nil {
			return "", err
		}
		return path, nil
	}
	cn, err := c.a.Dialer.Dial(ctx, c.a.Relay, c.a.Device)
	if err != nil {
		return "", err
	}
	defer cn.Close()
	ev := inbox.Events{}
	if progress != nil {
		ev.Transfer = func(id [16]byte, _ bool, done, total int64) {
			progress(Progress{Message: id, Done: done, Total: total})
		}
	}
	if err := c.in.Download(ctx, cn, tr, path, ev); err != nil {
		return "", err
	}
	return path, nil
}

// copyFile copies src to dst through a temporary file beside dst.
func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("the file is gone from %s", src)
	}
	defer in.Close()
	tmp, err := os.CreateTemp(filepath.Dir(dst), "."+filepath.Base(dst)+".*.part")
	if err != nil {
		return fmt.Errorf("cannot write to %s: %v", filepath.Dir(dst), errors.Unwrap(err))
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	if _, err := io.Copy(tmp, in); err != nil {
		return fmt.Errorf("copy to %s: %w", dst, err)
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), dst)
}
