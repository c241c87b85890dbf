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
	Conversations(ctx context.Context) ([]ferry.Conversation, error)
	Messages(ctx context.Context, q ferry.Query) ([]*ferry.Message, error)
	Send(ctx context.Context, conv ferry.ConversationID, text string) (*ferry.Message, error)
	MarkShown(ctx context.Context, msgs []*ferry.Message) error
	Queued(ctx context.Context) (int, error)
}

var _ chatClient = (*ferry.Client)(nil)

// Messages of the chat model.
type (
	// refreshMsg asks the model to reload conversations and messages.
	refreshMsg struct{}
	// loadedMsg carries what a reload read.
	loadedMsg struct {
		convs  []ferry.Conversation
		conv   ferry.ConversationID // whose messages msgs are
		msgs   []*ferry.Message
		queued int
		err    error
	}
	// sentMsg reports a Send.
	sentMsg struct {
		to  string
		err error
	}
	// connMsg reports the background connection's state.
	connMsg struct{ online bool }
	// routeMsg reports a change of transport, said once in the status.
	routeMsg struct{ r ferry.Route }
	// transferMsg reports how far an upload or download is.
	transferMsg struct{ p ferry.Progress }
)

// pageMessages is how many more messages scrolling back loads at a time.
const pageMessages = 100

// chatModel is the terminal chat: the conversation list (with unread
// counts) on the left, the selected conversation on the right, an input
// line and a status line at the bottom. Up/Down (or Ctrl+P/Ctrl+N) choose
// the conversation, PgUp/PgDn scroll its history, Enter sends the input
// line, Esc or Ctrl+C quits. Each conversation keeps its own draft.
type chatModel struct {
	ctx    context.Context
	c      chatClient
	convs  []ferry.Conversation
	sel    int
	msgs   []*ferry.Message
	limit  int // messages loaded for the selected conversation
	scroll int // lines scrolled up from the newest
	drafts map[ferry.ConversationID][]rune
	status string
	// waiting is set while the status says a message waits in the
	// outbox; a reload that finds the outbox empty clears it.
	waiting bool
	online  bool
	width   int
	height  int
	// progress is how far each transfer under way is, by message id.
	progress map[[16]byte]ferry.Progress
}

func newChatModel(ctx context.Context, c chatClient) *chatModel {
	return &chatModel{
		ctx: ctx, c: c, width: 80, height: 24, limit: pageMessages, drafts: make(map[ferry.ConversationID][]rune),
		progress: make(map[[16]byte]ferry.Progress),
		status:   "Up/Down: conversation  PgUp/PgDn: scroll  Enter: send  Esc: quit",
	}
}

func (m *chatModel) Init() tea.Cmd { return m.load() }

// selected returns the selected conversation, if any.
func (m *chatModel) selected() (ferry.Conversation, bool) {
	if m.sel >= 0 && m.sel < len(m.convs) {
		return m.convs[m.sel], true
	}
	return ferry.Conversation{}, false
}

// load reads the conversations and the selected one's last messages,
// marking the incoming ones shown (which sends read receipts).
func (m *chatModel) load() tea.Cmd {
	cur, _ := m.selected()
	limit := m.limit
	return func() tea.Msg {
		var l loadedMsg
		var err error
		if l.convs, err = m.c.Conversations(m.ctx); err != nil {
			return loadedMsg{err: err}
		}
		if cur.ID == 0 && len(l.convs) > 0 {
			cur = l.convs[0]
		}
		if l.queued, err = m.c.Queued(m.ctx); err != nil {
			return loadedMsg{err: err}
		}
		if cur.ID == 0 {
			return l
		}
		l.conv = cur.ID
		if l.msgs, err = m.c.Messages(m.ctx, ferry.Query{Conversation: cur.ID, Last: limit}); err != nil {
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
		return m, nil
	case routeMsg:
		m.status = routeText(msg.r)
		return m, nil
	case loadedMsg:
		m.loaded(msg)
		return m, nil
	case sentMsg:
		m.sent(msg)
		return m, m.load()
	case tea.KeyPressMsg:
		return m.key(msg)
	case transferMsg:
		if msg.p.Done >= msg.p.Total {
			delete(m.progress, msg.p.Message)
			return m, m.load()
		}
		m.progress[msg.p.Message] = msg.p
	}
	return m, nil
}

func (m *chatModel) loaded(l loadedMsg) {
	if l.err != nil {
		m.status = "error: " + l.err.Error()
		return
	}
	cur, _ := m.selected()
	m.convs = l.convs
	m.sel = 0
	for i, c := range m.convs {
		if c.ID == cur.ID {
			m.sel = i
		}
	}
	if now, ok := m.selected(); ok && now.ID == l.conv {
		m.msgs = l.msgs
	}
	if m.waiting && l.queued == 0 {
		m.waiting = false
		m.status = "the waiting messages were delivered"
	}
}

func (m *chatModel) sent(s sentMsg) {
	switch {
	case s.err == nil:
		m.status, m.waiting = "sent to "+s.to, false
	case errors.Is(s.err, ferry.ErrQueued):
		m.status, m.waiting = "relay unreachable: the message waits in the outbox and goes when the relay is back", true
	default:
		m.status = "error: " + s.err.Error()
	}
}

// choose selects conversation i, keeping the drafts apart.
func (m *chatModel) choose(i int) (tea.Model, tea.Cmd) {
	if i < 0 || i >= len(m.convs) || i == m.sel {
		return m, nil
	}
	m.sel, m.msgs, m.scroll, m.limit = i, nil, 0, pageMessages
	return m, m.load()
}

func (m *chatModel) key(k tea.KeyPressMsg) (tea.Model, tea.Cmd) {
	conv, ok := m.selected()
	switch k.String() {
	case "ctrl+c", "esc":
		return m, tea.Quit
	case "up", "ctrl+p":
		return m.choose(m.sel - 1)
	case "down", "ctrl+n":
		return m.choose(m.sel + 1)
	case "pgup":
		return m.scrollBy(m.rows() - 1)
	case "pgdown":
		return m.scrollBy(-(m.rows() - 1))
	case "end":
		m.scroll = 0
		return m, nil
	case "backspace":
		if d := m.drafts[conv.ID]; len(d) > 0 {
			m.drafts[conv.ID] = d[:len(d)-1]
		}
		return m, nil
	case "enter":
		return m.send(conv, ok)
	}
	if k.Text != "" && utf8.ValidString(k.Text) && len(m.drafts[conv.ID]) < ferry.MaxText/4 {
		m.drafts[conv.ID] = append(m.drafts[conv.ID], []rune(k.Text)...)
	}
	return m, nil
}

func (m *chatModel) send(conv ferry.Conversation, ok bool) (tea.Model, tea.Cmd) {
	text := strings.TrimSpace(string(m.drafts[conv.ID]))
	if text == "" {
		return m, nil
	}
	if !ok {
		m.status = "no contact yet: run ferry add LINK or share ferry invite"
		return m, nil
	}
	delete(m.drafts, conv.ID)
	m.scroll = 0
	m.status = "sending..."
	return m, func() tea.Msg {
		_, err := m.c.Send(m.ctx, conv.ID, text)
		return sentMsg{to: conv.Name, err: err}
	}
}

// scrollBy scrolls the history by n lines (up if positive), loading older
// messages when the view reaches the oldest one loaded.
func (m *chatModel) scrollBy(n int) (tea.Model, tea.Cmd) {
	lines := len(m.lines())
	m.scroll = max(0, min(m.scroll+n, lines-m.rows()))
	if n > 0 && m.scroll >= lines-m.rows() && len(m.msgs) >= m.limit {
		m.limit += pageMessages
		return m, m.load()
	}
	return m, nil
}

const listWidth = 22

func (m *chatModel) rows() int { return max(m.height-4, 1) }

// lines renders the selected conversation, wrapped to the pane's width.
func (m *chatModel) lines() []string {
	w := max(m.width, listWidth+20) - listWidth - 2
	var out []string
	for _, msg := range m.msgs {
		who, mark := msg.From, ""
		switch {
		case msg.Kind == ferry.KindNotice:
			who = "* ferry"
		case msg.Outgoing:
			who, mark = "me", " "+stateMark(msg.State)
		}
		for i, text := range strings.Split(m.text(msg), "\n") {
			line := "  " + sanitize(text)
			if i == 0 {
				line = fmt.Sprintf("%s %s: %s", msg.Sent.Local().Format("15:04"), sanitize(who), sanitize(text))
			}
			out = append(out, wrap(line, w)...)
		}
		out[len(out)-1] += mark
	}
	return out
}

// text is what the chat shows of a message: an attachment as its
// summary, a voice note's waveform as bars, and a transfer under way with
// how far it is.
func (m *chatModel) text(msg *ferry.Message) string {
	a, ok := msg.Body.(*ferry.Attachment)
	if !ok {
		return msg.Text()
	}
	s := a.Summary()
	if a.Voice && len(a.Waveform) > 0 {
		s += " " + bars(a.Waveform, 16)
	}
	if len(a.Thumb) > 0 {
		s += " (has a thumbnail)"
	}
	if p, ok := m.progress[msg.ID]; ok && p.Total > 0 {
		verb := "downloading"
		if p.Outgoing {
			verb = "uploading"
		}
		s += fmt.Sprintf(" %s %d%%", verb, p.Done*100/p.Total)
	}
	return s
}

// bars draws levels (0-255) as n block characters.
func bars(levels []byte, n int) string {
	const blocks = "▁▂▃▄▅▆▇█"
	r := []rune(blocks)
	var b strings.Builder
	for i := range n {
		lo, hi := i*len(levels)/n, max((i+1)*len(levels)/n, i*len(levels)/n+1)
		peak := 0
		for _, v := range levels[lo:min(hi, len(levels))] {
			peak = max(peak, int(v))
		}
		b.WriteRune(r[peak*(len(r)-1)/255])
	}
	return b.String()
}

func (m *chatModel) View() tea.View {
	var b strings.Builder
	w := max(m.width, listWidth+20)
	rows := m.rows()
	conn := "offline"
	if m.online {
		conn = "online"
	}
	b.WriteString(fit(fmt.Sprintf(" Ferry - %s (%s)", m.c.Name(), conn), w) + "\n")
	right := m.lines()
	end := len(right) - m.scroll
	right = right[max(0, end-rows):max(0, end)]
	if len(m.convs) == 0 {
		right = []string{"No contacts yet. Share `ferry invite` or run `ferry add LINK`."}
	}
	for i := range rows {
		left := ""
		if i < len(m.convs) {
			left = m.listEntry(i)
		}
		r := ""
		if i < len(right) {
			r = right[i]
		}
		b.WriteString(fit(left, listWidth) + "| " + fit(r, w-listWidth-2) + "\n")
	}
	b.WriteString(strings.Repeat("-", listWidth) + "+" + strings.Repeat("-", w-listWidth-1) + "\n")
	conv, _ := m.selected()
	b.WriteString(fit("> "+string(m.drafts[conv.ID])+"_", w) + "\n")
	status := m.status
	if m.scroll > 0 {
		status = fmt.Sprintf("(scrolled back %d lines; End: newest) %s", m.scroll, status)
	}
	b.WriteString(fit(" "+status, w))
	v := tea.NewView(b.String())
	v.AltScreen = true
	return v
}

// listEntry is conversation i in the list: the cursor, the name and the
// unread count of the others.
func (m *chatModel) listEntry(i int) string {
	c := m.convs[i]
	cursor := "  "
	if i == m.sel {
		cursor = "> "
	}
	name := sanitize(c.Name)
	if c.Kind == ferry.Group {
		name = "# " + name
	}
	if c.Unread > 0 && i != m.sel {
		count := fmt.Sprintf(" (%d)", c.Unread)
		return cursor + fit(name, listWidth-len(cursor)-len(count)-1) + count
	}
	return cursor + name
}

func stateMark(s ferry.State) string {
	if s == 0 {
		return ""
	}
	return "(" + s.String() + ")"
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
	return e.with(fs, args, 0, func(c *ferry.Client, _ []string) error {
		ctx, cancel := context.WithCancel(e.ctx)
		defer cancel()
		m := newChatModel(ctx, c)
		p := tea.NewProgram(m, tea.WithContext(ctx), tea.WithInput(e.stdin), tea.WithOutput(e.stdout))
		// The background connection: receives messages, contacts and
		// receipts, and tells the UI to refresh. It is owned here: cancelled
		// and waited for before returning.
		var wg sync.WaitGroup
		wg.Go(func() { background(ctx, c, p) })
		_, err := p.Run()
		cancel()
		wg.Wait()
		if errors.Is(err, tea.ErrProgramKilled) || errors.Is(err, context.Canceled) {
			return nil
		}
		return err
	})
}

// background keeps the chat's Sync running until ctx ends.
func background(ctx context.Context, c *ferry.Client, p *tea.Program) {
	refresh := func() { p.Send(refreshMsg{}) }
	for ctx.Err() == nil {
		c.Sync(ctx, ferry.SyncOptions{
			Wait:       10 * 365 * 24 * time.Hour,
			OnMessages: func([]*ferry.Message) { refresh() },
			OnContact:  func(ferry.Contact) { refresh() },
			OnState:    refresh,
			OnOnline:   func(on bool) { p.Send(connMsg{online: on}) },
			OnRoute:    func(r ferry.Route) { p.Send(routeMsg{r}) },
			OnTransfer: func(pr ferry.Progress) { p.Send(transferMsg{pr}) },
		})
		select {
		case <-time.After(2 * time.Second):
		case <-ctx.Done():
		}
	}
}
