package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"slices"
	"strings"
	"time"
)

// RecoverReport says what Recover did.
type RecoverReport struct {
	// Kept is where the damaged database now is (its -wal and -shm files,
	// if any, were moved with it).
	Kept string
	// What was copied into the new database.
	Mailboxes, Envelopes, Acknowledged, Tokens, Prekeys int
	// Incomplete names the tables whose reading stopped at damaged pages
	// and went on past them: rows on those pages are lost.
	Incomplete []string
	// Reregister counts the mailboxes whose owners must register again
	// because their delivery tokens may be lost (see Recover).
	Reregister int
}

// seqGap is added to the next seq of a mailbox whose row was lost, so
// that no seq an owner may still acknowledge is given to a new envelope.
const seqGap = 1 << 32

// recoverTable says how to copy one table row by row.
type recoverTable struct {
	name    string
	columns string // the columns copied, in order
	key     int    // the first key columns of columns (0: the rowid)
	count   *int
}

// Recover rebuilds the database at path from whatever of it can still be
// read, for a database that Open refused as damaged. It moves the damaged
// file aside (to path.damaged-TIME, with its write-ahead log), creates a
// new database at path and copies into it, table by table, every row it
// can read, skipping pages it cannot; then it recounts each mailbox. The
// relay must not be running. What it could not read is lost: pending
// envelopes on damaged pages, and, for a mailbox whose own row was lost,
// its prekey records (its owner's client uploads them again).
func Recover(ctx context.Context, path string, now time.Time) (RecoverReport, error) {
	rep := RecoverReport{Kept: fmt.Sprintf("%s.damaged-%s", path, now.UTC().Format("20060102-150405"))}
	if _, err := os.Stat(path); err != nil {
		return rep, fmt.Errorf("recover relay database %s: %w", path, err)
	}
	for _, suffix := range []string{"", "-wal", "-shm"} {
		if err := os.Rename(path+suffix, rep.Kept+suffix); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return rep, fmt.Errorf("recover relay database %s: keep the damaged file: %w", path, err)
		}
	}
	src, err := sql.Open("sqlite", rep.Kept+"?_pragma=busy_timeout(10000)")
	if err != nil {
		return rep, fmt.Errorf("recover relay database %s: %w", path, err)
	}
	defer src.Close()
	if err := create(ctx, path); err != nil {
		return rep, fmt.Errorf("recover relay database %s: %w", path, err)
	}
	dst, err := sql.Open("sqlite", path+connPragmas)
	if err != nil {
		return rep, fmt.Errorf("recover relay database %s: %w", path, err)
	}
	defer dst.Close()
	tables := []recoverTable{
		{"mailboxes", "id, next_seq, count, bytes, signed, last_resort, seen", 1, &rep.Mailboxes},
		{"tokens", "mailbox, hash", 2, &rep.Tokens},
		{"prekeys", "mailbox, kind, id, data", 3, &rep.Prekeys},
		{"acked", "mailbox, id, day", 2, &rep.Acknowledged},
		{"envelopes", "mailbox, seq, id, received, size, data", 0, &rep.Envelopes},
	}
	for _, t := range tables {
		complete, err := copyTable(ctx, src, dst, t)
		if err != nil {
			return rep, fmt.Errorf("recover relay database %s: copy %s: %w", path, t.name, err)
		}
		if !complete {
			rep.Incomplete = append(rep.Incomplete, t.name)
		}
	}
	if err := recount(ctx, dst, now); err != nil {
		return rep, fmt.Errorf("recover relay database %s: recount mailboxes: %w", path, err)
	}
	if rep.Reregister, err = forgetSigned(ctx, dst, slices.Contains(rep.Incomplete, "tokens")); err != nil {
		return rep, fmt.Errorf("recover relay database %s: %w", path, err)
	}
	_, err = dst.ExecContext(ctx, "PRAGMA wal_checkpoint(TRUNCATE)")
	if err != nil {
		return rep, fmt.Errorf("recover relay database %s: %w", path, err)
	}
	return rep, nil
}

// recoverPage is how many rows are read at a time.
const recoverPage = 256

// copyTable copies every readable row of t from src to dst, in key order,
// a page of rows at a time. A read that fails (a damaged page) is retried
// further on: for the rowid, ever further; for a key, from the next value
// of its first byte. It reports whether every read succeeded.
func copyTable(ctx context.Context, src, dst *sql.DB, t recoverTable) (complete bool, err error) {
	cols := strings.Split(t.columns, ", ")
	keyCols := cols[:max(t.key, 1)]
	sel := "SELECT rowid, " + t.columns + " FROM " + t.name + " NOT INDEXED"
	if t.key > 0 {
		sel = "SELECT " + t.columns + " FROM " + t.name
	}
	ins := "INSERT OR IGNORE INTO " + t.name + " (" + t.columns + ") VALUES (?" + strings.Repeat(", ?", len(cols)-1) + ")"
	complete = true
	var after []any // key of the last row read (nil: from the start)
	var rowid int64
	skip := int64(1)
	for tries := 0; tries < 10_000; tries++ {
		query, args := sel, []any{}
		if t.key == 0 {
			query += " WHERE rowid > ? ORDER BY rowid"
			args = append(args, rowid)
		} else {
			if after != nil {
				query += " WHERE (" + strings.Join(keyCols, ", ") + ") > (?" + strings.Repeat(", ?", len(keyCols)-1) + ")"
				args = append(args, after...)
			}
			query += " ORDER BY " + strings.Join(keyCols, ", ")
		}
		rows, n, readErr := readRows(ctx, src, query+fmt.Sprintf(" LIMIT %d", recoverPage), args, len(cols)+boolInt(t.key == 0))
		for _, r := range rows {
			if t.key == 0 {
				rowid, r = r[0].(int64), r[1:]
			} else {
				after = r[:t.key]
			}
			if _, err := dst.ExecContext(ctx, ins, r...); err != nil {
				return false, err
			}
			*t.count++
		}
		if ctx.Err() != nil {
			return false, ctx.Err()
		}
		if readErr == nil {
			if n < recoverPage {
				return complete, nil
			}
			skip = 1
			continue
		}
		// A damaged page: go on past it.
		complete = false
		if t.key == 0 {
			rowid += skip
			skip = min(2*skip, 1<<40)
			continue
		}
		if after, err = nextFirstByte(after, len(keyCols)); err != nil {
			return false, nil // past the last key
		}
	}
	return false, nil
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// readRows runs query and returns the rows read before any error, how
// many there were, and the error.
func readRows(ctx context.Context, db *sql.DB, query string, args []any, ncols int) ([][]any, int, error) {
	rs, err := db.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, 0, err
	}
	defer rs.Close()
	var out [][]any
	for rs.Next() {
		vals := make([]any, ncols)
		ptrs := make([]any, ncols)
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rs.Scan(ptrs...); err != nil {
			return out, len(out), err
		}
		out = append(out, vals)
	}
	return out, len(out), rs.Err()
}

// nextFirstByte returns a key (of nkeys columns) just past every key that
// shares the first byte of after's first column (a blob), to skip a
// damaged page; from the start, past the keys that start with byte 0.
func nextFirstByte(after []any, nkeys int) ([]any, error) {
	var first []byte
	if after != nil {
		first, _ = after[0].([]byte)
	}
	b := byte(0)
	if len(first) > 0 {
		if first[0] == 0xff {
			return nil, errors.New("no further keys")
		}
		b = first[0] + 1
	}
	// (b, NULL, ...) < every key whose first column starts with b: a
	// NULL makes the comparison of equal first columns false.
	next := make([]any, nkeys)
	next[0] = []byte{b}
	return next, nil
}

// forgetSigned clears the signed prekey record of every mailbox whose
// delivery tokens may be lost, and returns how many it cleared: of every
// mailbox if the tokens table had damaged pages (which mailboxes lost
// tokens cannot be told), else of those with no token left (a registered
// mailbox always holds its owner's). A mailbox without a signed record is
// answered NotFound to its owner's GetPrekeyCount, and the owner's client
// then registers the whole mailbox again, every token included
// (docs/operations.md, "After damage"); otherwise its senders would be
// refused for as long as the relay lacks their tokens, and its owner
// would never know.
func forgetSigned(ctx context.Context, db *sql.DB, allTokensSuspect bool) (int, error) {
	q := `UPDATE mailboxes SET signed = NULL WHERE signed IS NOT NULL AND id NOT IN (SELECT mailbox FROM tokens)`
	if allTokensSuspect {
		q = `UPDATE mailboxes SET signed = NULL WHERE signed IS NOT NULL`
	}
	res, err := db.ExecContext(ctx, q)
	if err != nil {
		return 0, fmt.Errorf("mark mailboxes for registration: %w", err)
	}
	n, err := res.RowsAffected()
	return int(n), err
}

// recount makes every mailbox that owns rows exist and sets its counters
// from its pending envelopes. A mailbox whose row was lost gets next seq
// past seqGap, so no seq its owner may still acknowledge is reused.
func recount(ctx context.Context, db *sql.DB, now time.Time) error {
	for _, q := range []struct {
		sql  string
		args []any
	}{
		{`INSERT OR IGNORE INTO mailboxes (id, seen, next_seq)
			SELECT mailbox, ?, coalesce(max(seq), 0) + 1 + ? FROM (
				SELECT mailbox, seq FROM envelopes
				UNION ALL SELECT mailbox, 0 FROM tokens
				UNION ALL SELECT mailbox, 0 FROM prekeys
				UNION ALL SELECT mailbox, 0 FROM acked)
			GROUP BY mailbox`, []any{unixDay(now), seqGap}},
		{`UPDATE mailboxes SET
			count = (SELECT count(*) FROM envelopes WHERE mailbox = mailboxes.id),
			bytes = (SELECT coalesce(sum(size), 0) FROM envelopes WHERE mailbox = mailboxes.id),
			next_seq = max(next_seq, (SELECT coalesce(max(seq), 0) + 1 FROM envelopes WHERE mailbox = mailboxes.id))`, nil},
	} {
		if _, err := db.ExecContext(ctx, q.sql, q.args...); err != nil {
			return err
		}
	}
	return nil
}
