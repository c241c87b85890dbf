package localstore

import (
	"context"
	"database/sql"
	"encoding/hex"
	"fmt"
	"strings"
	"time"
)

// schemaV4 is what version 4 added: a message's disappearing timer and
// expiry, and annotations (reactions, edits, deletes for everyone) kept
// by their target (docs/protocol.md section 8).
const schemaV4 = `
ALTER TABLE messages ADD COLUMN timer INTEGER NOT NULL DEFAULT 0;
ALTER TABLE messages ADD COLUMN expires INTEGER NOT NULL DEFAULT 0;
CREATE INDEX messages_expires ON messages (expires) WHERE expires != 0;
CREATE TABLE annotations (
	id BLOB PRIMARY KEY,
	conversation INTEGER NOT NULL,
	target BLOB NOT NULL,
	sender INTEGER NOT NULL,
	kind INTEGER NOT NULL,
	sent INTEGER NOT NULL,
	body BLOB NOT NULL
);
CREATE INDEX annotations_target ON annotations (target);
CREATE INDEX annotations_conversation ON annotations (conversation);
`

// KindDeleted is the kind of a message deleted for everyone: its body is
// erased and only the row (id, sender, times) stays, as a tombstone.
const KindDeleted = 0x101

func unixMilliOrZero(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}

// Message returns the message with the given id, held or not, or
// ErrNotFound.
func (t *Tx) Message(id [16]byte) (*Message, error) {
	ms, err := t.queryMessages(`SELECT `+messageColumns+` FROM messages WHERE id = ?`, id[:])
	if err != nil {
		return nil, err
	}
	if len(ms) == 0 {
		return nil, ErrNotFound
	}
	return ms[0], nil
}

// SetTimers sets the timer of the stored messages of sender in conversation
// whose counter is in [from, to) (to 0: no upper bound) and that have not
// started expiring.
func (t *Tx) SetTimers(conversation, sender int64, from, to uint64, seconds int64) error {
	q := `UPDATE messages SET timer = ? WHERE conversation = ? AND sender = ? AND n >= ? AND expires = 0`
	args := []any{seconds, conversation, sender, int64(from)}
	if to > 0 {
		q += ` AND n < ?`
		args = append(args, int64(to))
	}
	if _, err := t.exec(q, args...); err != nil {
		return fmt.Errorf("set message timers: %w", err)
	}
	return nil
}

// StartTimer makes a message with a timer expire that long after now, if
// it has not started yet.
func (t *Tx) StartTimer(id [16]byte, now time.Time) error {
	if _, err := t.exec(`UPDATE messages SET expires = ? + timer * 1000 WHERE id = ? AND timer > 0 AND expires = 0`,
		now.UnixMilli(), id[:]); err != nil {
		return fmt.Errorf("start message timer: %w", err)
	}
	return nil
}

// Expire deletes the messages that expired by now, with their
// annotations, and returns the conversations they were in.
func (t *Tx) Expire(now time.Time) ([]int64, error) {
	rows, err := t.query(`SELECT DISTINCT conversation FROM messages WHERE expires != 0 AND expires <= ?`, now.UnixMilli())
	if err != nil {
		return nil, fmt.Errorf("expire messages: %w", err)
	}
	var convs []int64
	for rows.Next() {
		var c int64
		if err := rows.Scan(&c); err != nil {
			rows.Close()
			return nil, fmt.Errorf("expire messages: %w", err)
		}
		convs = append(convs, c)
	}
	rows.Close()
	if len(convs) == 0 {
		return nil, rows.Err()
	}
	for _, q := range []string{
		`DELETE FROM annotations WHERE target IN (SELECT id FROM messages WHERE expires != 0 AND expires <= ?)`,
		`DELETE FROM messages WHERE expires != 0 AND expires <= ?`,
	} {
		if _, err := t.exec(q, now.UnixMilli()); err != nil {
			return nil, fmt.Errorf("expire messages: %w", err)
		}
	}
	t.erased = true
	return convs, nil
}

// NextExpiry returns when the next message expires (zero if none will).
func (t *Tx) NextExpiry() (time.Time, error) {
	var at sql.NullInt64
	if err := t.queryRow(`SELECT min(expires) FROM messages WHERE expires != 0`).Scan(&at); err != nil {
		return time.Time{}, fmt.Errorf("next expiry: %w", err)
	}
	if !at.Valid {
		return time.Time{}, nil
	}
	return time.UnixMilli(at.Int64), nil
}

// Erase deletes a message for everyone: its body is erased (secure
// delete), its kind becomes KindDeleted, and its annotations go. The row
// stays as a tombstone.
func (t *Tx) Erase(id [16]byte) error {
	body, err := t.s.seal.seal(messageAD(id), nil)
	if err != nil {
		return err
	}
	if _, err := t.exec(`UPDATE messages SET kind = ?, body = ? WHERE id = ?`, KindDeleted, body, id[:]); err != nil {
		return fmt.Errorf("erase message: %w", err)
	}
	if _, err := t.exec(`DELETE FROM annotations WHERE target = ? AND kind != ?`, id[:], annotationDelete); err != nil {
		return fmt.Errorf("erase message: %w", err)
	}
	t.erased = true
	return nil
}

// annotationDelete is the content kind of a delete (content.KindDelete),
// kept as the tombstone's annotation.
const annotationDelete = 10

// Annotation is a reaction, edit or delete for everyone, kept by its
// target's id. Body (the content body's encoding) is sealed.
type Annotation struct {
	ID           [16]byte
	Conversation int64
	Target       [16]byte
	Sender       int64
	Kind         int
	Sent         time.Time
	Body         []byte
}

func annotationAD(id [16]byte) string { return "annotations|body|" + hex.EncodeToString(id[:]) }

// PutAnnotation stores a, reporting false (and changing nothing) if an
// annotation with its id is stored.
func (t *Tx) PutAnnotation(a *Annotation) (bool, error) {
	body, err := t.s.seal.seal(annotationAD(a.ID), a.Body)
	if err != nil {
		return false, err
	}
	res, err := t.exec(`INSERT OR IGNORE INTO annotations (id, conversation, target, sender, kind, sent, body) VALUES (?, ?, ?, ?, ?, ?, ?)`,
		a.ID[:], a.Conversation, a.Target[:], a.Sender, a.Kind, a.Sent.UnixMilli(), body)
	if err != nil {
		return false, fmt.Errorf("store annotation: %w", err)
	}
	n, _ := res.RowsAffected()
	return n > 0, nil
}

// DeleteAnnotations deletes the annotations of a kind by sender on target
// other than keep (a newer one replaces them).
func (t *Tx) DeleteAnnotations(target [16]byte, sender int64, kind int, keep [16]byte) error {
	if _, err := t.exec(`DELETE FROM annotations WHERE target = ? AND sender = ? AND kind = ? AND id != ?`,
		target[:], sender, kind, keep[:]); err != nil {
		return fmt.Errorf("delete annotations: %w", err)
	}
	t.erased = true
	return nil
}

// Annotations returns the annotations of the given targets, oldest first
// by (sent, id).
func (t *Tx) Annotations(targets [][16]byte) ([]*Annotation, error) {
	if len(targets) == 0 {
		return nil, nil
	}
	var out []*Annotation
	for len(targets) > 0 {
		// A few fixed sizes, padded with the last target, so that the
		// store prepares a few statements and not one per length.
		n := 128
		for _, size := range []int{1, 16} {
			if len(targets) <= size {
				n = size
				break
			}
		}
		part := targets[:min(n, len(targets))]
		targets = targets[len(part):]
		args := make([]any, n)
		for i := range args {
			args[i] = part[min(i, len(part)-1)][:]
		}
		as, err := t.queryAnnotations(`SELECT id, conversation, target, sender, kind, sent, body FROM annotations WHERE target IN (?`+
			strings.Repeat(", ?", n-1)+`) ORDER BY sent, id`, args...)
		if err != nil {
			return nil, err
		}
		out = append(out, as...)
	}
	return out, nil
}

func (t *Tx) queryAnnotations(query string, args ...any) ([]*Annotation, error) {
	rows, err := t.query(query, args...)
	if err != nil {
		return nil, fmt.Errorf("read annotations: %w", err)
	}
	defer rows.Close()
	var out []*Annotation
	for rows.Next() {
		a := new(Annotation)
		var id, target, body []byte
		var sent int64
		if err := rows.Scan(&id, &a.Conversation, &target, &a.Sender, &a.Kind, &sent, &body); err != nil {
			return nil, fmt.Errorf("read annotations: %w", err)
		}
		if len(id) != 16 || len(target) != 16 {
			return nil, ErrCorrupt
		}
		a.ID, a.Target, a.Sent = [16]byte(id), [16]byte(target), time.UnixMilli(sent)
		if a.Body, err = t.s.seal.open(annotationAD(a.ID), body); err != nil {
			return nil, err
		}
		out = append(out, a)
	}
	return out, rows.Err()
}

// TimerState is a conversation's disappearing-message timer: the change
// with the greatest origin seen (docs/protocol.md section 8.1).
type TimerState struct {
	Seconds    int64    `json:"s,omitempty"`
	OriginSent int64    `json:"os,omitempty"`
	OriginID   [16]byte `json:"oid"`
}

// Newer reports whether the change (sent, id) comes after s's.
func (s TimerState) Newer(sent int64, id [16]byte) bool {
	if sent != s.OriginSent {
		return sent > s.OriginSent
	}
	return string(id[:]) > string(s.OriginID[:])
}

// TimerStep is where a contact's messages switched timer: from counter
// From on, they were sent with Seconds.
type TimerStep struct {
	From    uint64 `json:"f"`
	Seconds int64  `json:"s"`
}

// MaxTimerSteps bounds the steps kept per contact: the oldest go first,
// and only messages held back for longer than their sender took to
// change the timer that often could be given the wrong one.
const MaxTimerSteps = 32

// DataVersion returns SQLite's data_version of the store's connection: it
// changes whenever another process (or another Store) commits a change
// to the profile, so a long-running program can notice changes that its
// own events do not tell.
func (s *Store) DataVersion(ctx context.Context) (int64, error) {
	var v int64
	if err := s.db.QueryRowContext(ctx, `PRAGMA data_version`).Scan(&v); err != nil {
		return 0, fmt.Errorf("read data version: %w", err)
	}
	return v, nil
}

// InOutbox reports whether the envelope with the given id still waits in
// the outbox.
func (t *Tx) InOutbox(id [16]byte) (bool, error) {
	var n int
	if err := t.tx.QueryRowContext(t.ctx, `SELECT count(*) FROM outbox WHERE id = ?`, id[:]).Scan(&n); err != nil {
		return false, fmt.Errorf("read outbox: %w", err)
	}
	return n > 0, nil
}
