package web

import (
	"net/http"

	"github.com/ferry-im/ferry"
)

type groupJSON struct {
	Conversation int64    `json:"conversation"`
	Name         string   `json:"name"`
	Members      []string `json:"members"`
	Admins       []string `json:"admins"`
	Admin        bool     `json:"admin"`
	Gone         string   `json:"gone,omitempty"`
}

// handleGroups lists the user's groups and the contacts a group can take
// (GET /api/groups).
func (s *Server) handleGroups(c *ferry.Client, r *http.Request) (any, error) {
	gs, err := c.Groups(r.Context())
	if err != nil {
		return nil, err
	}
	ks, err := c.Contacts(r.Context())
	if err != nil {
		return nil, err
	}
	out := struct {
		Groups   []groupJSON      `json:"groups"`
		Contacts []map[string]any `json:"contacts"`
	}{Groups: []groupJSON{}, Contacts: []map[string]any{}}
	for _, g := range gs {
		out.Groups = append(out.Groups, groupJSON{int64(g.Conversation), g.Name, g.Members, g.Admins, g.Admin, g.Gone})
	}
	for _, k := range ks {
		if k.Status == ferry.ContactConfirmed && !k.Blocked {
			out.Contacts = append(out.Contacts, map[string]any{"id": int64(k.ID), "name": k.Name})
		}
	}
	return out, nil
}

// handleGroup creates a group or changes one (POST /api/group): op is
// create (name, contacts), add (contact), remove (member), leave or
// rename (name).
func (s *Server) handleGroup(c *ferry.Client, r *http.Request) (any, error) {
	var req struct {
		Op           string  `json:"op"`
		Conversation int64   `json:"conversation"`
		Name         string  `json:"name"`
		Contacts     []int64 `json:"contacts"`
		Contact      int64   `json:"contact"`
		Member       string  `json:"member"`
	}
	if err := decode(r, &req); err != nil {
		return nil, err
	}
	ctx, conv := r.Context(), ferry.ConversationID(req.Conversation)
	switch req.Op {
	case "create":
		ids := make([]ferry.ContactID, len(req.Contacts))
		for i, id := range req.Contacts {
			ids[i] = ferry.ContactID(id)
		}
		cv, err := c.CreateGroup(ctx, req.Name, ids)
		if cv.ID == 0 {
			return nil, err
		}
		return map[string]int64{"conversation": int64(cv.ID)}, err
	case "add":
		return nil, c.AddToGroup(ctx, conv, ferry.ContactID(req.Contact))
	case "remove":
		return nil, c.RemoveFromGroup(ctx, conv, req.Member)
	case "leave":
		return nil, c.LeaveGroup(ctx, conv)
	case "rename":
		return nil, c.RenameGroup(ctx, conv, req.Name)
	}
	return nil, badRequest("no such change to a group")
}
