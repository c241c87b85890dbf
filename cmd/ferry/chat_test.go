package main

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	tea "charm.land/bubbletea/v2"

	"github.com/ferry-im/ferry"
)

// fakeChat is an in-memory chatClient.
type fakeChat struct {
	mu      sync.Mutex
	convs   []ferry.Conversation
	msgs    map[ferry.ConversationID][]*ferry.Message
	shown   int
	queued  int
	sendErr error
}

func newFakeChat(names ...string) *fakeChat {
	f := &fakeChat{msgs: map[ferry.ConversationID][]*ferry.Message{}}
	for i, n := range names {
		f.convs = append(f.convs, ferry.Conversation{ID: ferry.ConversationID(i + 1), Name: n, Kind: ferry.Direct})
	}
	return f
}

// add appends an incoming message from the conversation's contact.
func (f *fakeChat) add(conv ferry.ConversationID, text string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	name := f.convs[conv-1].Name
	f.msgs[conv] = append(f.msgs[conv], &ferry.Message{Conversation: conv, ConversationName: name, From: name,
		Kind: ferry.KindText, Body: &ferry.Text{Text: text}, State: ferry.StateDelivered, Sent: time.Now()})
}

func (f *fakeChat) Name() string { return "me" }

func (f *fakeChat) Conversations(context.Context) ([]ferry.Conversation, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := append([]ferry.Conversation(nil), f.convs...)
	for i := range out {
		out[i].Unread = 0
		for _, m := range f.msgs[out[i].ID] {
			if !m.Outgoing && m.State < ferry.StateRead {
				out[i].Unread++
			}
		}
	}
	return out, nil
}

func (f *fakeChat) Messages(_ context.Context, q ferry.Query) ([]*ferry.Message, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	ms := f.msgs[q.Conversation]
	if q.Last > 0 && len(ms) > q.Last {
		ms = ms[len(ms)-q.Last:]
	}
	return ms, nil
}

func (f *fakeChat) Send(_ context.Context, conv ferry.ConversationID, text string) (*ferry.Message, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.sendErr != nil {
		f.queued++
		return nil, f.sendErr
	}
	m := &ferry.Message{Conversation: conv, Outgoing: true, Kind: ferry.KindText, Body: &ferry.Text{Text: text}, State: ferry.StateSent, Sent: time.Now()}
	f.msgs[conv] = append(f.msgs[conv], m)
	return m, nil
}

func (f *fakeChat) MarkShown(_ context.Context, ms []*ferry.Message) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, m := range ms {
		m.State = ferry.StateRead
		f.shown++
	}
	return nil
}

func (f *fakeChat) Queued(context.Context) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.queued, nil
}

// drive feeds msg to the model and runs the commands it returns (and
// theirs) synchronously, as the bubbletea runtime would.
func drive(t *testing.T, m *chatModel, msg tea.Msg) bool {
	t.Helper()
	queue := []tea.Msg{msg}
	for len(queue) > 0 {
		next := queue[0]
		queue = queue[1:]
		_, cmd := m.Update(next)
		if cmd == nil {
			continue
		}
		out := cmd()
		if _, quit := out.(tea.QuitMsg); quit {
			return true
		}
		if out != nil {
			queue = append(queue, out)
		}
	}
	return false
}

func typeText(t *testing.T, m *chatModel, s string) {
	for _, r := range s {
		drive(t, m, tea.KeyPressMsg{Code: r, Text: string(r)})
	}
}

func view(m *chatModel) string { return m.View().Content }

// shows fails unless the view contains every one of want.
func shows(t *testing.T, m *chatModel, what string, want ...string) {
	t.Helper()
	v := view(m)
	for _, w := range want {
		if !strings.Contains(v, w) {
			t.Fatalf("%s: the view lacks %q:\n%s", what, w, v)
		}
	}
}

// model returns a chat model over f, on an 80x12 terminal.
func model(t *testing.T, f *fakeChat) *chatModel {
	m := newChatModel(context.Background(), f)
	drive(t, m, tea.WindowSizeMsg{Width: 80, Height: 12})
	return m
}

func TestChatModel(t *testing.T) {
	f := newFakeChat("alice", "bob")
	f.add(1, "hi from alice")
	f.add(2, "hi from bob")
	m := model(t, f)
	for _, want := range []string{"> alice", "  bob", "alice: hi from alice", "Ferry - me"} {
		if !strings.Contains(view(m), want) {
			t.Fatalf("view lacks %q:\n%s", want, view(m))
		}
	}
	if f.shown != 1 {
		t.Fatalf("shown %d messages, want 1 (alice's, now on screen)", f.shown)
	}
	// Down selects bob's conversation.
	drive(t, m, tea.KeyPressMsg{Code: tea.KeyDown})
	if v := view(m); !strings.Contains(v, "bob: hi from bob") || !strings.Contains(v, "> bob") {
		t.Fatalf("after Down:\n%s", v)
	}
	typeText(t, m, "hello bob")
	if !strings.Contains(view(m), "> hello bob_") {
		t.Fatalf("input line not shown:\n%s", view(m))
	}
	drive(t, m, tea.KeyPressMsg{Code: tea.KeyBackspace})
	typeText(t, m, "B")
	drive(t, m, tea.KeyPressMsg{Code: tea.KeyEnter})
	if got := f.msgs[2]; len(got) != 2 || got[1].Text() != "hello boB" {
		t.Fatalf("sent: %+v", got)
	}
	if v := view(m); !strings.Contains(v, "me: hello boB (sent)") || !strings.Contains(v, "sent to bob") {
		t.Fatalf("after send:\n%s", v)
	}
	// A refresh (new message from the background sync) shows it.
	f.add(2, "new one")
	drive(t, m, refreshMsg{})
	if !strings.Contains(view(m), "bob: new one") {
		t.Fatalf("refresh did not show the new message:\n%s", view(m))
	}
	for _, line := range strings.Split(view(m), "\n") {
		if n := len([]rune(line)); n > 80 {
			t.Fatalf("line of %d runes wider than the terminal: %q", n, line)
		}
	}
	if !drive(t, m, tea.KeyPressMsg{Code: tea.KeyEscape}) {
		t.Fatal("Esc did not quit")
	}
}

// TestChatUnreadAndDrafts: other conversations show how many messages wait
// unread, and a half-typed draft stays with its conversation (a new user
// saw it follow them to another contact).
func TestChatUnreadAndDrafts(t *testing.T) {
	f := newFakeChat("alice", "bob")
	m := model(t, f)
	f.add(2, "one")
	f.add(2, "two")
	drive(t, m, refreshMsg{})
	if v := view(m); !strings.Contains(v, "bob             (2)") || !strings.Contains(v, "> alice ") || strings.Contains(v, "alice (") {
		t.Fatalf("unread marker:\n%s", v)
	}
	typeText(t, m, "half a thou")
	drive(t, m, tea.KeyPressMsg{Code: tea.KeyDown})
	if v := view(m); strings.Contains(v, "half a thou") || strings.Contains(v, "(2)") {
		t.Fatalf("in bob's conversation, alice's draft shows or bob's unread count stays:\n%s", v)
	}
	typeText(t, m, "for bob")
	drive(t, m, tea.KeyPressMsg{Code: tea.KeyUp})
	shows(t, m, "back with alice", "> half a thou_")
	drive(t, m, tea.KeyPressMsg{Code: tea.KeyDown})
	shows(t, m, "back with bob", "> for bob_")
}

// TestChatScrollback: one long message no longer hides the history: PgUp
// scrolls back to it, loading older messages as needed, and End returns.
func TestChatScrollback(t *testing.T) {
	f := newFakeChat("bob")
	f.add(1, "the very first message")
	// Pages of older messages, then one message longer than the pane.
	for i := range 2 * pageMessages {
		f.add(1, fmt.Sprint("filler ", i))
	}
	f.add(1, strings.Repeat("long words ", 200)+"END")
	m := model(t, f)
	if v := view(m); !strings.Contains(v, "END") || strings.Contains(v, "filler") {
		t.Fatalf("the newest lines should fill the pane:\n%s", v)
	}
	for i := 0; i < 500 && !strings.Contains(view(m), "the very first message"); i++ {
		drive(t, m, tea.KeyPressMsg{Code: tea.KeyPgUp})
	}
	shows(t, m, "after PgUp", "the very first message", "scrolled back")
	drive(t, m, tea.KeyPressMsg{Code: tea.KeyEnd})
	shows(t, m, "after End", "END")
}

// TestChatStatusClears: "relay unreachable" goes once the outbox is
// delivered (a new user saw it stay after delivery).
func TestChatStatusClears(t *testing.T) {
	f := newFakeChat("bob")
	f.sendErr = ferry.ErrQueued
	m := model(t, f)
	typeText(t, m, "later")
	drive(t, m, tea.KeyPressMsg{Code: tea.KeyEnter})
	if !strings.Contains(view(m), "relay unreachable") {
		t.Fatalf("queued send not reported:\n%s", view(m))
	}
	drive(t, m, refreshMsg{})
	if !strings.Contains(view(m), "relay unreachable") {
		t.Fatalf("the status cleared while the message still waits:\n%s", view(m))
	}
	f.mu.Lock()
	f.queued = 0
	f.mu.Unlock()
	drive(t, m, refreshMsg{})
	if v := view(m); strings.Contains(v, "relay unreachable") || !strings.Contains(v, "delivered") {
		t.Fatalf("the status stayed after delivery:\n%s", v)
	}
}

func TestChatModelNoContacts(t *testing.T) {
	m := newChatModel(context.Background(), newFakeChat())
	drive(t, m, tea.WindowSizeMsg{Width: 80, Height: 10})
	typeText(t, m, "x")
	drive(t, m, tea.KeyPressMsg{Code: tea.KeyEnter})
	if v := view(m); !strings.Contains(v, "No contacts yet") || !strings.Contains(v, "ferry add") {
		t.Fatalf("view:\n%s", v)
	}
}

func TestSanitize(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{"plain text", "plain text"},
		{"tab\there", "tab here"},
		{"\x1b[2Jclear", `\x1b[2Jclear`},
		{"bell\a", `bell\x07`},
		{"rtl\u202eevil", `rtl\u202eevil`},
		{"c1\u009bcsi", `c1\u009bcsi`},
		{"你好 🌍", "你好 🌍"},
		// Emoji joined by zero-width joiners, and a tag sequence, print as
		// they are (a new user saw escapes).
		{"👩\u200d👩\u200d👧", "👩\u200d👩\u200d👧"},
		{"🏴\U000e0067\U000e0062\U000e0065\U000e006e\U000e0067\U000e007f", "🏴\U000e0067\U000e0062\U000e0065\U000e006e\U000e0067\U000e007f"},
		{"می\u200cخواهم", "می\u200cخواهم"},
	} {
		if got := sanitize(tt.in); got != tt.want {
			t.Errorf("sanitize(%q): got %q, want %q", tt.in, got, tt.want)
		}
	}
}

// TestPlain: a text of several lines prints as indented lines below its
// first (a new user saw \n escapes), so no line of it can pass for a
// message of its own; a notice is marked as Ferry's.
func TestPlain(t *testing.T) {
	at := time.Date(2026, 11, 1, 12, 0, 0, 0, time.Local)
	msg := &ferry.Message{From: "bob", Sent: at, Kind: ferry.KindText, Body: &ferry.Text{Text: "first\n2026-11-01 12:00:00 alice: forged"}}
	want := "2026-11-01 12:00:00 bob: first\n                      2026-11-01 12:00:00 alice: forged\n"
	if got := plain(msg); got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
	notice := &ferry.Message{Sent: at, Kind: ferry.KindNotice, Body: &ferry.Notice{Text: "bob accepted your invite."}}
	if got := plain(notice); got != "2026-11-01 12:00:00 [ferry] bob accepted your invite.\n" {
		t.Fatalf("notice: got %q", got)
	}
}

// TestChatAttachments: the chat shows a group with its mark, an
// attachment by its name, a voice note with its waveform, and a transfer
// under way with how far it is.
func TestChatAttachments(t *testing.T) {
	m := newChatModel(context.Background(), newFakeChat("bob"))
	m.convs = []ferry.Conversation{{ID: 1, Kind: ferry.Direct, Name: "bob"}, {ID: 2, Kind: ferry.Group, Name: "family"}}
	if got := m.listEntry(1); !strings.Contains(got, "# family") {
		t.Errorf("group entry %q", got)
	}
	photo := &ferry.Message{ID: [16]byte{1}, Kind: ferry.KindAttachment, Body: &ferry.Attachment{Name: "cat.jpg", Type: "image/jpeg", Size: 1 << 20,
		Thumb: []byte{1}, Transfer: ferry.TransferPending}}
	voice := &ferry.Message{ID: [16]byte{2}, Kind: ferry.KindAttachment, Body: &ferry.Attachment{Voice: true, Size: 9000,
		Duration: 4 * time.Second, Waveform: []byte{0, 0, 255, 255, 128, 128, 0, 0}, Transfer: ferry.TransferDone}}
	drive(t, m, transferMsg{ferry.Progress{Message: [16]byte{1}, Done: 1 << 19, Total: 1 << 20}})
	if got := m.text(photo); !strings.Contains(got, "[photo cat.jpg, 1 MB") || !strings.Contains(got, "downloading 50%") {
		t.Errorf("photo: %q", got)
	}
	if got := m.text(voice); !strings.Contains(got, "[voice note 0:04") || !strings.Contains(got, "▁▁▁▁████▄▄▄▄▁▁▁▁") {
		t.Errorf("voice: %q", got)
	}
}
