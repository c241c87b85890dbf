package localstore

import (
	"crypto/hmac"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"time"
)

// Cursor returns the named plaintext counter (0 if unset), such as the
// last message Seq shown by ferry read.
func (t *Tx) Cursor(name string) (int64, error) {
	var v []byte
	err := t.queryRow(`SELECT v FROM meta WHERE k = ?`, "cursor:"+name).Scan(&v)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("read cursor: %w", err)
	}
	return strconv.ParseInt(string(v), 10, 64)
}

// SetCursor sets the named counter.
func (t *Tx) SetCursor(name string, v int64) error {
	if _, err := t.exec(`INSERT OR REPLACE INTO meta (k, v) VALUES (?, ?)`,
		"cursor:"+name, []byte(strconv.FormatInt(v, 10))); err != nil {
		return fmt.Errorf("write cursor: %w", err)
	}
	return nil
}

// Outgoing is one envelope waiting in the outbox for the relay's SendOK.
// Envelope and Dest are sealed at rest.
type Outgoing struct {
	Seq      int64
	ID       [16]byte
	Contact  int64        // the recipient, a contact; or 0 and Dest is set
	Dest     *Destination // the recipient when it is not a contact
	Created  time.Time
	Attempts int
	Envelope []byte
}

// Destination is a mailbox that is not a contact's: where an answer to an
// introduction goes, or a group's control message to a member who is not
// a contact. With Fanout set it is instead every member a group message
// still has to reach (Relay, Mailbox and Token unused).
type Destination struct {
	Relay   string   `json:"relay"`
	Mailbox [16]byte `json:"mailbox"`
	Token   [32]byte `json:"token"`
	// Group and Fanout: a group message, one envelope for all of them.
	Group  [16]byte    `json:"group,omitzero"`
	Fanout []Recipient `json:"fanout,omitempty"`
}

// Recipient is one mailbox a group message goes to.
type Recipient struct {
	Relay   string   `json:"relay"`
	Mailbox [16]byte `json:"mailbox"`
	Token   [32]byte `json:"token"`
}

// SetDest replaces the destination of the queued envelope id (a fan-out
// that reached some of its recipients).
func (t *Tx) SetDest(id [16]byte, d *Destination) error {
	dest, err := t.sealJSON(destAD(id), d)
	if err != nil {
		return err
	}
	if _, err := t.tx.ExecContext(t.ctx, `UPDATE outbox SET dest = ? WHERE id = ?`, dest, id[:]); err != nil {
		return fmt.Errorf("update outbox: %w", err)
	}
	return nil
}

func outboxAD(id [16]byte) string { return "outbox|data|" + hex.EncodeToString(id[:]) }
func destAD(id [16]byte) string   { return "outbox|dest|" + hex.EncodeToString(id[:]) }

// Enqueue adds o to the outbox and sets o.Seq.
func (t *Tx) Enqueue(o *Outgoing) error {
	sealed, err := t.s.seal.seal(outboxAD(o.ID), o.Envelope)
	if err != nil {
		return err
	}
	var dest []byte
	if o.Dest != nil {
		if dest, err = t.sealJSON(destAD(o.ID), o.Dest); err != nil {
			return err
		}
	}
	res, err := t.exec(`INSERT INTO outbox (id, contact, created, data, dest) VALUES (?, ?, ?, ?, ?)`,
		o.ID[:], o.Contact, o.Created.UnixMilli(), sealed, dest)
	if err != nil {
		return fmt.Errorf("enqueue: %w", err)
	}
	o.Seq, err = res.LastInsertId()
	return err
}

// Outbox returns up to limit queued envelopes (all if limit <= 0) in the
// order they were queued.
func (t *Tx) Outbox(limit int) ([]*Outgoing, error) {
	if limit <= 0 {
		limit = -1
	}
	rows, err := t.query(`SELECT seq, id, contact, created, attempts, data, dest FROM outbox ORDER BY seq LIMIT ?`, limit)
	if err != nil {
		return nil, fmt.Errorf("read outbox: %w", err)
	}
	defer rows.Close()
	var out []*Outgoing
	for rows.Next() {
		o := new(Outgoing)
		var id, data, dest []byte
		var created int64
		if err := rows.Scan(&o.Seq, &id, &o.Contact, &created, &o.Attempts, &data, &dest); err != nil {
			return nil, fmt.Errorf("read outbox: %w", err)
		}
		if len(id) != 16 {
			return nil, ErrCorrupt
		}
		o.ID = [16]byte(id)
		o.Created = time.UnixMilli(created)
		if o.Envelope, err = t.s.seal.open(outboxAD(o.ID), data); err != nil {
			return nil, err
		}
		if len(dest) > 0 {
			o.Dest = new(Destination)
			if err := t.openJSON(destAD(o.ID), dest, o.Dest); err != nil {
				return nil, err
			}
		}
		out = append(out, o)
	}
	return out, rows.Err()
}

// OutboxLen returns the number of queued envelopes.
func (t *Tx) OutboxLen() (int, error) {
	var n int
	if err := t.queryRow(`SELECT count(*) FROM outbox`).Scan(&n); err != nil {
		return 0, fmt.Errorf("count outbox: %w", err)
	}
	return n, nil
}

// DropOutbox removes every envelope queued for a contact.
func (t *Tx) DropOutbox(contact int64) error {
	if _, err := t.exec(`DELETE FROM outbox WHERE contact = ?`, contact); err != nil {
		return fmt.Errorf("drop outbox: %w", err)
	}
	return nil
}

// Dequeue removes the envelope with the given id, reporting whether it was
// there.
func (t *Tx) Dequeue(id [16]byte) (bool, error) {
	res, err := t.exec(`DELETE FROM outbox WHERE id = ?`, id[:])
	if err != nil {
		return false, fmt.Errorf("dequeue: %w", err)
	}
	n, _ := res.RowsAffected()
	return n > 0, nil
}

// MarkSeen records id as seen at time at and reports whether it was new.
func (t *Tx) MarkSeen(id [16]byte, at time.Time) (bool, error) {
	res, err := t.exec(`INSERT OR IGNORE INTO seen (id, at) VALUES (?, ?)`, id[:], at.UnixMilli())
	if err != nil {
		return false, fmt.Errorf("mark seen: %w", err)
	}
	n, _ := res.RowsAffected()
	return n > 0, nil
}

// ForgetSeen deletes seen ids recorded before t0 and returns how many.
func (t *Tx) ForgetSeen(before time.Time) (int64, error) {
	res, err := t.exec(`DELETE FROM seen WHERE at < ?`, before.UnixMilli())
	if err != nil {
		return 0, fmt.Errorf("forget seen: %w", err)
	}
	return res.RowsAffected()
}

func (t *Tx) inviteTag(secret []byte) []byte {
	mac := hmac.New(sha256.New, t.s.idxKey)
	mac.Write([]byte("invite|"))
	mac.Write(secret)
	return mac.Sum(nil)
}

// AddInvite records an outstanding invite secret. The secret is stored
// sealed; its lookup column is an HMAC under a key derived from the
// profile key.
func (t *Tx) AddInvite(secret []byte, created time.Time) error {
	tag := t.inviteTag(secret)
	sealed, err := t.s.seal.seal("invites|data|"+hex.EncodeToString(tag), secret)
	if err != nil {
		return err
	}
	if _, err := t.exec(`INSERT INTO invites (tag, created, data) VALUES (?, ?, ?)`,
		tag, created.UnixMilli(), sealed); err != nil {
		return fmt.Errorf("add invite: %w", err)
	}
	return nil
}

// TakeInvite removes the invite with this secret and reports whether it
// was outstanding.
func (t *Tx) TakeInvite(secret []byte) (bool, error) {
	res, err := t.exec(`DELETE FROM invites WHERE tag = ?`, t.inviteTag(secret))
	if err != nil {
		return false, fmt.Errorf("take invite: %w", err)
	}
	n, _ := res.RowsAffected()
	t.erased = t.erased || n > 0
	return n > 0, nil
}

// Invites returns the number of outstanding invites.
func (t *Tx) Invites() (int, error) {
	var n int
	if err := t.queryRow(`SELECT count(*) FROM invites`).Scan(&n); err != nil {
		return 0, fmt.Errorf("count invites: %w", err)
	}
	return n, nil
}
