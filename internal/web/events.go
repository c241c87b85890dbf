package web

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/ferry-im/ferry"
)

// hub fans the server's events out to the pages listening
// (GET /api/events, server-sent events).
type hub struct {
	mu     sync.Mutex // mu protects subs and closed
	subs   map[chan event]struct{}
	closed bool
}

type event struct {
	name string
	data []byte
}

func newHub() *hub { return &hub{subs: make(map[chan event]struct{})} }

// publish sends an event to every page; a page too slow to take it is
// told to reload everything instead.
func (h *hub) publish(name string, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	for ch := range h.subs {
		select {
		case ch <- event{name, b}:
		default:
			select {
			case ch <- event{"changed", []byte("{}")}:
			default:
			}
		}
	}
}

func (h *hub) subscribe() (chan event, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return nil, false
	}
	ch := make(chan event, 64)
	h.subs[ch] = struct{}{}
	return ch, true
}

func (h *hub) unsubscribe(ch chan event) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, ok := h.subs[ch]; ok {
		delete(h.subs, ch)
		close(ch)
	}
}

// close ends every page's stream.
func (h *hub) close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.closed = true
	for ch := range h.subs {
		delete(h.subs, ch)
		close(ch)
	}
}

// changedJSON says which conversations changed (none listed: maybe all).
type changedJSON struct {
	Conversations []int64 `json:"conversations,omitempty"`
}

// notifyJSON is a new incoming message, for the page's notifications.
type notifyJSON struct {
	Conversation int64  `json:"conversation"`
	Name         string `json:"name"`
	Text         string `json:"text"`
}

type typingJSON struct {
	Conversation int64  `json:"conversation"`
	Contact      int64  `json:"contact"`
	Name         string `json:"name"`
	Typing       bool   `json:"typing"`
}

func (s *Server) handleEvents(w http.ResponseWriter, r *http.Request) {
	fl, ok := w.(http.Flusher)
	if !ok {
		http.Error(w, "streaming unsupported", http.StatusInternalServerError)
		return
	}
	ch, ok := s.hub.subscribe()
	if !ok {
		http.Error(w, "shutting down", http.StatusServiceUnavailable)
		return
	}
	defer s.hub.unsubscribe(ch)
	w.Header().Set("Content-Type", "text/event-stream")
	w.WriteHeader(http.StatusOK)
	fmt.Fprint(w, "retry: 1000\n\n")
	fl.Flush()
	keep := time.NewTicker(15 * time.Second)
	defer keep.Stop()
	for {
		select {
		case ev, ok := <-ch:
			if !ok {
				return
			}
			fmt.Fprintf(w, "event: %s\ndata: %s\n\n", ev.name, ev.data)
		case <-keep.C:
			fmt.Fprint(w, ": keep-alive\n\n")
		case <-r.Context().Done():
			return
		}
		fl.Flush()
	}
}

// syncLoop keeps the profile connected to its relay once it exists,
// telling the pages what arrives and how the connection is.
func (s *Server) syncLoop(ctx context.Context) error {
	select {
	case <-s.started:
	case <-ctx.Done():
		return nil
	}
	c := s.clientOrNil()
	wait := s.cfg.Wait
	if wait <= 0 {
		wait = time.Hour
	}
	opts := ferry.SyncOptions{
		Wait:       wait,
		OnMessages: s.onMessages,
		OnContact:  func(ferry.Contact) { s.hub.publish("changed", changedJSON{}) },
		OnState:    func() { s.hub.publish("changed", changedJSON{}) },
		OnChanged:  func(ids []ferry.ConversationID) { s.hub.publish("changed", changedJSON{Conversations: convIDs(ids)}) },
		OnTyping: func(ts []ferry.TypingEvent) {
			names := map[ferry.ContactID]string{}
			if ks, err := c.Contacts(ctx); err == nil {
				for _, k := range ks {
					names[k.ID] = k.Name
				}
			}
			for _, t := range ts {
				s.hub.publish("typing", typingJSON{int64(t.Conversation), int64(t.Contact), names[t.Contact], t.Typing})
			}
		},
		OnTransfer: func(p ferry.Progress) {
			s.hub.publish("transfer", transferJSON{hex.EncodeToString(p.Message[:]), p.Outgoing, p.Done, p.Total})
			if p.Done >= p.Total {
				// A download that finished changes how its message shows.
				s.hub.publish("changed", changedJSON{})
			}
		},
		OnStatus: func(st ferry.Status) {
			js := toStatus(st)
			s.mu.Lock()
			s.status = js
			s.mu.Unlock()
			s.hub.publish("status", js)
		},
	}
	for ctx.Err() == nil {
		if err := c.Sync(ctx, opts); err != nil && ctx.Err() == nil {
			s.log.Warn("sync stopped; starting again", "err", err)
			select {
			case <-time.After(time.Second):
			case <-ctx.Done():
			}
		}
	}
	return nil
}

func (s *Server) onMessages(ms []*ferry.Message) {
	var ids []int64
	for _, m := range ms {
		ids = append(ids, int64(m.Conversation))
		if !m.Outgoing && m.Kind != ferry.KindTimer {
			name := m.ConversationName
			if m.Kind == ferry.KindNotice {
				name = "Ferry"
			}
			s.hub.publish("message", notifyJSON{Conversation: int64(m.Conversation), Name: name, Text: m.Text()})
		}
	}
	s.hub.publish("changed", changedJSON{Conversations: ids})
}

func convIDs(ids []ferry.ConversationID) []int64 {
	out := make([]int64, len(ids))
	for i, id := range ids {
		out[i] = int64(id)
	}
	return out
}

// pollLoop deletes messages whose timer ran out, and notices changes that
// other processes (a ferry command in a terminal) made to the profile.
func (s *Server) pollLoop(ctx context.Context) error {
	every := s.cfg.Poll
	if every <= 0 {
		every = time.Second
	}
	t := time.NewTicker(every)
	defer t.Stop()
	var last int64
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		c := s.clientOrNil()
		if c == nil {
			continue
		}
		if gone, _, err := c.Expire(ctx); err == nil && len(gone) > 0 {
			s.hub.publish("changed", changedJSON{Conversations: convIDs(gone)})
		}
		v, err := c.ChangedElsewhere(ctx)
		if err == nil && v != last {
			if last != 0 {
				s.hub.publish("changed", changedJSON{})
			}
			last = v
		}
	}
}
