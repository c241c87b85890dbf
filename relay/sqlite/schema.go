package sqlite

import (
	"context"
	"database/sql"
	"fmt"
)

// migrations[i] takes the schema from version i to version i+1 (recorded in
// PRAGMA user_version). Append only: a released migration never changes.
//
// Version 1:
//   - mailboxes: one row per mailbox. token is SHA-256 of the delivery token
//     (NULL until set); next_seq is the seq the next envelope gets; count and
//     bytes are the pending envelopes' number and total size (kept by the
//     writer, so quota checks need no scan); signed and last_resort are the
//     opaque prekey records.
//   - envelopes: one row per stored envelope. data is NULL once
//     acknowledged: the row stays as a tombstone so a retried send of the
//     same id is recognised until the TTL removes it. size is len(data) as
//     stored. received is Unix milliseconds.
//   - prekeys: the one-time pools; kind 1 is X25519, kind 2 is ML-KEM.
//
// Version 2 (issue 13: per-contact tokens, clean-up, less metadata):
//   - tokens: the set of delivery token hashes of each mailbox (SHA-256 of
//     each token); mailboxes.token moves here and is dropped.
//   - mailboxes.seen: the UTC day (days since 1970-01-01) of the owner's
//     last activity, for the clean-up of abandoned mailboxes; existing
//     mailboxes count as seen on the day of the migration.
//   - acked: what is kept of an acknowledged envelope for de-duplication:
//     its mailbox, id and the UTC day it was received; no seq, size or
//     exact time. envelopes now holds pending envelopes only (data is
//     never NULL), and its seq index is no longer partial.
var migrations = []string{
	`CREATE TABLE mailboxes (
		id          BLOB PRIMARY KEY,
		token       BLOB,
		next_seq    INTEGER NOT NULL DEFAULT 1,
		count       INTEGER NOT NULL DEFAULT 0,
		bytes       INTEGER NOT NULL DEFAULT 0,
		signed      BLOB,
		last_resort BLOB
	) WITHOUT ROWID;
	CREATE TABLE envelopes (
		mailbox  BLOB    NOT NULL,
		seq      INTEGER NOT NULL,
		id       BLOB    NOT NULL,
		received INTEGER NOT NULL,
		size     INTEGER NOT NULL,
		data     BLOB
	);
	CREATE UNIQUE INDEX envelopes_id ON envelopes (mailbox, id);
	CREATE UNIQUE INDEX envelopes_pending ON envelopes (mailbox, seq) WHERE data IS NOT NULL;
	CREATE INDEX envelopes_received ON envelopes (received);
	CREATE TABLE prekeys (
		mailbox BLOB    NOT NULL,
		kind    INTEGER NOT NULL,
		id      INTEGER NOT NULL,
		data    BLOB    NOT NULL,
		PRIMARY KEY (mailbox, kind, id)
	) WITHOUT ROWID;`,

	`CREATE TABLE tokens (
		mailbox BLOB NOT NULL,
		hash    BLOB NOT NULL,
		PRIMARY KEY (mailbox, hash)
	) WITHOUT ROWID;
	INSERT INTO tokens (mailbox, hash) SELECT id, token FROM mailboxes WHERE token IS NOT NULL;
	ALTER TABLE mailboxes DROP COLUMN token;
	ALTER TABLE mailboxes ADD COLUMN seen INTEGER NOT NULL DEFAULT 0;
	UPDATE mailboxes SET seen = unixepoch() / 86400;
	CREATE TABLE acked (
		mailbox BLOB    NOT NULL,
		id      BLOB    NOT NULL,
		day     INTEGER NOT NULL,
		PRIMARY KEY (mailbox, id)
	) WITHOUT ROWID;
	CREATE INDEX acked_day ON acked (day);
	INSERT INTO acked (mailbox, id, day) SELECT mailbox, id, received / 86400000 FROM envelopes WHERE data IS NULL;
	DELETE FROM envelopes WHERE data IS NULL;
	DROP INDEX envelopes_pending;
	CREATE UNIQUE INDEX envelopes_seq ON envelopes (mailbox, seq);`,
}

// Prekey pool kinds in the prekeys table.
const (
	kindOneTime = 1
	kindKEM     = 2
)

// migrate brings the database to the newest schema version, one
// transaction per migration. A database newer than this code is refused.
func migrate(ctx context.Context, db *sql.DB) error {
	var version int
	if err := db.QueryRowContext(ctx, "PRAGMA user_version").Scan(&version); err != nil {
		return fmt.Errorf("read schema version: %w", err)
	}
	if version > len(migrations) {
		return fmt.Errorf("schema version %d is newer than this relay understands (%d)", version, len(migrations))
	}
	for v := version; v < len(migrations); v++ {
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			return fmt.Errorf("migrate to version %d: %w", v+1, err)
		}
		if _, err := tx.ExecContext(ctx, migrations[v]); err != nil {
			tx.Rollback()
			return fmt.Errorf("migrate to version %d: %w", v+1, err)
		}
		if _, err := tx.ExecContext(ctx, fmt.Sprintf("PRAGMA user_version = %d", v+1)); err != nil {
			tx.Rollback()
			return fmt.Errorf("migrate to version %d: %w", v+1, err)
		}
		if err := tx.Commit(); err != nil {
			return fmt.Errorf("migrate to version %d: %w", v+1, err)
		}
	}
	return nil
}
