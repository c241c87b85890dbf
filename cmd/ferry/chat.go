package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	tea "charm.land/bubbletea/v2"

	"github.com/ferry-im/ferry"
)

// chatClient is what the chat UI needs of a *ferry.Client.
type chatClient interface {
	Name() string
	Contacts(ctx context.Context) ([]ferry.Contact, error)
	Messages(ctx context.Context, q ferry.Query) ([]*ferry.Message, error)
	Send(ctx context.Context, contact, text string) (*ferry.Message, error)
	MarkShown(ctx context.Context, msgs []*ferry.Message) error
}

var _ chatClient = (*ferry.Client)(nil)

// Messages of the chat model.
type (
	// refreshMsg asks the model to reload contacts and the conversation.
	refreshMsg struct{}
	// loadedMsg carries what a reload read.
	loadedMsg struct {
		contacts []string
		msgs     []*ferry.Message
		err      error
	}
	// sentMsg reports a Send.
	sentMsg struct {
		to  string
		err error
	}
	// connMsg reports the background connection's state.
	connMsg struct{ online bool }
)

// chatModel is the terminal chat: a conversation list on the left, the
// selected conversation on the right, an input line and a status line at
// the bottom. Up/Down (or Ctrl+P/Ctrl+N) choose the conversation, Enter
// sends the input line, Esc or Ctrl+C quits.
type chatModel struct {
	ctx      context.Context
	c        chatClient
	contacts []string
	sel      int
	msgs     []*ferry.Message
	input    []rune
	status   string
	online   bool
	width    int
	height   int
}

func newChatModel(ctx context.Context, c chatClient) *chatModel {
	return &chatModel{ctx: ctx, c: c, width: 80, height: 24, status: "Up/Down: conversation  Enter: send  Esc: quit"}
}

func (m *chatModel) Init() tea.Cmd { return m.load() }

// selected returns the selected contact's name, or "".
func (m *chatModel) selected() string {
	if m.sel >= 0 && m.sel < len(m.contacts) {
		return m.contacts[m.sel]
	}
	return ""
}

// load reads contacts and the selected conversation, marking incoming
// messages shown (which sends read receipts).
func (m *chatModel) load() tea.Cmd {
	sel := m.selected()
	rows := max(m.height-4, 1)
	return func() tea.Msg {
		var l loadedMsg
		ks, err := m.c.Contacts(m.ctx)
		if err != nil {
			return loadedMsg{err: err}
		}
		for _, k := range ks {
			l.contacts = append(l.contacts, k.Name)
		}
		if sel == "" && len(l.contacts) > 0 {
			sel = l.contacts[0]
		}
		if sel != "" {
			if l.msgs, err = m.c.Messages(m.ctx, ferry.Query{Contact: sel, Last: rows}); err != nil {
				return loadedMsg{err: err}
			}
			var unread []*ferry.Message
			for _, msg := range l.msgs {
				if !msg.Outgoing && msg.State < ferry.StateRead {
					unread = append(unread, msg)
				}
			}
			if len(unread) > 0 {
				l.err = m.c.MarkShown(m.ctx, unread)
			}
		}
		return l
	}
}

func (m *chatModel) Update(msg tea.Msg) (tea.Model, tea.Cmd) {
	switch msg := msg.(type) {
	case tea.WindowSizeMsg:
		m.width, m.height = msg.Width, msg.Height
		return m, m.load()
	case refreshMsg:
		return m, m.load()
	case connMsg:
		m.online = msg.online
		if !msg.online {
			m.status = "offline: messages wait in the outbox"
		}
		return m, nil
	case loadedMsg:
		if msg.err != nil {
			m.status = "error: " + msg.err.Error()
			return m, nil
		}
		cur := m.selected()
		m.contacts = msg.contacts
		m.sel = 0
		for i, n := range m.contacts {
			if n == cur {
				m.sel = i
			}
		}
		if m.selected() == cur || cur == "" {
			m.msgs = msg.msgs
		}
		return m, nil
	case sentMsg:
		switch {
		case msg.err == nil:
			m.status = "sent to " + msg.to
		case errors.Is(msg.err, ferry.ErrQueued):
			m.status = "relay unreachable: the message waits in the outbox"
		default:
			m.status = "error: " + msg.err.Error()
		}
		return m, m.load()
	case tea.KeyPressMsg:
		return m.key(msg)
	}
	return m, nil
}

func (m *chatModel) key(k tea.KeyPressMsg) (tea.Model, tea.Cmd) {
	switch k.String() {
	case "ctrl+c", "esc":
		return m, tea.Quit
	case "up", "ctrl+p":
		if m.sel > 0 {
			m.sel--
			m.msgs = nil
			return m, m.load()
		}
		return m, nil
	case "down", "ctrl+n":
		if m.sel < len(m.contacts)-1 {
			m.sel++
			m.msgs = nil
			return m, m.load()
		}
		return m, nil
	case "backspace":
		if len(m.input) > 0 {
			m.input = m.input[:len(m.input)-1]
		}
		return m, nil
	case "enter":
		text := strings.TrimSpace(string(m.input))
		to := m.selected()
		if text == "" {
			return m, nil
		}
		if to == "" {
			m.status = "no contact yet: run ferry add LINK or share ferry invite"
			return m, nil
		}
		m.input = nil
		m.status = "sending..."
		return m, func() tea.Msg {
			_, err := m.c.Send(m.ctx, to, text)
			return sentMsg{to: to, err: err}
		}
	}
	if k.Text != "" && utf8.ValidString(k.Text) && len(m.input) < ferry.MaxText/4 {
		m.input = append(m.input, []rune(k.Text)...)
	}
	return m, nil
}

const listWidth = 18

func (m *chatModel) View() tea.View {
	var b strings.Builder
	w := max(m.width, listWidth+20)
	rows := max(m.height-4, 1)
	title := fmt.Sprintf(" Ferry - %s", m.c.Name())
	b.WriteString(fit(title, w) + "\n")
	// Left: contacts; right: the conversation's last rows messages.
	var right []string
	for _, msg := range m.msgs {
		who := msg.Contact
		mark := ""
		if msg.Outgoing {
			who = "me"
			mark = " " + stateMark(msg.State)
		}
		line := fmt.Sprintf("%s %s: %s%s", msg.Sent.Local().Format("15:04"), who, sanitize(msg.Text), mark)
		right = append(right, wrap(line, w-listWidth-2)...)
	}
	if len(right) > rows {
		right = right[len(right)-rows:]
	}
	if len(m.contacts) == 0 {
		right = []string{"No contacts yet. Share `ferry invite` or run `ferry add LINK`."}
	}
	for i := range rows {
		left := ""
		if i < len(m.contacts) {
			cursor := "  "
			if i == m.sel {
				cursor = "> "
			}
			left = cursor + m.contacts[i]
		}
		r := ""
		if i < len(right) {
			r = right[i]
		}
		b.WriteString(fit(left, listWidth) + "| " + fit(r, w-listWidth-2) + "\n")
	}
	b.WriteString(strings.Repeat("-", listWidth) + "+" + strings.Repeat("-", w-listWidth-1) + "\n")
	b.WriteString(fit("> "+string(m.input)+"_", w) + "\n")
	b.WriteString(fit(" "+m.status, w))
	v := tea.NewView(b.String())
	v.AltScreen = true
	return v
}

func stateMark(s ferry.State) string {
	switch s {
	case ferry.StateQueued:
		return "(queued)"
	case ferry.StateSent:
		return "(sent)"
	case ferry.StateDelivered:
		return "(delivered)"
	case ferry.StateRead:
		return "(read)"
	case ferry.StateFailed:
		return "(failed)"
	}
	return ""
}

// wrap cuts s into lines of at most n runes, continuation lines indented.
func wrap(s string, n int) []string {
	r := []rune(s)
	if n < 8 || len(r) <= n {
		return []string{s}
	}
	out := []string{string(r[:n])}
	for r = r[n:]; len(r) > 0; {
		k := min(len(r), n-2)
		out = append(out, "  "+string(r[:k]))
		r = r[k:]
	}
	return out
}

// fit pads or cuts s to exactly n runes.
func fit(s string, n int) string {
	r := []rune(s)
	if len(r) > n {
		return string(r[:n])
	}
	return s + strings.Repeat(" ", n-len(r))
}

func cmdChat(e *env, args []string) error {
	fs := e.flags("chat")
	if _, err := parse(fs, args, 0, ""); err != nil {
		return err
	}
	c, err := e.open()
	if err != nil {
		return err
	}
	defer c.Close()
	ctx, cancel := context.WithCancel(e.ctx)
	defer cancel()
	m := newChatModel(ctx, c)
	p := tea.NewProgram(m, tea.WithContext(ctx), tea.WithInput(e.stdin), tea.WithOutput(e.stdout))
	// The background connection: receives messages, contacts and
	// receipts, and tells the UI to refresh. It is owned here: cancelled
	// and waited for before returning.
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		refresh := func() { p.Send(refreshMsg{}) }
		for ctx.Err() == nil {
			err := c.Sync(ctx, ferry.SyncOptions{
				Wait:       10 * 365 * 24 * time.Hour,
				OnMessages: func([]*ferry.Message) { refresh() },
				OnContact:  func(string) { refresh() },
				OnState:    refresh,
			})
			if ctx.Err() != nil {
				return
			}
			if err != nil {
				p.Send(connMsg{online: false})
			}
			select {
			case <-time.After(2 * time.Second):
			case <-ctx.Done():
			}
		}
	}()
	_, err = p.Run()
	cancel()
	wg.Wait()
	if errors.Is(err, tea.ErrProgramKilled) || errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}
