package postgres

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// migrations[i] takes the schema from version i to version i+1 (recorded in
// the ferry_schema table). Append only: a released migration never
// changes. Everything is created in the first schema of the connection's
// search_path, so one database can hold several relays' stores (tests use
// a schema each).
//
// Version 1 (the same data as relay/sqlite's version 2):
//   - mailboxes: one row per mailbox. next_seq is the seq the next envelope
//     gets; count and bytes are the pending envelopes' number and total
//     size, so quota checks need no scan; seen is the UTC day (days since
//     1970-01-01) of the owner's last activity, for the clean-up of
//     abandoned mailboxes (the database's day at creation); signed and
//     last_resort are the opaque prekey records. Every write that adds to
//     a mailbox's envelopes, tokens or prekeys locks its row first, so the
//     writes of one mailbox are serialised across relays and seqs follow
//     commit order.
//   - tokens: the set of delivery token hashes of each mailbox.
//   - envelopes: the pending envelopes. received is Unix milliseconds.
//   - acked: what is kept of an acknowledged envelope for de-duplication:
//     its mailbox, id and the UTC day it was received.
//   - prekeys: the one-time pools; kind 1 is X25519, kind 2 is ML-KEM.
//   - relay_cluster and relay_nodes: the cluster's relay public key (every
//     node must hold the same key) and each node's endpoints, for the
//     cluster's link.
//   - ferry_* functions: each write is one statement, so that many of them
//     go to the server in one round trip and commit together (writer.go).
var migrations = []string{
	`CREATE TABLE mailboxes (
		id          bytea PRIMARY KEY,
		next_seq    bigint  NOT NULL DEFAULT 1,
		count       integer NOT NULL DEFAULT 0,
		bytes       bigint  NOT NULL DEFAULT 0,
		seen        integer NOT NULL DEFAULT floor(extract(epoch FROM now()) / 86400),
		signed      bytea,
		last_resort bytea
	);
	CREATE INDEX mailboxes_seen ON mailboxes (seen);
	CREATE TABLE tokens (
		mailbox bytea NOT NULL,
		hash    bytea NOT NULL,
		PRIMARY KEY (mailbox, hash)
	);
	CREATE TABLE envelopes (
		mailbox  bytea   NOT NULL,
		seq      bigint  NOT NULL,
		id       bytea   NOT NULL,
		received bigint  NOT NULL,
		size     integer NOT NULL,
		data     bytea   NOT NULL,
		PRIMARY KEY (mailbox, seq)
	);
	CREATE UNIQUE INDEX envelopes_id ON envelopes (mailbox, id);
	CREATE INDEX envelopes_received ON envelopes (received);
	CREATE TABLE acked (
		mailbox bytea   NOT NULL,
		id      bytea   NOT NULL,
		day     integer NOT NULL,
		PRIMARY KEY (mailbox, id)
	);
	CREATE INDEX acked_day ON acked (day);
	CREATE TABLE prekeys (
		mailbox bytea    NOT NULL,
		kind    smallint NOT NULL,
		id      bigint   NOT NULL,
		data    bytea    NOT NULL,
		PRIMARY KEY (mailbox, kind, id)
	);
	CREATE TABLE relay_cluster (
		one boolean PRIMARY KEY DEFAULT true CHECK (one),
		key bytea NOT NULL
	);
	CREATE TABLE relay_nodes (
		name      text PRIMARY KEY,
		endpoints text NOT NULL,
		seen      bigint NOT NULL
	);

	-- ferry_lock creates mailbox p_mb if p_create and it does not exist,
	-- and locks its row; it returns whether the mailbox exists.
	CREATE FUNCTION ferry_lock(p_mb bytea, p_create boolean) RETURNS boolean
	LANGUAGE plpgsql AS $$
	BEGIN
		IF p_create THEN
			INSERT INTO mailboxes (id) VALUES (p_mb) ON CONFLICT (id) DO NOTHING;
		END IF;
		PERFORM 1 FROM mailboxes WHERE id = p_mb FOR UPDATE;
		RETURN FOUND;
	END $$;

	-- status: 0 stored (or dup), 1 no such mailbox, 2 over quota. An
	-- acknowledged duplicate has seq 0: its seq is not kept.
	CREATE FUNCTION ferry_put(p_mb bytea, p_id bytea, p_received bigint, p_data bytea,
			p_max_count integer, p_max_bytes bigint,
			OUT seq bigint, OUT dup boolean, OUT status smallint)
	LANGUAGE plpgsql AS $$
	DECLARE
		b mailboxes%ROWTYPE;
		n integer := length(p_data);
	BEGIN
		seq := 0; dup := false; status := 0;
		SELECT * INTO b FROM mailboxes WHERE id = p_mb FOR UPDATE;
		IF NOT FOUND THEN
			status := 1;
			RETURN;
		END IF;
		SELECT e.seq INTO seq FROM envelopes e WHERE e.mailbox = p_mb AND e.id = p_id;
		IF FOUND THEN
			dup := true;
			RETURN;
		END IF;
		seq := 0;
		IF EXISTS (SELECT 1 FROM acked a WHERE a.mailbox = p_mb AND a.id = p_id) THEN
			dup := true;
			RETURN;
		END IF;
		IF (p_max_count > 0 AND b.count + 1 > p_max_count) OR (p_max_bytes > 0 AND b.bytes + n > p_max_bytes) THEN
			status := 2;
			RETURN;
		END IF;
		INSERT INTO envelopes (mailbox, seq, id, received, size, data)
			VALUES (p_mb, b.next_seq, p_id, p_received, n, p_data);
		UPDATE mailboxes SET next_seq = b.next_seq + 1, count = b.count + 1, bytes = b.bytes + n
			WHERE id = p_mb;
		seq := b.next_seq;
	END $$;

	CREATE FUNCTION ferry_ack(p_mb bytea, p_seqs bigint[]) RETURNS integer
	LANGUAGE plpgsql AS $$
	DECLARE
		n integer;
		sz bigint;
	BEGIN
		IF NOT ferry_lock(p_mb, false) THEN
			RETURN 0;
		END IF;
		WITH gone AS (
			DELETE FROM envelopes WHERE mailbox = p_mb AND seq = ANY (p_seqs)
			RETURNING id, received, size),
		kept AS (
			INSERT INTO acked (mailbox, id, day)
			SELECT p_mb, id, floor(received / 86400000.0) FROM gone
			ON CONFLICT (mailbox, id) DO NOTHING)
		SELECT count(*), coalesce(sum(size), 0) INTO n, sz FROM gone;
		IF n > 0 THEN
			UPDATE mailboxes SET count = count - n, bytes = bytes - sz WHERE id = p_mb;
		END IF;
		RETURN n;
	END $$;

	-- p_op: 0 replace the set by p_hash, 1 add p_hash (at most p_max
	-- hashes if p_max > 0), 2 remove p_hash. Returns 2 if over p_max (then
	-- nothing changed), else 0.
	CREATE FUNCTION ferry_token(p_mb bytea, p_hash bytea, p_op smallint, p_max integer) RETURNS smallint
	LANGUAGE plpgsql AS $$
	BEGIN
		IF p_op = 2 THEN
			IF ferry_lock(p_mb, false) THEN
				DELETE FROM tokens WHERE mailbox = p_mb AND hash = p_hash;
			END IF;
			RETURN 0;
		END IF;
		IF p_op = 1 AND EXISTS (SELECT 1 FROM tokens WHERE mailbox = p_mb AND hash = p_hash) THEN
			RETURN 0;
		END IF;
		PERFORM ferry_lock(p_mb, true);
		IF p_op = 0 THEN
			DELETE FROM tokens WHERE mailbox = p_mb;
		ELSIF p_max > 0 AND (SELECT count(*) FROM tokens WHERE mailbox = p_mb) >= p_max THEN
			RETURN 2;
		END IF;
		INSERT INTO tokens (mailbox, hash) VALUES (p_mb, p_hash) ON CONFLICT DO NOTHING;
		RETURN 0;
	END $$;

	-- Returns 0, or 2 if a pool would then hold more than p_max (and then
	-- changes nothing).
	CREATE FUNCTION ferry_put_prekeys(p_mb bytea, p_signed bytea, p_last_resort bytea,
			p_kinds smallint[], p_ids bigint[], p_datas bytea[], p_max integer) RETURNS smallint
	LANGUAGE plpgsql AS $$
	BEGIN
		PERFORM ferry_lock(p_mb, true);
		BEGIN
			INSERT INTO prekeys (mailbox, kind, id, data)
				SELECT p_mb, k, i, d FROM unnest(p_kinds, p_ids, p_datas) AS u(k, i, d)
				ON CONFLICT (mailbox, kind, id) DO UPDATE SET data = excluded.data;
			IF p_max > 0 AND EXISTS (
					SELECT 1 FROM prekeys WHERE mailbox = p_mb AND kind = ANY (p_kinds)
					GROUP BY kind HAVING count(*) > p_max) THEN
				RAISE EXCEPTION USING ERRCODE = 'FQ001';
			END IF;
		EXCEPTION WHEN SQLSTATE 'FQ001' THEN
			RETURN 2;
		END;
		IF length(p_signed) > 0 THEN
			UPDATE mailboxes SET signed = p_signed WHERE id = p_mb;
		END IF;
		IF length(p_last_resort) > 0 THEN
			UPDATE mailboxes SET last_resort = p_last_resort WHERE id = p_mb;
		END IF;
		RETURN 0;
	END $$;

	-- has_signed is false (and nothing removed) without a signed prekey
	-- record.
	CREATE FUNCTION ferry_pop_bundle(p_mb bytea,
			OUT has_signed boolean, OUT signed bytea, OUT last_resort bytea,
			OUT one_id bigint, OUT one_data bytea, OUT kem_id bigint, OUT kem_data bytea)
	LANGUAGE plpgsql AS $$
	BEGIN
		SELECT m.signed, m.last_resort INTO signed, last_resort FROM mailboxes m WHERE m.id = p_mb FOR UPDATE;
		has_signed := FOUND AND coalesce(length(signed), 0) > 0;
		IF NOT has_signed THEN
			RETURN;
		END IF;
		DELETE FROM prekeys p WHERE p.mailbox = p_mb AND p.kind = 1 AND p.id =
			(SELECT min(q.id) FROM prekeys q WHERE q.mailbox = p_mb AND q.kind = 1)
			RETURNING p.id, p.data INTO one_id, one_data;
		DELETE FROM prekeys p WHERE p.mailbox = p_mb AND p.kind = 2 AND p.id =
			(SELECT min(q.id) FROM prekeys q WHERE q.mailbox = p_mb AND q.kind = 2)
			RETURNING p.id, p.data INTO kem_id, kem_data;
	END $$;

	-- Deletes up to p_limit envelopes received before p_cutoff and returns
	-- how many. One expiry at a time per schema; the mailboxes are locked
	-- in id order, as the writers' batches lock them.
	CREATE FUNCTION ferry_expire(p_cutoff bigint, p_limit integer) RETURNS integer
	LANGUAGE plpgsql AS $$
	DECLARE
		n integer;
	BEGIN
		PERFORM pg_advisory_xact_lock(hashtext(current_schema() || '.ferry_expire'));
		PERFORM 1 FROM mailboxes WHERE id IN (
			SELECT DISTINCT e.mailbox FROM (SELECT mailbox FROM envelopes WHERE received < p_cutoff LIMIT p_limit) e)
			ORDER BY id FOR UPDATE;
		WITH gone AS (
			DELETE FROM envelopes WHERE ctid IN (SELECT ctid FROM envelopes WHERE received < p_cutoff LIMIT p_limit)
			RETURNING mailbox, size),
		agg AS (
			SELECT mailbox, count(*) AS c, sum(size) AS sz FROM gone GROUP BY mailbox),
		upd AS (
			UPDATE mailboxes m SET count = m.count - agg.c, bytes = m.bytes - agg.sz
			FROM agg WHERE m.id = agg.mailbox)
		SELECT coalesce(sum(c), 0) INTO n FROM agg;
		RETURN n;
	END $$;

	-- Deletes up to p_limit mailboxes last seen before day p_day, with
	-- everything of theirs, in id order; returns their ids.
	CREATE FUNCTION ferry_delete_idle(p_day integer, p_limit integer) RETURNS SETOF bytea
	LANGUAGE plpgsql AS $$
	DECLARE
		ids bytea[];
	BEGIN
		SELECT array_agg(id) INTO ids FROM (
			SELECT id FROM mailboxes WHERE seen < p_day ORDER BY id LIMIT p_limit FOR UPDATE) m;
		IF ids IS NULL THEN
			RETURN;
		END IF;
		DELETE FROM envelopes WHERE mailbox = ANY (ids);
		DELETE FROM acked WHERE mailbox = ANY (ids);
		DELETE FROM tokens WHERE mailbox = ANY (ids);
		DELETE FROM prekeys WHERE mailbox = ANY (ids);
		DELETE FROM mailboxes WHERE id = ANY (ids);
		RETURN QUERY SELECT unnest(ids);
	END $$;`,

	// Version 2, for the cost of a message: ferry_put takes the usual case
	// (a new envelope that fits) in two statements instead of five: the
	// mailbox's counters are advanced (which locks its row) if the envelope
	// fits, then it is inserted unless its id is known; a known id undoes
	// the counters (its seq stays used: seqs are never reused, gaps are
	// allowed). The indexes on times become BRIN indexes (rows come in
	// about the order of their times), which cost little to keep up on
	// every insert and delete; Expire and Arrivals scan ranges of them.
	`DROP INDEX envelopes_received;
	CREATE INDEX envelopes_received ON envelopes USING brin (received);
	DROP INDEX acked_day;
	CREATE INDEX acked_day ON acked USING brin (day);

	CREATE OR REPLACE FUNCTION ferry_put(p_mb bytea, p_id bytea, p_received bigint, p_data bytea,
			p_max_count integer, p_max_bytes bigint,
			OUT seq bigint, OUT dup boolean, OUT status smallint)
	LANGUAGE plpgsql AS $$
	DECLARE
		n integer := length(p_data);
		fits boolean;
	BEGIN
		seq := 0; dup := false; status := 0;
		UPDATE mailboxes m SET next_seq = m.next_seq + 1, count = m.count + 1, bytes = m.bytes + n
			WHERE m.id = p_mb
				AND (p_max_count <= 0 OR m.count + 1 <= p_max_count)
				AND (p_max_bytes <= 0 OR m.bytes + n <= p_max_bytes)
			RETURNING m.next_seq - 1 INTO seq;
		fits := FOUND;
		IF fits THEN
			INSERT INTO envelopes (mailbox, seq, id, received, size, data)
				SELECT p_mb, seq, p_id, p_received, n, p_data
				WHERE NOT EXISTS (SELECT 1 FROM acked a WHERE a.mailbox = p_mb AND a.id = p_id)
				ON CONFLICT (mailbox, id) DO NOTHING;
			IF FOUND THEN
				RETURN;
			END IF;
			UPDATE mailboxes m SET count = m.count - 1, bytes = m.bytes - n WHERE m.id = p_mb;
		ELSIF NOT ferry_lock(p_mb, false) THEN
			seq := 0; status := 1;
			RETURN;
		END IF;
		-- A known id (pending: its seq; acknowledged: seq 0), or a full
		-- mailbox.
		SELECT e.seq INTO seq FROM envelopes e WHERE e.mailbox = p_mb AND e.id = p_id;
		IF FOUND THEN
			dup := true;
			RETURN;
		END IF;
		seq := 0;
		IF EXISTS (SELECT 1 FROM acked a WHERE a.mailbox = p_mb AND a.id = p_id) THEN
			dup := true;
			RETURN;
		END IF;
		IF fits THEN
			RAISE EXCEPTION 'ferry_put: envelope neither stored nor found';
		END IF;
		status := 2;
	END $$;

	-- ferry_ack no longer locks the mailbox's row before deleting: the
	-- delete takes the envelopes' rows first, and a rare deadlock with a
	-- writer that locked the mailbox first is retried (writer.go).
	CREATE OR REPLACE FUNCTION ferry_ack(p_mb bytea, p_seqs bigint[]) RETURNS integer
	LANGUAGE plpgsql AS $$
	DECLARE
		n integer;
		sz bigint;
	BEGIN
		WITH gone AS (
			DELETE FROM envelopes WHERE mailbox = p_mb AND seq = ANY (p_seqs)
			RETURNING id, received, size),
		kept AS (
			INSERT INTO acked (mailbox, id, day)
			SELECT p_mb, id, received / 86400000 FROM gone
			ON CONFLICT (mailbox, id) DO NOTHING)
		SELECT count(*), coalesce(sum(size), 0) INTO n, sz FROM gone;
		IF n > 0 THEN
			UPDATE mailboxes SET count = count - n, bytes = bytes - sz WHERE id = p_mb;
		END IF;
		RETURN n;
	END $$;`,
}

// migrate brings the schema to the newest version in one transaction per
// migration, holding an advisory lock so relays starting together migrate
// once. A schema newer than this code is refused.
func migrate(ctx context.Context, conn *pgx.Conn) error {
	for {
		done, err := migrateOne(ctx, conn)
		if err != nil || done {
			return err
		}
	}
}

// migrateOne applies the next migration, or reports done.
func migrateOne(ctx context.Context, conn *pgx.Conn) (done bool, err error) {
	tx, err := conn.Begin(ctx)
	if err != nil {
		return false, fmt.Errorf("migrate: %w", err)
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtext(current_schema() || '.ferry_migrate'))`); err != nil {
		return false, fmt.Errorf("migrate: lock: %w", err)
	}
	if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS ferry_schema (version integer NOT NULL)`); err != nil {
		return false, fmt.Errorf("migrate: %w", err)
	}
	var version int
	switch err := tx.QueryRow(ctx, `SELECT version FROM ferry_schema`).Scan(&version); {
	case err == pgx.ErrNoRows:
		if _, err := tx.Exec(ctx, `INSERT INTO ferry_schema (version) VALUES (0)`); err != nil {
			return false, fmt.Errorf("migrate: %w", err)
		}
	case err != nil:
		return false, fmt.Errorf("read schema version: %w", err)
	}
	if version > len(migrations) {
		return false, fmt.Errorf("schema version %d is newer than this relay understands (%d)", version, len(migrations))
	}
	if version == len(migrations) {
		return true, tx.Commit(ctx)
	}
	if _, err := tx.Exec(ctx, migrations[version]); err != nil {
		return false, fmt.Errorf("migrate to version %d: %w", version+1, err)
	}
	if _, err := tx.Exec(ctx, `UPDATE ferry_schema SET version = $1`, version+1); err != nil {
		return false, fmt.Errorf("migrate to version %d: %w", version+1, err)
	}
	if err := tx.Commit(ctx); err != nil {
		return false, fmt.Errorf("migrate to version %d: %w", version+1, err)
	}
	return false, nil
}
