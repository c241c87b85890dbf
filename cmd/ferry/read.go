package main

import (
	"bufio"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"
	"unicode"

	"github.com/ferry-im/ferry"
)

// jsonMessage is one line of ferry read --json.
type jsonMessage struct {
	ID           string          `json:"id"`
	Kind         string          `json:"kind"` // text, reply, notice, attachment, timer, deleted or unsupported
	Conversation string          `json:"conversation"`
	From         string          `json:"from"` // "" for a notice
	To           string          `json:"to"`
	Sent         string          `json:"sent"`
	Received     string          `json:"received,omitempty"`
	Text         string          `json:"text"`
	Group        string          `json:"group,omitempty"` // the group's name, for a message in a group
	Outgoing     bool            `json:"outgoing"`
	State        string          `json:"state"`
	Attachment   *jsonAttachment `json:"attachment,omitempty"`
	// The conversation features (docs/client.md section 6).
	ReplyTo   string         `json:"reply_to,omitempty"` // the quoted message's id
	Edited    bool           `json:"edited,omitempty"`
	Reactions []jsonReaction `json:"reactions,omitempty"`
	Expires   string         `json:"expires,omitempty"`
}

// jsonAttachment describes an attachment in ferry read --json.
type jsonAttachment struct {
	Name       string `json:"name"`
	Type       string `json:"type"`
	Size       int64  `json:"size"`
	SHA256     string `json:"sha256"`
	Path       string `json:"path,omitempty"` // once downloaded (or the file sent)
	Transfer   string `json:"transfer"`       // pending, done or failed
	Error      string `json:"error,omitempty"`
	Voice      bool   `json:"voice,omitempty"`
	DurationMS int64  `json:"duration_ms,omitempty"`
	Waveform   []int  `json:"waveform,omitempty"`
	Thumbnail  bool   `json:"thumbnail,omitempty"`
}

var kindNames = map[ferry.Kind]string{ferry.KindText: "text", ferry.KindNotice: "notice", ferry.KindUnsupported: "unsupported",
	ferry.KindAttachment: "attachment", ferry.KindReply: "reply", ferry.KindTimer: "timer", ferry.KindDeleted: "deleted"}

func cmdRead(e *env, args []string) error {
	fs := e.flags("read")
	wait := fs.Duration("wait", 0, "stay connected this long, printing messages as they arrive")
	asJSON := fs.Bool("json", false, "print one JSON object per line")
	all := fs.Bool("all", false, "print the whole history")
	return e.with(fs, args, 0, func(c *ferry.Client, _ []string) error {
		p := &printer{w: bufio.NewWriter(e.stdout), me: c.Name(), json: *asJSON}
		// showUnread prints what arrived since the last read and marks it
		// shown (which sends read receipts).
		showUnread := func() error {
			ms, err := c.Messages(e.ctx, ferry.Query{Unread: true})
			if err != nil || len(ms) == 0 {
				return err
			}
			if err := p.print(e.ctx, c, ms); err != nil {
				return err
			}
			return c.MarkShown(e.ctx, ms)
		}
		syncErr := c.Sync(e.ctx, ferry.SyncOptions{OnTransfer: transferBars(e)})
		if *all {
			ms, err := c.Messages(e.ctx, ferry.Query{})
			if err == nil {
				err = p.print(e.ctx, c, ms)
			}
			if err == nil {
				err = c.MarkShown(e.ctx, ms)
			}
			if err != nil {
				return err
			}
		} else if err := showUnread(); err != nil {
			return err
		}
		if *wait > 0 {
			return readWait(e, c, *wait, showUnread)
		}
		if errors.Is(syncErr, ferry.ErrUnreachable) {
			return &fail{exitUnreachable, "showing only the messages already received: " + why(syncErr)}
		}
		return syncErr
	})
}

// readWait stays connected for wait, printing messages as they arrive.
func readWait(e *env, c *ferry.Client, wait time.Duration, showUnread func() error) error {
	var cbErr error
	err := c.Sync(e.ctx, ferry.SyncOptions{Wait: wait, OnMessages: func([]*ferry.Message) {
		if err := showUnread(); err != nil && cbErr == nil {
			cbErr = err
		}
	}})
	if errors.Is(err, context.Canceled) {
		// Interrupted (Ctrl-C): the usual way to end a long wait.
		return cbErr
	}
	if err == nil {
		err = cbErr
	}
	if err == nil {
		err = showUnread()
	}
	return err
}

// printer prints messages, plain or as JSON lines.
type printer struct {
	w    *bufio.Writer
	me   string
	json bool
}

// print prints ms; a message in a group is marked with the group's name.
func (p *printer) print(ctx context.Context, c *ferry.Client, ms []*ferry.Message) error {
	convs, err := c.Conversations(ctx)
	if err != nil {
		return err
	}
	groups := make(map[ferry.ConversationID]bool)
	for _, cv := range convs {
		groups[cv.ID] = cv.Kind == ferry.Group
	}
	for _, m := range ms {
		group := ""
		if groups[m.Conversation] {
			group = m.ConversationName
		}
		if p.json {
			p.printJSON(m, group)
		} else {
			io.WriteString(p.w, plainIn(m, group))
		}
	}
	return p.w.Flush()
}

func (p *printer) printJSON(m *ferry.Message, group string) {
	from, to := m.From, p.me
	if m.Outgoing {
		from, to = p.me, m.ConversationName
	}
	j := jsonMessage{ID: m.IDString(), Kind: kindNames[m.Kind], Conversation: m.ConversationName, From: from, To: to,
		Sent: m.Sent.UTC().Format(time.RFC3339Nano), Text: m.Text(), Outgoing: m.Outgoing, State: m.State.String(), Group: group}
	if a, ok := m.Body.(*ferry.Attachment); ok {
		j.Attachment = &jsonAttachment{Name: a.Name, Type: a.Type, Size: a.Size, SHA256: hex.EncodeToString(a.SHA256[:]),
			Path: a.Path, Transfer: a.Transfer.String(), Error: a.Err, Voice: a.Voice, DurationMS: a.Duration.Milliseconds(),
			Thumbnail: len(a.Thumb) > 0}
		for _, v := range a.Waveform {
			j.Attachment.Waveform = append(j.Attachment.Waveform, int(v))
		}
	}
	if !m.Received.IsZero() {
		j.Received = m.Received.UTC().Format(time.RFC3339Nano)
	}
	featuresJSON(&j, m, p.me)
	b, _ := json.Marshal(j)
	p.w.Write(append(b, '\n'))
}

// plain formats one message for a terminal:
//
//	2026-11-01 12:00:00 bob: text         a contact's message
//	2026-11-01 12:00:00 me -> bob: text   the user's own
//	2026-11-01 12:00:00 [ferry] text      a notice from Ferry itself
//
// A text of several lines goes on, indented, on the lines below, so that
// no text can pass for a line of its own.
func plain(m *ferry.Message) string { return plainIn(m, "") }

// plainIn is plain for a message in the group called group (none if
// empty), whose name leads in brackets:
//
//	2026-11-01 12:00:00 [family] bob: text
//	2026-11-01 12:00:00 [family] me: text
//	2026-11-01 12:00:00 [family] [ferry] alice added dave.
func plainIn(m *ferry.Message, group string) string {
	head := m.Sent.Local().Format("2006-01-02 15:04:05") + " "
	if group != "" {
		head += "[" + sanitize(group) + "] "
	}
	switch {
	case m.Kind == ferry.KindNotice:
		head += "[ferry] "
	case m.Outgoing && group != "":
		head += "me: "
	case m.Outgoing:
		head += "me -> " + sanitize(m.ConversationName) + ": "
	default:
		head += sanitize(m.From) + ": "
	}
	text := featuresPlain(m)
	if m.Outgoing && m.State == ferry.StateFailed {
		text += " [failed]"
	}
	if a, ok := m.Body.(*ferry.Attachment); ok && a.Path != "" && a.Transfer == ferry.TransferDone {
		text += " " + a.Path
	}
	lines := strings.Split(text, "\n")
	var b strings.Builder
	b.WriteString(head + sanitize(lines[0]) + "\n")
	indent := strings.Repeat(" ", len("2006-01-02 15:04:05 ")+2)
	for _, l := range lines[1:] {
		b.WriteString(indent + sanitize(l) + "\n")
	}
	return b.String()
}

// sanitize makes one line of text safe to print on a terminal: a contact
// must not be able to send escape sequences that move the cursor, retitle
// the window or rewrite earlier lines, nor reorder the line with bidi
// overrides. Tabs become a space, and every control or format character
// becomes a \x or \u escape, except those that emoji and scripts need to
// join letters: the zero-width joiner and non-joiner and the emoji tag
// characters.
func sanitize(text string) string {
	var b strings.Builder
	for _, r := range text {
		switch {
		case r == '\t':
			b.WriteByte(' ')
		case r < 0x20 || r == 0x7f:
			fmt.Fprintf(&b, `\x%02x`, r)
		case r == 0x200c || r == 0x200d || (r >= 0xe0020 && r <= 0xe007f):
			b.WriteRune(r)
		case unicode.IsControl(r) || unicode.Is(unicode.Cf, r):
			fmt.Fprintf(&b, `\u%04x`, r)
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}
