package web

import (
	"encoding/hex"
	"errors"
	"strings"
	"time"

	"github.com/ferry-im/ferry"
)

// messageJSON is one message as the page gets it. Times are Unix
// milliseconds.
type messageJSON struct {
	ID           string         `json:"id"`
	Seq          int64          `json:"seq"`
	Conversation int64          `json:"conversation"`
	Kind         string         `json:"kind"` // text, reply, notice, timer, deleted, unsupported
	From         string         `json:"from"`
	Outgoing     bool           `json:"outgoing"`
	Sent         int64          `json:"sent"`
	Received     int64          `json:"received,omitempty"`
	State        string         `json:"state"`
	Text         string         `json:"text"`
	Edited       bool           `json:"edited,omitempty"`
	Reactions    []reactionJSON `json:"reactions,omitempty"`
	Quote        *quoteJSON     `json:"quote,omitempty"`
	Timer        int64          `json:"timer,omitempty"` // seconds
	Expires      int64          `json:"expires,omitempty"`
	// Editable is set for the user's own texts and replies still within
	// the edit window.
	Editable   bool            `json:"editable,omitempty"`
	Attachment *attachmentJSON `json:"attachment,omitempty"`
}

type reactionJSON struct {
	Emoji string `json:"emoji"`
	From  string `json:"from"`
	Mine  bool   `json:"mine"`
}

type quoteJSON struct {
	ID      string `json:"id"`
	Missing bool   `json:"missing,omitempty"`
	From    string `json:"from,omitempty"`
	Mine    bool   `json:"mine,omitempty"`
	Text    string `json:"text,omitempty"`
}

var kindNames = map[ferry.Kind]string{
	ferry.KindText: "text", ferry.KindReply: "reply", ferry.KindNotice: "notice", ferry.KindTimer: "timer",
	ferry.KindDeleted: "deleted", ferry.KindUnsupported: "unsupported", ferry.KindAttachment: "attachment",
}

func millis(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}

func toMessage(m *ferry.Message) *messageJSON {
	out := &messageJSON{
		ID: m.IDString(), Seq: m.Seq, Conversation: int64(m.Conversation), Kind: kindNames[m.Kind], From: m.From,
		Outgoing: m.Outgoing, Sent: millis(m.Sent), Received: millis(m.Received), State: m.State.String(), Text: m.Text(),
		Edited: m.Edited, Timer: int64(m.Timer / time.Second), Expires: millis(m.Expires),
	}
	if out.Kind == "" {
		out.Kind = "unsupported"
	}
	for _, r := range m.Reactions {
		out.Reactions = append(out.Reactions, reactionJSON{Emoji: r.Emoji, From: r.From, Mine: r.Outgoing})
	}
	if r, ok := m.Body.(*ferry.Reply); ok {
		out.Quote = &quoteJSON{ID: hex.EncodeToString(r.Quote.ID[:]), Missing: r.Quote.Missing, From: r.Quote.From, Mine: r.Quote.Outgoing, Text: r.Quote.Text}
	}
	if a, ok := m.Body.(*ferry.Attachment); ok {
		out.Attachment = toAttachment(a)
	}
	out.Editable = m.Outgoing && (m.Kind == ferry.KindText || m.Kind == ferry.KindReply) && time.Since(m.Sent) < ferry.EditWindow
	return out
}

// statusJSON is the connection's status as the page shows it in its
// banner.
type statusJSON struct {
	Known     bool     `json:"known"` // false until the first connection attempt ends
	Online    bool     `json:"online"`
	Transport string   `json:"transport,omitempty"`
	Reason    string   `json:"reason,omitempty"` // why the relay cannot be reached, in plain words
	Retry     int64    `json:"retry,omitempty"`  // when the next attempt starts (Unix ms)
	Failures  int      `json:"failures,omitempty"`
	Trying    []string `json:"trying,omitempty"`
	Ranked    bool     `json:"ranked,omitempty"` // the order is the monitor's ranking
}

func toStatus(st ferry.Status) statusJSON {
	out := statusJSON{Known: true, Online: st.Online, Transport: st.Transport, Failures: st.Failures, Trying: st.Trying, Ranked: st.Ranked, Retry: millis(st.Retry)}
	if !st.Online {
		out.Reason = reason(st.Err)
	}
	return out
}

// reason says in plain words why the relay could not be reached.
func reason(err error) string {
	var de *ferry.DialError
	if errors.As(err, &de) {
		return sentence(de.Error())
	}
	return "The connection to your relay was lost."
}

// sentence makes s a sentence: a capital first letter and a full stop.
func sentence(s string) string {
	s = strings.TrimSpace(s)
	if s == "" {
		return s
	}
	s = strings.ToUpper(s[:1]) + s[1:]
	if !strings.HasSuffix(s, ".") {
		s += "."
	}
	return s
}
