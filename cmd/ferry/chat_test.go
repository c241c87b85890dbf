package main

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	tea "charm.land/bubbletea/v2"

	"github.com/ferry-im/ferry"
)

// fakeChat is an in-memory chatClient.
type fakeChat struct {
	mu       sync.Mutex
	contacts []string
	msgs     map[string][]*ferry.Message
	shown    int
	sendErr  error
}

func (f *fakeChat) Name() string { return "me" }

func (f *fakeChat) Contacts(context.Context) ([]ferry.Contact, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []ferry.Contact
	for _, n := range f.contacts {
		out = append(out, ferry.Contact{Name: n})
	}
	return out, nil
}

func (f *fakeChat) Messages(_ context.Context, q ferry.Query) ([]*ferry.Message, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	ms := f.msgs[q.Contact]
	if q.Last > 0 && len(ms) > q.Last {
		ms = ms[len(ms)-q.Last:]
	}
	return ms, nil
}

func (f *fakeChat) Send(_ context.Context, to, text string) (*ferry.Message, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.sendErr != nil {
		return nil, f.sendErr
	}
	m := &ferry.Message{Contact: to, Outgoing: true, Text: text, State: ferry.StateSent, Sent: time.Now()}
	f.msgs[to] = append(f.msgs[to], m)
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

func TestChatModel(t *testing.T) {
	f := &fakeChat{contacts: []string{"alice", "bob"}, msgs: map[string][]*ferry.Message{
		"alice": {{Contact: "alice", Text: "hi from alice", State: ferry.StateDelivered, Sent: time.Now()}},
		"bob":   {{Contact: "bob", Text: "hi from bob", State: ferry.StateDelivered, Sent: time.Now()}},
	}}
	m := newChatModel(context.Background(), f)
	drive(t, m, tea.WindowSizeMsg{Width: 80, Height: 12})
	view := m.View().Content
	for _, want := range []string{"> alice", "  bob", "alice: hi from alice", "Ferry - me"} {
		if !strings.Contains(view, want) {
			t.Fatalf("view lacks %q:\n%s", want, view)
		}
	}
	if f.shown != 1 {
		t.Fatalf("shown %d messages, want 1 (alice's, now on screen)", f.shown)
	}
	// Down selects bob's conversation.
	drive(t, m, tea.KeyPressMsg{Code: tea.KeyDown})
	if view = m.View().Content; !strings.Contains(view, "bob: hi from bob") || !strings.Contains(view, "> bob") {
		t.Fatalf("after Down:\n%s", view)
	}
	// Typing and Enter send to bob.
	typeText(t, m, "hello bob")
	if !strings.Contains(m.View().Content, "> hello bob_") {
		t.Fatalf("input line not shown:\n%s", m.View().Content)
	}
	drive(t, m, tea.KeyPressMsg{Code: tea.KeyBackspace})
	typeText(t, m, "B")
	drive(t, m, tea.KeyPressMsg{Code: tea.KeyEnter})
	if got := f.msgs["bob"]; len(got) != 2 || got[1].Text != "hello boB" {
		t.Fatalf("sent: %+v", got)
	}
	view = m.View().Content
	if !strings.Contains(view, "me: hello boB (sent)") || !strings.Contains(view, "sent to bob") {
		t.Fatalf("after send:\n%s", view)
	}
	// An unreachable relay is reported, the input is not lost silently.
	f.sendErr = ferry.ErrQueued
	typeText(t, m, "later")
	drive(t, m, tea.KeyPressMsg{Code: tea.KeyEnter})
	if !strings.Contains(m.View().Content, "outbox") {
		t.Fatalf("queued send not reported:\n%s", m.View().Content)
	}
	// A refresh (new message from the background sync) shows it.
	f.mu.Lock()
	f.msgs["bob"] = append(f.msgs["bob"], &ferry.Message{Contact: "bob", Text: "new one", Sent: time.Now()})
	f.mu.Unlock()
	drive(t, m, refreshMsg{})
	if !strings.Contains(m.View().Content, "bob: new one") {
		t.Fatalf("refresh did not show the new message:\n%s", m.View().Content)
	}
	// A long message wraps instead of being cut.
	long := strings.Repeat("word ", 30) + "END"
	f.mu.Lock()
	f.msgs["bob"] = append(f.msgs["bob"], &ferry.Message{Contact: "bob", Text: long, Sent: time.Now()})
	f.mu.Unlock()
	drive(t, m, refreshMsg{})
	if v := m.View().Content; !strings.Contains(v, "END") {
		t.Fatalf("long message cut:\n%s", v)
	}
	for _, line := range strings.Split(m.View().Content, "\n") {
		if n := len([]rune(line)); n > 80 {
			t.Fatalf("line of %d runes wider than the terminal: %q", n, line)
		}
	}
	if !drive(t, m, tea.KeyPressMsg{Code: tea.KeyEscape}) {
		t.Fatal("Esc did not quit")
	}
}

func TestChatModelNoContacts(t *testing.T) {
	m := newChatModel(context.Background(), &fakeChat{msgs: map[string][]*ferry.Message{}})
	drive(t, m, tea.WindowSizeMsg{Width: 80, Height: 10})
	typeText(t, m, "x")
	drive(t, m, tea.KeyPressMsg{Code: tea.KeyEnter})
	if v := m.View().Content; !strings.Contains(v, "No contacts yet") || !strings.Contains(v, "ferry add") {
		t.Fatalf("view:\n%s", v)
	}
}

func TestSanitize(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{"plain text", "plain text"},
		{"two\nlines", `two\nlines`},
		{"tab\there", "tab here"},
		{"\x1b[2Jclear", `\x1b[2Jclear`},
		{"bell\a", `bell\x07`},
		{"rtl\u202eevil", `rtl\u202eevil`},
		{"c1\u009bcsi", `c1\u009bcsi`},
		{"你好 🌍", "你好 🌍"},
	} {
		if got := sanitize(tt.in); got != tt.want {
			t.Errorf("sanitize(%q): got %q, want %q", tt.in, got, tt.want)
		}
	}
}
