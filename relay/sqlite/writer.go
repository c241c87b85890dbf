package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"

	"github.com/ferry-im/ferry/relay"
)

// op is one write waiting for the writer goroutine.
type op struct {
	ctx context.Context
	// run does the write inside the batch's transaction. It returns
	// relay.ErrNotFound or relay.ErrQuota (having written nothing) for a
	// refused write; any other error aborts the batch.
	run func(w *writer) error
	err chan error // buffered; receives run's outcome after the commit
}

// refused reports whether err is a write's own refusal rather than a
// database failure.
func refused(err error) bool {
	return errors.Is(err, relay.ErrNotFound) || errors.Is(err, relay.ErrQuota)
}

// boxState is a mailbox's counters, read once per batch and written back
// at its end.
type boxState struct {
	exists  bool
	nextSeq uint64
	count   int
	bytes   int64
	dirty   bool
}

// writer owns the single read-write connection. Only its goroutine uses it.
type writer struct {
	conn *sql.Conn
	// boxes caches the mailboxes the current batch touched.
	boxes map[[16]byte]*boxState
	// writes and batches count for Stats.
	writes, batches atomic.Uint64

	begin, commit, rollback                *sql.Stmt
	savepointSet, savepointUndo, release   *sql.Stmt
	boxGet, boxInsert, boxUpdate, boxTouch *sql.Stmt
	envFind, envInsert, envAck, envExpire  *sql.Stmt
	envSeqs                                *sql.Stmt
	ackedFind, ackedInsert, ackedExpire    *sql.Stmt
	tokenClear, tokenAdd, tokenDel         *sql.Stmt
	tokenCount, tokenHas                   *sql.Stmt
	setSigned, setLastResort               *sql.Stmt
	prekeyPut, prekeyCount, prekeyPop      *sql.Stmt
	bundleGet, idleFind                    *sql.Stmt
	idleDelete                             [5]*sql.Stmt // one per table, the mailbox row last
}

func (w *writer) prepare(ctx context.Context) error {
	for _, p := range []struct {
		stmt **sql.Stmt
		sql  string
	}{
		{&w.begin, `BEGIN IMMEDIATE`},
		{&w.commit, `COMMIT`},
		{&w.rollback, `ROLLBACK`},
		{&w.savepointSet, `SAVEPOINT op`},
		{&w.savepointUndo, `ROLLBACK TO op`},
		{&w.release, `RELEASE op`},
		{&w.boxGet, `SELECT next_seq, count, bytes FROM mailboxes WHERE id = ?`},
		{&w.boxInsert, `INSERT INTO mailboxes (id, seen) VALUES (?, unixepoch() / 86400)`},
		{&w.boxUpdate, `UPDATE mailboxes SET next_seq = ?, count = ?, bytes = ? WHERE id = ?`},
		{&w.boxTouch, `UPDATE mailboxes SET seen = ?2 WHERE id = ?1 AND seen < ?2`},
		{&w.envFind, `SELECT seq FROM envelopes WHERE mailbox = ? AND id = ?`},
		{&w.envInsert, `INSERT INTO envelopes (mailbox, seq, id, received, size, data) VALUES (?, ?, ?, ?, ?, ?)
			ON CONFLICT (mailbox, id) DO NOTHING`},
		{&w.ackedInsert, `INSERT INTO acked (mailbox, id, day)
			SELECT mailbox, id, received / 86400000 FROM envelopes
			WHERE mailbox = ?1 AND seq IN (SELECT value FROM json_each(?2))
			ON CONFLICT (mailbox, id) DO NOTHING`},
		{&w.envAck, `DELETE FROM envelopes
			WHERE mailbox = ? AND seq IN (SELECT value FROM json_each(?))
			RETURNING size`},
		{&w.envSeqs, `SELECT seq FROM envelopes WHERE mailbox = ?`},
		{&w.envExpire, `DELETE FROM envelopes WHERE rowid IN
			(SELECT rowid FROM envelopes WHERE received < ? LIMIT ?)
			RETURNING mailbox, size`},
		{&w.ackedFind, `SELECT 1 FROM acked WHERE mailbox = ? AND id = ?`},
		{&w.ackedExpire, `DELETE FROM acked WHERE (mailbox, id) IN
			(SELECT mailbox, id FROM acked WHERE day < ? LIMIT ?)`},
		{&w.tokenClear, `DELETE FROM tokens WHERE mailbox = ?`},
		{&w.tokenAdd, `INSERT INTO tokens (mailbox, hash) VALUES (?, ?) ON CONFLICT DO NOTHING`},
		{&w.tokenDel, `DELETE FROM tokens WHERE mailbox = ? AND hash = ?`},
		{&w.tokenCount, `SELECT count(*) FROM tokens WHERE mailbox = ?`},
		{&w.tokenHas, `SELECT 1 FROM tokens WHERE mailbox = ? AND hash = ?`},
		{&w.setSigned, `UPDATE mailboxes SET signed = ? WHERE id = ?`},
		{&w.setLastResort, `UPDATE mailboxes SET last_resort = ? WHERE id = ?`},
		{&w.prekeyPut, `INSERT INTO prekeys (mailbox, kind, id, data) VALUES (?, ?, ?, ?)
			ON CONFLICT (mailbox, kind, id) DO UPDATE SET data = excluded.data`},
		{&w.prekeyCount, `SELECT count(*) FROM prekeys WHERE mailbox = ? AND kind = ?`},
		{&w.prekeyPop, `DELETE FROM prekeys WHERE mailbox = ?1 AND kind = ?2 AND id =
			(SELECT min(id) FROM prekeys WHERE mailbox = ?1 AND kind = ?2) RETURNING id, data`},
		{&w.bundleGet, `SELECT signed, last_resort FROM mailboxes WHERE id = ?`},
		{&w.idleFind, `SELECT id FROM mailboxes WHERE seen < ? LIMIT ?`},
		{&w.idleDelete[0], `DELETE FROM envelopes WHERE mailbox = ?`},
		{&w.idleDelete[1], `DELETE FROM acked WHERE mailbox = ?`},
		{&w.idleDelete[2], `DELETE FROM tokens WHERE mailbox = ?`},
		{&w.idleDelete[3], `DELETE FROM prekeys WHERE mailbox = ?`},
		{&w.idleDelete[4], `DELETE FROM mailboxes WHERE id = ?`},
	} {
		st, err := w.conn.PrepareContext(ctx, p.sql)
		if err != nil {
			return fmt.Errorf("prepare %q: %w", strings.Join(strings.Fields(p.sql)[:2], " "), err)
		}
		*p.stmt = st
	}
	return nil
}

// run commits batches until ops is closed and drained, then checkpoints
// the write-ahead log into the database file (so that a stopped relay
// leaves one self-contained file, and a backup of relay.db alone is
// complete) and closes the connection.
func (w *writer) run(ops <-chan *op, maxBatch int) {
	defer w.conn.Close()
	defer w.conn.ExecContext(context.Background(), "PRAGMA wal_checkpoint(TRUNCATE)")
	batch := make([]*op, 0, maxBatch)
	for o := range ops {
		batch = append(batch[:0], o)
	fill:
		for len(batch) < maxBatch {
			select {
			case o, ok := <-ops:
				if !ok {
					break fill
				}
				batch = append(batch, o)
			default:
				break fill
			}
		}
		w.commitBatch(batch)
	}
}

// commitBatch runs batch in one transaction. If the transaction fails,
// each write is retried alone, so one bad write cannot fail the others.
func (w *writer) commitBatch(batch []*op) {
	live := batch[:0]
	for _, o := range batch {
		if err := o.ctx.Err(); err != nil {
			o.err <- err
			continue
		}
		live = append(live, o)
	}
	if len(live) == 0 {
		return
	}
	w.writes.Add(uint64(len(live)))
	w.batches.Add(1)
	results := make([]error, len(live))
	err := w.transaction(func() error {
		for i, o := range live {
			results[i] = o.run(w)
			if results[i] != nil && !refused(results[i]) {
				return results[i]
			}
		}
		return nil
	})
	if err == nil {
		for i, o := range live {
			o.err <- results[i]
		}
		return
	}
	if len(live) == 1 {
		live[0].err <- err
		return
	}
	for _, o := range live {
		o.err <- w.transaction(func() error { return o.run(w) })
	}
}

// transaction runs fn between BEGIN and COMMIT, writes back the mailbox
// counters it changed, and rolls back if anything fails. A refusal returned
// by fn is returned after committing whatever else fn did not refuse.
func (w *writer) transaction(fn func() error) error {
	clear(w.boxes)
	if _, err := w.begin.Exec(); err != nil {
		return fmt.Errorf("begin transaction: %w", err)
	}
	result := fn()
	if result != nil && !refused(result) {
		w.rollback.Exec()
		return result
	}
	for mb, box := range w.boxes {
		if !box.dirty {
			continue
		}
		if _, err := w.boxUpdate.Exec(int64(box.nextSeq), box.count, box.bytes, mb[:]); err != nil {
			w.rollback.Exec()
			return fmt.Errorf("update mailbox: %w", err)
		}
	}
	if _, err := w.commit.Exec(); err != nil {
		w.rollback.Exec()
		return fmt.Errorf("commit: %w", err)
	}
	return result
}

// savepoint runs fn so that its writes are undone if it fails, without
// aborting the rest of the batch.
func (w *writer) savepoint(fn func() error) error {
	if _, err := w.savepointSet.Exec(); err != nil {
		return fmt.Errorf("savepoint: %w", err)
	}
	if err := fn(); err != nil {
		if _, uerr := w.savepointUndo.Exec(); uerr != nil {
			return fmt.Errorf("roll back to savepoint: %w", uerr)
		}
		if _, rerr := w.release.Exec(); rerr != nil {
			return fmt.Errorf("release savepoint: %w", rerr)
		}
		return err
	}
	if _, err := w.release.Exec(); err != nil {
		return fmt.Errorf("release savepoint: %w", err)
	}
	return nil
}

// box returns mb's counters for this batch, reading them on first use.
func (w *writer) box(mb [16]byte) (*boxState, error) {
	if b := w.boxes[mb]; b != nil {
		return b, nil
	}
	b := &boxState{}
	var next int64
	switch err := w.boxGet.QueryRow(mb[:]).Scan(&next, &b.count, &b.bytes); {
	case err == nil:
		b.exists, b.nextSeq = true, uint64(next)
	case !errors.Is(err, sql.ErrNoRows):
		return nil, fmt.Errorf("read mailbox: %w", err)
	}
	w.boxes[mb] = b
	return b, nil
}

// ensure creates mailbox mb if it does not exist.
func (w *writer) ensure(mb [16]byte) error {
	b, err := w.box(mb)
	if err != nil || b.exists {
		return err
	}
	if _, err := w.boxInsert.Exec(mb[:]); err != nil {
		return fmt.Errorf("create mailbox: %w", err)
	}
	*b = boxState{exists: true, nextSeq: 1}
	return nil
}

// pop removes and returns the lowest-id prekey of one pool.
func (w *writer) pop(mb [16]byte, kind int) (relay.Prekey, bool, error) {
	var (
		id   int64
		data []byte
	)
	switch err := w.prekeyPop.QueryRow(mb[:], kind).Scan(&id, &data); {
	case errors.Is(err, sql.ErrNoRows):
		return relay.Prekey{}, false, nil
	case err != nil:
		return relay.Prekey{}, false, fmt.Errorf("pop prekey: %w", err)
	}
	return relay.Prekey{ID: uint32(id), Data: data}, true, nil
}
