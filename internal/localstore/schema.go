package localstore

import (
	"context"
	"encoding/binary"
	"fmt"
	"maps"
	"slices"
	"strconv"
)

// schemaVersion is the database layout version stored in meta.
//
// Version history:
//
//	1  the first release: messages keyed by contact, text only.
//	2  conversations (1:1 now, groups later); messages belong to a
//	   conversation and a sender and carry a content kind and its body;
//	   per-(conversation, sender) counters in their own table; outbox
//	   entries may go to a mailbox that is not a contact's (dest).
//	3  attachments: transfers (one row per attachment message, its upload
//	   or download state, sealed keys, targets and paths); groups (one row
//	   per group conversation: members, admins, keys, sealed).
//	4  disappearing messages (a message's timer and expiry), annotations
//	   (reactions, edits and deletes for everyone, keyed by their target).
const schemaVersion = 4

// schema creates the tables of a new profile (version 2).
const schema = `
CREATE TABLE meta (k TEXT PRIMARY KEY, v BLOB NOT NULL);
CREATE TABLE profile (id INTEGER PRIMARY KEY CHECK (id = 1), data BLOB NOT NULL);
CREATE TABLE contacts (id INTEGER PRIMARY KEY AUTOINCREMENT, data BLOB NOT NULL);
` + schemaV2 + `
CREATE TABLE outbox (
	seq INTEGER PRIMARY KEY AUTOINCREMENT,
	id BLOB NOT NULL UNIQUE,
	contact INTEGER NOT NULL,
	created INTEGER NOT NULL,
	attempts INTEGER NOT NULL DEFAULT 0,
	data BLOB NOT NULL,
	dest BLOB
);
CREATE TABLE seen (id BLOB PRIMARY KEY, at INTEGER NOT NULL);
CREATE INDEX seen_at ON seen (at);
CREATE TABLE invites (tag BLOB PRIMARY KEY, created INTEGER NOT NULL, data BLOB NOT NULL);
` + schemaV3 + schemaV4

// schemaV3 is what version 3 added: attachment transfers.
const schemaV3 = `
CREATE TABLE transfers (
	id BLOB PRIMARY KEY,
	outgoing INTEGER NOT NULL,
	state INTEGER NOT NULL,
	size INTEGER NOT NULL,
	done INTEGER NOT NULL DEFAULT 0,
	data BLOB NOT NULL
);
CREATE INDEX transfers_state ON transfers (state, outgoing);
CREATE TABLE groups (conversation INTEGER PRIMARY KEY, gid BLOB NOT NULL UNIQUE, data BLOB NOT NULL);
`

// schemaV2 is what version 2 added or replaced: conversations, counters
// and the messages table.
const schemaV2 = `
CREATE TABLE conversations (
	id INTEGER PRIMARY KEY AUTOINCREMENT,
	kind INTEGER NOT NULL,
	contact INTEGER NOT NULL DEFAULT 0,
	data BLOB NOT NULL
);
CREATE UNIQUE INDEX conversations_contact ON conversations (contact) WHERE contact != 0;
CREATE TABLE counters (
	conversation INTEGER NOT NULL,
	sender INTEGER NOT NULL,
	n INTEGER NOT NULL,
	PRIMARY KEY (conversation, sender)
) WITHOUT ROWID;
CREATE TABLE messages (
	seq INTEGER PRIMARY KEY AUTOINCREMENT,
	id BLOB NOT NULL UNIQUE,
	conversation INTEGER NOT NULL,
	sender INTEGER NOT NULL,
	sent INTEGER NOT NULL,
	received INTEGER NOT NULL,
	state INTEGER NOT NULL,
	kind INTEGER NOT NULL,
	n INTEGER NOT NULL DEFAULT 0,
	held INTEGER NOT NULL DEFAULT 0,
	body BLOB NOT NULL
);
CREATE INDEX messages_conversation ON messages (conversation, seq);
CREATE INDEX messages_held ON messages (conversation, sender, n) WHERE held = 1;
CREATE INDEX messages_unread ON messages (conversation) WHERE sender != 0 AND state < 3 AND held = 0;
`

// migrate moves the database from version from to schemaVersion, in one
// transaction: a crash leaves the old version, which the next Open
// migrates again.
func (s *Store) migrate(ctx context.Context, from int) error {
	if from < 1 || from >= schemaVersion {
		return fmt.Errorf("migrate schema %d: %w", from, ErrCorrupt)
	}
	return s.Update(ctx, func(tx *Tx) error {
		if from < 2 {
			if err := migrateV1(tx); err != nil {
				return fmt.Errorf("migrate profile to schema 2: %w", err)
			}
		}
		if from < 3 {
			if _, err := tx.tx.ExecContext(ctx, schemaV3); err != nil {
				return fmt.Errorf("migrate profile to schema 3: %w", err)
			}
		}
		if _, err := tx.tx.ExecContext(ctx, schemaV4); err != nil {
			return fmt.Errorf("migrate profile to schema 4: %w", err)
		}
		_, err := tx.tx.ExecContext(ctx, `UPDATE meta SET v = ? WHERE k = 'schema'`, []byte(strconv.Itoa(schemaVersion)))
		return err
	})
}

// contactV1 is what a version 1 contact held beyond Contact: its two
// counters, which move to the counters table.
type contactV1 struct {
	SendN uint64 `json:"send_n"`
	RecvN uint64 `json:"recv_n"`
}

// migrateV1 makes a direct conversation for every contact, moves the
// contacts' counters into counters, and rewrites every message: its
// conversation and sender replace contact and outgoing, its kind is text,
// and its body becomes the text body's encoding (counter, then text),
// sealed again under the same associated data.
func migrateV1(tx *Tx) error {
	rename := `ALTER TABLE messages RENAME TO messages_v1; DROP INDEX IF EXISTS messages_contact;
		ALTER TABLE outbox ADD COLUMN dest BLOB;`
	if _, err := tx.tx.ExecContext(tx.ctx, rename+schemaV2); err != nil {
		return err
	}
	counters, err := contactCountersV1(tx)
	if err != nil {
		return err
	}
	ids := slices.Sorted(maps.Keys(counters))
	convOf := make(map[int64]int64, len(ids))
	for _, id := range ids {
		old := counters[id]
		conv := &Conversation{Kind: Direct, Contact: id}
		if err := tx.PutConversation(conv); err != nil {
			return err
		}
		convOf[id] = conv.ID
		if err := tx.SetCounter(conv.ID, SenderSelf, old.SendN); err != nil {
			return err
		}
		if err := tx.SetCounter(conv.ID, id, old.RecvN); err != nil {
			return err
		}
	}
	if err := migrateMessagesV1(tx, convOf); err != nil {
		return err
	}
	_, err = tx.tx.ExecContext(tx.ctx, `DROP TABLE messages_v1`)
	return err
}

// contactCountersV1 reads the counters of every version 1 contact.
func contactCountersV1(tx *Tx) (map[int64]contactV1, error) {
	rows, err := tx.tx.QueryContext(tx.ctx, `SELECT id, data FROM contacts ORDER BY id`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := make(map[int64]contactV1)
	for rows.Next() {
		var id int64
		var sealed []byte
		if err := rows.Scan(&id, &sealed); err != nil {
			return nil, err
		}
		var c contactV1
		if err := tx.openJSON(contactAD(id), sealed, &c); err != nil {
			return nil, err
		}
		out[id] = c
	}
	return out, rows.Err()
}

func migrateMessagesV1(tx *Tx, convOf map[int64]int64) error {
	rows, err := tx.tx.QueryContext(tx.ctx, `SELECT seq, id, contact, outgoing, sent, received, state, n, held, body FROM messages_v1 ORDER BY seq`)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var seq, contact, sent, recv, n int64
		var outgoing, held bool
		var state int
		var id, body []byte
		if err := rows.Scan(&seq, &id, &contact, &outgoing, &sent, &recv, &state, &n, &held, &body); err != nil {
			return err
		}
		if len(id) != 16 {
			return ErrCorrupt
		}
		text, err := tx.s.seal.open(messageAD([16]byte(id)), body)
		if err != nil {
			return err
		}
		sender := contact
		if outgoing {
			sender = SenderSelf
		}
		// The version 2 body of a text: n(8) || text.
		textBody := binary.BigEndian.AppendUint64(nil, uint64(n))
		sealed, err := tx.s.seal.seal(messageAD([16]byte(id)), append(textBody, text...))
		if err != nil {
			return err
		}
		if _, err := tx.tx.ExecContext(tx.ctx, `INSERT INTO messages (seq, id, conversation, sender, sent, received, state, kind, n, held, body)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`, seq, id, convOf[contact], sender, sent, recv, state, kindTextV1, n, held, sealed); err != nil {
			return err
		}
	}
	return rows.Err()
}

// kindTextV1 is the content kind of text, the only kind version 1 stored.
const kindTextV1 = 1
