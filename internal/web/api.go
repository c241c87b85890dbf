package web

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/ferry-im/ferry"
)

// maxBody bounds a request body of the JSON API.
const maxBody = 256 << 10

// routes adds the JSON API to mux (docs/app.md section 3).
func (s *Server) routes(mux *http.ServeMux) {
	mux.HandleFunc("GET /api/state", s.handleState)
	mux.HandleFunc("GET /api/events", s.handleEvents)
	mux.HandleFunc("POST /api/init", s.handleInit)
	mux.HandleFunc("GET /api/messages", s.withClient(s.handleMessages))
	mux.HandleFunc("GET /api/safety", s.withClient(s.handleSafety))
	mux.HandleFunc("GET /api/file", s.handleFile)
	mux.HandleFunc("GET /api/groups", s.withClient(s.handleGroups))
	mux.HandleFunc("POST /api/upload", s.withClient(s.handleUpload))
	for path, h := range map[string]func(*ferry.Client, *http.Request) (any, error){
		"invite":      s.handleInvite,
		"accept":      s.handleAccept,
		"send":        s.handleSend,
		"read":        s.handleRead,
		"react":       s.handleReact,
		"edit":        s.handleEdit,
		"delete":      s.handleDelete,
		"timer":       s.handleTimer,
		"typing":      s.handleTyping,
		"settings":    s.handleSettings,
		"safety/scan": s.handleSafetyScan,
		"group":       s.handleGroup,
		"download":    s.handleDownload,
	} {
		mux.HandleFunc("POST /api/"+path, s.withClient(h))
	}
}

// apiError is an error with its HTTP status; its text is one sentence
// for the user.
type apiError struct {
	code int
	msg  string
}

func (e *apiError) Error() string { return e.msg }

func badRequest(format string, args ...any) error {
	return &apiError{http.StatusBadRequest, fmt.Sprintf(format, args...)}
}

// withClient runs h with the client, answering its result as JSON; a
// request before the onboarding is refused.
func (s *Server) withClient(h func(*ferry.Client, *http.Request) (any, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		c := s.clientOrNil()
		if c == nil {
			writeJSON(w, http.StatusConflict, map[string]string{"error": "create your profile first."})
			return
		}
		limit, want := int64(maxBody), "application/json"
		if r.URL.Path == "/api/upload" {
			limit, want = ferry.MaxAttachment, "application/octet-stream"
		}
		r.Body = http.MaxBytesReader(w, r.Body, limit)
		if r.Method == http.MethodPost && r.Header.Get("Content-Type") != want {
			writeJSON(w, http.StatusUnsupportedMediaType, map[string]string{"error": "send " + want + "."})
			return
		}
		v, err := h(c, r)
		s.answer(w, v, err)
		if err == nil || errors.Is(err, ferry.ErrQueued) {
			if r.Method == http.MethodPost {
				s.hub.publish("changed", changedJSON{})
			}
		}
	}
}

func (s *Server) answer(w http.ResponseWriter, v any, err error) {
	var ae *apiError
	switch {
	case err == nil:
		if v == nil {
			v = map[string]bool{"ok": true}
		}
		writeJSON(w, http.StatusOK, v)
	case errors.Is(err, ferry.ErrQueued):
		// Stored and queued: the outbox delivers it when the relay is back.
		writeJSON(w, http.StatusAccepted, map[string]any{"queued": true, "result": v,
			"note": "Not sent yet: Ferry cannot reach the relay. It waits on this device and goes out by itself when the relay is back."})
	case errors.As(err, &ae):
		writeJSON(w, ae.code, map[string]string{"error": sentence(ae.msg)})
	case errors.Is(err, ferry.ErrUnreachable):
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": reason(err)})
	case errors.Is(err, context.Canceled):
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": "Ferry is shutting down."})
	default:
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": sentence(err.Error())})
	}
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}

// decode reads a JSON request body into v.
func decode(r *http.Request, v any) error {
	d := json.NewDecoder(r.Body)
	d.DisallowUnknownFields()
	if err := d.Decode(v); err != nil {
		return badRequest("the request is malformed: %v", err)
	}
	return nil
}

// stateJSON is the app's overview (GET /api/state).
type stateJSON struct {
	Profile       *profileJSON       `json:"profile"`
	Relay         string             `json:"suggestedRelay,omitempty"`
	Conversations []conversationJSON `json:"conversations"`
	Status        statusJSON         `json:"status"`
	Typing        bool               `json:"typingIndicators"`
	Queued        int                `json:"queued"`
}

type profileJSON struct {
	Name  string `json:"name"`
	Relay string `json:"relay"`
}

type conversationJSON struct {
	ID      int64        `json:"id"`
	Kind    string       `json:"kind"`
	Name    string       `json:"name"`
	Contact int64        `json:"contact"`
	Status  string       `json:"status"`
	Unread  int          `json:"unread"`
	Timer   int64        `json:"timer"`
	Last    *messageJSON `json:"last"`
}

func (s *Server) handleState(w http.ResponseWriter, r *http.Request) {
	c := s.clientOrNil()
	st := stateJSON{Relay: s.cfg.Relay, Conversations: []conversationJSON{}}
	s.mu.Lock()
	st.Status = s.status
	s.mu.Unlock()
	if c == nil {
		writeJSON(w, http.StatusOK, st)
		return
	}
	err := func() error {
		st.Profile = &profileJSON{Name: c.Name(), Relay: c.RelayLink()}
		convs, err := c.Conversations(r.Context())
		if err != nil {
			return err
		}
		ks, err := c.Contacts(r.Context())
		if err != nil {
			return err
		}
		status := make(map[ferry.ContactID]string, len(ks))
		for _, k := range ks {
			status[k.ID] = k.Status.String()
			if k.Blocked {
				status[k.ID] = "blocked"
			}
		}
		for _, cv := range convs {
			kind := "direct"
			if cv.Kind == ferry.Group {
				kind = "group"
			}
			cj := conversationJSON{ID: int64(cv.ID), Kind: kind, Name: cv.Name, Contact: int64(cv.Contact), Status: status[cv.Contact],
				Unread: cv.Unread, Timer: int64(cv.Timer / time.Second)}
			if cv.Last != nil {
				cj.Last = toMessage(cv.Last)
			}
			st.Conversations = append(st.Conversations, cj)
		}
		if st.Typing, err = c.TypingIndicators(r.Context()); err != nil {
			return err
		}
		st.Queued, err = c.Queued(r.Context())
		return err
	}()
	if err != nil {
		s.answer(w, nil, err)
		return
	}
	writeJSON(w, http.StatusOK, st)
}

func (s *Server) handleInit(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Content-Type") != "application/json" {
		writeJSON(w, http.StatusUnsupportedMediaType, map[string]string{"error": "send JSON."})
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxBody)
	var req struct{ Name, Relay string }
	if err := decode(r, &req); err != nil {
		s.answer(w, nil, err)
		return
	}
	if s.clientOrNil() != nil {
		s.answer(w, nil, &apiError{http.StatusConflict, "this profile exists already"})
		return
	}
	c, err := ferry.Init(r.Context(), s.cfg.Profile, req.Relay, req.Name)
	if c == nil {
		s.answer(w, nil, err)
		return
	}
	s.setClient(c)
	s.hub.publish("changed", changedJSON{})
	if err != nil {
		// Made, but not registered yet: the sync registers it.
		writeJSON(w, http.StatusAccepted, map[string]any{"queued": true, "note": "Your profile is made. " + reason(err) + " Ferry keeps trying."})
		return
	}
	writeJSON(w, http.StatusOK, map[string]bool{"ok": true})
}

// convRequest names a conversation and, for some requests, a message.
type convRequest struct {
	Conversation int64  `json:"conversation"`
	Message      string `json:"message,omitempty"`
	Text         string `json:"text,omitempty"`
	Emoji        string `json:"emoji,omitempty"`
	Reply        string `json:"reply,omitempty"`
	Seconds      int64  `json:"seconds,omitempty"`
	On           bool   `json:"on,omitempty"`
	Upto         int64  `json:"upto,omitempty"`
}

func parseID(s string) ([16]byte, error) {
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != 16 {
		return [16]byte{}, badRequest("no such message")
	}
	return [16]byte(b), nil
}

func (s *Server) handleMessages(c *ferry.Client, r *http.Request) (any, error) {
	q := r.URL.Query()
	conv, err := strconv.ParseInt(q.Get("conversation"), 10, 64)
	if err != nil || conv <= 0 {
		return nil, badRequest("which conversation?")
	}
	before, _ := strconv.ParseInt(q.Get("before"), 10, 64)
	limit, _ := strconv.Atoi(q.Get("limit"))
	if limit <= 0 || limit > 500 {
		limit = 100
	}
	ms, err := c.Messages(r.Context(), ferry.Query{Conversation: ferry.ConversationID(conv), Before: before, Last: limit})
	if err != nil {
		return nil, err
	}
	out := make([]*messageJSON, len(ms))
	for i, m := range ms {
		out[i] = toMessage(m)
	}
	return map[string]any{"messages": out, "more": len(ms) == limit}, nil
}

func (s *Server) handleSend(c *ferry.Client, r *http.Request) (any, error) {
	var req convRequest
	if err := decode(r, &req); err != nil {
		return nil, err
	}
	conv := ferry.ConversationID(req.Conversation)
	var m *ferry.Message
	var err error
	if req.Reply != "" {
		id, perr := parseID(req.Reply)
		if perr != nil {
			return nil, perr
		}
		m, err = c.Reply(r.Context(), conv, id, req.Text)
	} else {
		m, err = c.Send(r.Context(), conv, req.Text)
	}
	if m == nil {
		return nil, err
	}
	return toMessage(m), err
}

// handleRead marks the incoming messages of a conversation up to a seq
// as shown: they become read, and read receipts go to their senders.
func (s *Server) handleRead(c *ferry.Client, r *http.Request) (any, error) {
	var req convRequest
	if err := decode(r, &req); err != nil {
		return nil, err
	}
	ms, err := c.Messages(r.Context(), ferry.Query{Conversation: ferry.ConversationID(req.Conversation), Last: 500})
	if err != nil {
		return nil, err
	}
	var shown []*ferry.Message
	for _, m := range ms {
		if !m.Outgoing && m.State < ferry.StateRead && m.Seq <= req.Upto {
			shown = append(shown, m)
		}
	}
	if len(shown) == 0 {
		return nil, nil
	}
	return nil, c.MarkShown(r.Context(), shown)
}

// onMessage decodes a request about one message of a conversation.
func onMessage(r *http.Request) (convRequest, ferry.ConversationID, [16]byte, error) {
	var req convRequest
	if err := decode(r, &req); err != nil {
		return req, 0, [16]byte{}, err
	}
	id, err := parseID(req.Message)
	return req, ferry.ConversationID(req.Conversation), id, err
}

func (s *Server) handleReact(c *ferry.Client, r *http.Request) (any, error) {
	req, conv, id, err := onMessage(r)
	if err != nil {
		return nil, err
	}
	return nil, c.React(r.Context(), conv, id, req.Emoji)
}

func (s *Server) handleEdit(c *ferry.Client, r *http.Request) (any, error) {
	req, conv, id, err := onMessage(r)
	if err != nil {
		return nil, err
	}
	return nil, c.Edit(r.Context(), conv, id, req.Text)
}

func (s *Server) handleDelete(c *ferry.Client, r *http.Request) (any, error) {
	_, conv, id, err := onMessage(r)
	if err != nil {
		return nil, err
	}
	return nil, c.DeleteForEveryone(r.Context(), conv, id)
}

func (s *Server) handleTimer(c *ferry.Client, r *http.Request) (any, error) {
	var req convRequest
	if err := decode(r, &req); err != nil {
		return nil, err
	}
	return nil, c.SetTimer(r.Context(), ferry.ConversationID(req.Conversation), time.Duration(req.Seconds)*time.Second)
}

func (s *Server) handleTyping(c *ferry.Client, r *http.Request) (any, error) {
	var req convRequest
	if err := decode(r, &req); err != nil {
		return nil, err
	}
	return nil, c.Typing(r.Context(), ferry.ConversationID(req.Conversation), req.On)
}

func (s *Server) handleSettings(c *ferry.Client, r *http.Request) (any, error) {
	var req struct {
		Typing bool `json:"typingIndicators"`
	}
	if err := decode(r, &req); err != nil {
		return nil, err
	}
	return nil, c.SetTypingIndicators(r.Context(), req.Typing)
}

func (s *Server) handleInvite(c *ferry.Client, r *http.Request) (any, error) {
	link, err := c.Invite(r.Context())
	if err != nil {
		return nil, err
	}
	qr, err := qrModules(link)
	if err != nil {
		return nil, err
	}
	return map[string]any{"link": link, "qr": qr}, nil
}

func (s *Server) handleAccept(c *ferry.Client, r *http.Request) (any, error) {
	var req struct {
		Link string `json:"link"`
	}
	if err := decode(r, &req); err != nil {
		return nil, err
	}
	k, err := c.Accept(r.Context(), req.Link)
	if k.ID == 0 {
		return nil, err
	}
	return map[string]any{"name": k.Name, "conversation": int64(k.Conversation)}, err
}

func (s *Server) handleSafety(c *ferry.Client, r *http.Request) (any, error) {
	id, err := strconv.ParseInt(r.URL.Query().Get("contact"), 10, 64)
	if err != nil {
		return nil, badRequest("which contact?")
	}
	num, err := c.SafetyNumber(r.Context(), ferry.ContactID(id))
	if err != nil {
		return nil, err
	}
	code, err := c.SafetyCode(r.Context(), ferry.ContactID(id))
	if err != nil {
		return nil, err
	}
	qr, err := qrModules(code)
	if err != nil {
		return nil, err
	}
	return map[string]any{"number": num, "qr": qr}, nil
}

func (s *Server) handleSafetyScan(c *ferry.Client, r *http.Request) (any, error) {
	var req struct {
		Contact int64  `json:"contact"`
		Code    string `json:"code"`
	}
	if err := decode(r, &req); err != nil {
		return nil, err
	}
	ok, err := c.CompareSafetyCode(r.Context(), ferry.ContactID(req.Contact), req.Code)
	if err != nil {
		return nil, err
	}
	return map[string]bool{"match": ok}, nil
}
