package localstore

import (
	"database/sql"
	"errors"
	"fmt"
	"strconv"
)

// Profile is the user's own state. All of it is sealed at rest.
type Profile struct {
	Name      string `json:"name"`
	RelayLink string `json:"relay"`
	// Identity is the session identity's private encoding.
	Identity []byte `json:"identity"`
	// Device is the Noise static private key used to authenticate to the
	// relay (the mailbox owner's key).
	Device []byte `json:"device"`
	// Token is the delivery token registered with the relay.
	Token []byte `json:"token"`
	// Prekeys is the session layer's prekey secrets, opaque here.
	Prekeys []byte `json:"prekeys"`
	// Uploaded records whether the token, the signed prekey and the
	// last-resort prekey reached the relay.
	Uploaded bool `json:"uploaded"`
	// UploadedID is the highest one-time prekey id the relay has; prekeys
	// with higher ids still need uploading.
	UploadedID uint32 `json:"uploaded_id"`
	// Tokens are the delivery tokens of the user's mailbox besides Token:
	// one per outstanding invite and per contact (docs/protocol.md
	// section 6.2), with what the relay has of each.
	Tokens []OwnToken `json:"tokens,omitempty"`
}

// OwnToken is a delivery token of the user's own mailbox made for one
// invite or one contact.
type OwnToken struct {
	Token []byte `json:"token"`
	// Invite is the secret of the invite the token was made for, until
	// someone takes the invite; Expires is when the invite expires (unix
	// milliseconds).
	Invite  []byte `json:"invite,omitempty"`
	Expires int64  `json:"expires,omitempty"`
	// Contact is the contact holding the token (0: an invite's).
	Contact int64 `json:"contact,omitempty"`
	// Registered: the relay answered AddToken. Revoked: the token is to
	// be removed from the relay (RemoveToken), then forgotten. Grant: the
	// token is to be sent to Contact in a token content once Registered.
	Registered bool `json:"registered,omitempty"`
	Revoked    bool `json:"revoked,omitempty"`
	Grant      bool `json:"grant,omitempty"`
	// Blocked: the contact is blocked; the token is kept off the relay
	// until it is unblocked.
	Blocked bool `json:"blocked,omitempty"`
}

// Profile returns the profile or ErrNotFound.
func (t *Tx) Profile() (*Profile, error) {
	var sealed []byte
	err := t.queryRow(`SELECT data FROM profile WHERE id = 1`).Scan(&sealed)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("read profile: %w", err)
	}
	p := new(Profile)
	if err := t.openJSON("profile|data|1", sealed, p); err != nil {
		return nil, err
	}
	return p, nil
}

// PutProfile writes the profile.
func (t *Tx) PutProfile(p *Profile) error {
	sealed, err := t.sealJSON("profile|data|1", p)
	if err != nil {
		return err
	}
	if _, err := t.exec(`INSERT OR REPLACE INTO profile (id, data) VALUES (1, ?)`, sealed); err != nil {
		return fmt.Errorf("write profile: %w", err)
	}
	t.erased = true // the previous prekey secrets
	return nil
}

// Contact is a peer. All of it except ID is sealed at rest.
type Contact struct {
	ID        int64  `json:"-"`
	Name      string `json:"name"`
	Identity  []byte `json:"identity"`
	RelayLink string `json:"relay"`
	Mailbox   []byte `json:"mailbox"`
	Token     []byte `json:"token"`
	// Session is the session layer's serialised state, opaque here.
	Session []byte `json:"session"`
	Added   int64  `json:"added"` // unix milliseconds
	// Status is where the contact stands (the zero value, for every
	// contact of a version 1 profile, is Confirmed).
	Status ContactStatus `json:"status,omitempty"`
	// Blocked contacts' messages are dropped unread, and nothing is sent
	// to them.
	Blocked bool `json:"blocked,omitempty"`
	// Introduction is the id of the introduction the user sent to this
	// contact, when the user accepted the contact's invite.
	Introduction [16]byte `json:"introduction,omitzero"`
	// MyToken is the delivery token the contact uses to reach the user
	// (one of Profile.Tokens); empty for a contact made before tokens
	// were per contact, which uses Profile.Token.
	MyToken []byte `json:"my_token,omitempty"`
	// Grant is the id of the token content that gave the contact
	// MyToken, until its delivery receipt comes; the invite's token is
	// revoked then.
	Grant [16]byte `json:"grant,omitzero"`
	// Receipts are the receipts waiting to be sent to the contact in one
	// batch once Due (docs/protocol.md section 6.10).
	Receipts *PendingReceipts `json:"receipts,omitempty"`
}

// PendingReceipts are a contact's receipts waiting for their batch's time.
type PendingReceipts struct {
	Delivered [][16]byte `json:"delivered,omitempty"`
	Read      [][16]byte `json:"read,omitempty"`
	// Due is when the batch is sent (unix milliseconds): its first id's
	// arrival plus a random delay.
	Due int64 `json:"due"`
}

// ContactStatus is where a contact stands.
type ContactStatus int

// Contact statuses.
const (
	// Confirmed: the contact is known to know the user (the user accepted
	// the contact's introduction, or heard from the contact).
	Confirmed ContactStatus = 0
	// Pending: the user accepted the contact's invite and has not heard
	// back yet.
	Pending ContactStatus = 1
	// Refused: the contact's Ferry refused the user's introduction (the
	// invite was used, altered or expired).
	Refused ContactStatus = 2
	// Member: not a contact but a member of one of the user's groups, kept
	// so that its messages have a sender; it has no session and no direct
	// conversation, and Contacts leaves it out.
	Member ContactStatus = 3
)

func contactAD(id int64) string { return "contacts|data|" + strconv.FormatInt(id, 10) }

// Contacts returns every contact in the order they were added, leaving
// out group members who are not contacts (Status Member).
func (t *Tx) Contacts() ([]*Contact, error) {
	all, err := t.AllContacts()
	out := all[:0]
	for _, c := range all {
		if c.Status != Member {
			out = append(out, c)
		}
	}
	return out, err
}

// AllContacts returns every contact and group member row, in the order
// they were added.
func (t *Tx) AllContacts() ([]*Contact, error) {
	rows, err := t.query(`SELECT id, data FROM contacts ORDER BY id`)
	if err != nil {
		return nil, fmt.Errorf("read contacts: %w", err)
	}
	defer rows.Close()
	var out []*Contact
	for rows.Next() {
		var id int64
		var sealed []byte
		if err := rows.Scan(&id, &sealed); err != nil {
			return nil, fmt.Errorf("read contacts: %w", err)
		}
		c := new(Contact)
		if err := t.openJSON(contactAD(id), sealed, c); err != nil {
			return nil, err
		}
		c.ID = id
		out = append(out, c)
	}
	return out, rows.Err()
}

// Contact returns the contact with the given id or ErrNotFound.
func (t *Tx) Contact(id int64) (*Contact, error) {
	var sealed []byte
	err := t.queryRow(`SELECT data FROM contacts WHERE id = ?`, id).Scan(&sealed)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("read contact: %w", err)
	}
	c := new(Contact)
	if err := t.openJSON(contactAD(id), sealed, c); err != nil {
		return nil, err
	}
	c.ID = id
	return c, nil
}

// PutContact inserts c (when c.ID is 0, setting c.ID) or replaces it.
func (t *Tx) PutContact(c *Contact) error {
	if err := t.putSealed("contacts", &c.ID, contactAD, c, `INSERT INTO contacts (data) VALUES (x'')`); err != nil {
		return err
	}
	t.erased = true // the previous session state
	return nil
}

// putSealed writes v, sealed, as the data of row *id of table, first
// inserting the row with insert (and setting *id) when *id is 0: the id
// is reserved before sealing because the associated data binds the
// sealed value to it.
func (t *Tx) putSealed(table string, id *int64, ad func(int64) string, v any, insert string, args ...any) error {
	if *id == 0 {
		res, err := t.exec(insert, args...)
		if err != nil {
			return fmt.Errorf("insert into %s: %w", table, err)
		}
		if *id, err = res.LastInsertId(); err != nil {
			return fmt.Errorf("insert into %s: %w", table, err)
		}
	}
	sealed, err := t.sealJSON(ad(*id), v)
	if err != nil {
		return err
	}
	if _, err := t.exec(`UPDATE `+table+` SET data = ? WHERE id = ?`, sealed, *id); err != nil {
		return fmt.Errorf("write %s: %w", table, err)
	}
	return nil
}

// DeleteContact deletes the contact with the given id, with its session.
func (t *Tx) DeleteContact(id int64) error {
	if _, err := t.exec(`DELETE FROM contacts WHERE id = ?`, id); err != nil {
		return fmt.Errorf("delete contact: %w", err)
	}
	t.erased = true
	return nil
}
