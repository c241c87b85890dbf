package localstore

import (
	"database/sql"
	"errors"
	"fmt"
	"strconv"
)

// GroupState is one group as the user's client keeps it, in the row of
// its conversation. The group id (an HMAC of it, for lookups) is in the
// clear; everything else is sealed.
type GroupState struct {
	Conversation int64    `json:"-"`
	ID           [16]byte `json:"id"`
	Name         string   `json:"name"`
	// Epoch and EnvelopeKey seal the group's envelopes now; PrevKey is the
	// previous epoch's key, still accepted from current members for
	// messages in flight across a re-key.
	Epoch       uint32        `json:"epoch"`
	EnvelopeKey [32]byte      `json:"key"`
	PrevKey     [32]byte      `json:"prev_key,omitzero"`
	Admins      [][32]byte    `json:"admins"`
	Members     []GroupMember `json:"members"` // everyone but the user
	// SenderKeys is session.Group's serialised state.
	SenderKeys []byte `json:"sender_keys"`
	// Gone is set once the user left or was removed; Why says how.
	Gone bool   `json:"gone,omitempty"`
	Why  string `json:"why,omitempty"`
	// Former are the members a re-key took out, by name, so that a
	// removal or a departure told after its re-key still names them.
	Former []FormerMember `json:"former,omitempty"`
}

// FormerMember is a member who is no longer in a group.
type FormerMember struct {
	Identity [32]byte `json:"identity"`
	Name     string   `json:"name"`
	// Told is set once a notice said who took the member out, or that
	// the member left.
	Told bool `json:"told,omitempty"`
}

// GroupMember is another member of a group.
type GroupMember struct {
	Identity [32]byte `json:"identity"`
	Mailbox  [16]byte `json:"mailbox"`
	Token    [32]byte `json:"token"`
	Relay    string   `json:"relay"`
	Name     string   `json:"name"`
	// Contact is the contacts row that stands for the member (a contact,
	// or a row of status Member).
	Contact int64 `json:"contact"`
}

func groupAD(conv int64) string { return "groups|data|" + strconv.FormatInt(conv, 10) }

// PutGroup inserts or replaces g (its conversation must exist).
func (t *Tx) PutGroup(g *GroupState) error {
	sealed, err := t.sealJSON(groupAD(g.Conversation), g)
	if err != nil {
		return err
	}
	if _, err := t.tx.ExecContext(t.ctx, `INSERT OR REPLACE INTO groups (conversation, gid, data) VALUES (?, ?, ?)`,
		g.Conversation, t.groupTag(g.ID), sealed); err != nil {
		return fmt.Errorf("write group: %w", err)
	}
	t.erased = true // old keys
	return nil
}

// groupTag is the lookup column of a group id, an HMAC under the index key
// so that the file does not hold group ids in the clear.
func (t *Tx) groupTag(id [16]byte) []byte { return t.inviteTag(append([]byte("group|"), id[:]...)) }

// Group returns the group of conversation conv, or ErrNotFound.
func (t *Tx) Group(conv int64) (*GroupState, error) {
	return t.oneGroup(`SELECT conversation, data FROM groups WHERE conversation = ?`, conv)
}

// GroupByID returns the group with id, or ErrNotFound.
func (t *Tx) GroupByID(id [16]byte) (*GroupState, error) {
	return t.oneGroup(`SELECT conversation, data FROM groups WHERE gid = ?`, t.groupTag(id))
}

func (t *Tx) oneGroup(q string, arg any) (*GroupState, error) {
	var conv int64
	var sealed []byte
	err := t.tx.QueryRowContext(t.ctx, q, arg).Scan(&conv, &sealed)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("read group: %w", err)
	}
	g := &GroupState{Conversation: conv}
	if err := t.openJSON(groupAD(conv), sealed, g); err != nil {
		return nil, err
	}
	return g, nil
}

// Groups returns every group, in the order of their conversations.
func (t *Tx) Groups() ([]*GroupState, error) {
	rows, err := t.query(`SELECT conversation, data FROM groups ORDER BY conversation`)
	if err != nil {
		return nil, fmt.Errorf("read groups: %w", err)
	}
	defer rows.Close()
	var out []*GroupState
	for rows.Next() {
		g := &GroupState{}
		var sealed []byte
		if err := rows.Scan(&g.Conversation, &sealed); err != nil {
			return nil, err
		}
		if err := t.openJSON(groupAD(g.Conversation), sealed, g); err != nil {
			return nil, err
		}
		out = append(out, g)
	}
	return out, rows.Err()
}
