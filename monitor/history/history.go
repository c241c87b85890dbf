// Package history is the monitor's SQLite history: every trial, every
// event (a period in one state) and every cell's current assessment, in
// one file in the monitor's data directory. It implements monitor.Store
// for the Runner and the queries of the status command, the dashboard and
// the report.
//
// It is not an analysis tool: it stores what the classifier concluded and
// hands it back in time order; aggregation is the dashboard's.
package history

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	_ "modernc.org/sqlite" // registers the "sqlite" database/sql driver

	"github.com/ferry-im/ferry/monitor"
)

// FileName is the history's file name in a data directory.
const FileName = "monitor.db"

// ErrNoHistory is returned (wrapped) by OpenExisting when the file does
// not exist.
var ErrNoHistory = errors.New("no monitor history")

// DB is an open history. Its methods are safe for concurrent use; several
// processes may open one file (one writer at a time).
type DB struct {
	db *sql.DB
}

var _ monitor.Store = (*DB)(nil)

const schema = `
CREATE TABLE IF NOT EXISTS trials (
	id        INTEGER PRIMARY KEY,
	cell      TEXT    NOT NULL,
	start     INTEGER NOT NULL,
	ok        INTEGER NOT NULL,
	data      TEXT    NOT NULL
);
CREATE INDEX IF NOT EXISTS trials_cell_start ON trials (cell, start);
CREATE INDEX IF NOT EXISTS trials_start ON trials (start);
CREATE TABLE IF NOT EXISTS events (
	id        INTEGER PRIMARY KEY,
	cell      TEXT    NOT NULL,
	start     INTEGER NOT NULL,
	end       INTEGER,
	data      TEXT    NOT NULL
);
CREATE INDEX IF NOT EXISTS events_cell_start ON events (cell, start);
CREATE TABLE IF NOT EXISTS cells (
	cell      TEXT PRIMARY KEY,
	data      TEXT NOT NULL
);
PRAGMA user_version = 1;
`

// Open opens the history at path, creating it if needed.
func Open(ctx context.Context, path string) (*DB, error) {
	if path == "" || strings.ContainsAny(path, "?#") {
		return nil, fmt.Errorf("open monitor history: unusable path %q", path)
	}
	dsn := path + "?_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)&_pragma=synchronous(NORMAL)&_txlock=immediate"
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("open monitor history: %w", err)
	}
	db.SetMaxOpenConns(4)
	if _, err := db.ExecContext(ctx, schema); err != nil {
		db.Close()
		return nil, fmt.Errorf("open monitor history %s: %w", path, err)
	}
	return &DB{db: db}, nil
}

// OpenExisting opens the history at path for reading and writing; it
// fails with an error wrapping ErrNoHistory if there is none.
func OpenExisting(ctx context.Context, path string) (*DB, error) {
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%w at %s", ErrNoHistory, path)
	}
	return Open(ctx, path)
}

// Close closes the database.
func (d *DB) Close() error { return d.db.Close() }

func ns(t time.Time) int64 { return t.UnixNano() }

// AddTrial records a trial.
func (d *DB) AddTrial(ctx context.Context, t *monitor.Trial) error {
	b, err := json.Marshal(t)
	if err != nil {
		return fmt.Errorf("add trial: %w", err)
	}
	ok := 0
	if t.OK {
		ok = 1
	}
	_, err = d.db.ExecContext(ctx, `INSERT INTO trials (cell, start, ok, data) VALUES (?, ?, ?, ?)`, t.Cell.String(), ns(t.Start), ok, string(b))
	if err != nil {
		return fmt.Errorf("add trial: %w", err)
	}
	return nil
}

// SaveAssessment records a cell's assessment and, on a change, ends the
// open event and starts the new one, in one transaction.
func (d *DB) SaveAssessment(ctx context.Context, a monitor.Assessment, ended, started *monitor.Event) error {
	ab, err := json.Marshal(a)
	if err != nil {
		return fmt.Errorf("save assessment: %w", err)
	}
	tx, err := d.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("save assessment: %w", err)
	}
	defer tx.Rollback()
	cell := a.Cell.String()
	if _, err := tx.ExecContext(ctx, `INSERT INTO cells (cell, data) VALUES (?, ?) ON CONFLICT (cell) DO UPDATE SET data = excluded.data`, cell, string(ab)); err != nil {
		return fmt.Errorf("save assessment: %w", err)
	}
	if ended != nil {
		eb, _ := json.Marshal(ended)
		if _, err := tx.ExecContext(ctx, `UPDATE events SET end = ?, data = ? WHERE cell = ? AND end IS NULL`, ns(ended.End), string(eb), cell); err != nil {
			return fmt.Errorf("end event: %w", err)
		}
	}
	if started != nil {
		// An open event the new one starts no later than is superseded;
		// one a restarted monitor left open ends where the new one starts.
		if _, err := tx.ExecContext(ctx, `DELETE FROM events WHERE cell = ? AND end IS NULL AND start >= ?`, cell, ns(started.Start)); err != nil {
			return fmt.Errorf("drop superseded event: %w", err)
		}
		if _, err := tx.ExecContext(ctx, `UPDATE events SET end = ? WHERE cell = ? AND end IS NULL`, ns(started.Start), cell); err != nil {
			return fmt.Errorf("end event: %w", err)
		}
		sb, _ := json.Marshal(started)
		if _, err := tx.ExecContext(ctx, `INSERT INTO events (cell, start, data) VALUES (?, ?, ?)`, cell, ns(started.Start), string(sb)); err != nil {
			return fmt.Errorf("start event: %w", err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("save assessment: %w", err)
	}
	return nil
}

// RecentTrials returns up to n of the cell's latest trials, oldest first.
func (d *DB) RecentTrials(ctx context.Context, c monitor.Cell, n int) ([]monitor.Trial, error) {
	rows, err := d.db.QueryContext(ctx, `SELECT data FROM (SELECT id, data FROM trials WHERE cell = ? ORDER BY start DESC, id DESC LIMIT ?) ORDER BY id`, c.String(), n)
	if err != nil {
		return nil, fmt.Errorf("read trials: %w", err)
	}
	return scanAll[monitor.Trial](rows)
}

// OpenEvent returns the cell's open event, or nil.
func (d *DB) OpenEvent(ctx context.Context, c monitor.Cell) (*monitor.Event, error) {
	rows, err := d.db.QueryContext(ctx, `SELECT data FROM events WHERE cell = ? AND end IS NULL ORDER BY start DESC LIMIT 1`, c.String())
	if err != nil {
		return nil, fmt.Errorf("read open event: %w", err)
	}
	evs, err := scanAll[monitor.Event](rows)
	if err != nil || len(evs) == 0 {
		return nil, err
	}
	e := evs[0]
	e.End = time.Time{}
	return &e, nil
}

// Cells returns every cell's current assessment, ordered by cell.
func (d *DB) Cells(ctx context.Context) ([]monitor.Assessment, error) {
	rows, err := d.db.QueryContext(ctx, `SELECT data FROM cells ORDER BY cell`)
	if err != nil {
		return nil, fmt.Errorf("read cells: %w", err)
	}
	return scanAll[monitor.Assessment](rows)
}

// Trials returns the cell's trials that started in [from, to), oldest
// first, at most limit of them (the latest) when limit is positive. A zero
// cell selects every cell.
func (d *DB) Trials(ctx context.Context, c monitor.Cell, from, to time.Time, limit int) ([]monitor.Trial, error) {
	where := `start >= ? AND start < ?`
	args := []any{ns(from), ns(to)}
	if c != (monitor.Cell{}) {
		where += ` AND cell = ?`
		args = append(args, c.String())
	}
	q := `SELECT data FROM trials WHERE ` + where + ` ORDER BY start, id`
	if limit > 0 {
		q = `SELECT data FROM (SELECT id, start, data FROM trials WHERE ` + where + ` ORDER BY start DESC, id DESC LIMIT ?) ORDER BY start, id`
		args = append(args, limit)
	}
	rows, err := d.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("read trials: %w", err)
	}
	return scanAll[monitor.Trial](rows)
}

// Events returns the events that overlap [from, to), oldest first; a zero
// cell selects every cell.
func (d *DB) Events(ctx context.Context, c monitor.Cell, from, to time.Time) ([]monitor.Event, error) {
	q := `SELECT data FROM events WHERE start < ? AND (end IS NULL OR end > ?)`
	args := []any{ns(to), ns(from)}
	if c != (monitor.Cell{}) {
		q += ` AND cell = ?`
		args = append(args, c.String())
	}
	rows, err := d.db.QueryContext(ctx, q+` ORDER BY start, id`, args...)
	if err != nil {
		return nil, fmt.Errorf("read events: %w", err)
	}
	return scanAll[monitor.Event](rows)
}

// scanAll decodes the JSON of every row's single column and closes rows.
func scanAll[T any](rows *sql.Rows) ([]T, error) {
	defer rows.Close()
	var out []T
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			return nil, fmt.Errorf("read history: %w", err)
		}
		var v T
		if err := json.Unmarshal([]byte(s), &v); err != nil {
			return nil, fmt.Errorf("decode history row: %w", err)
		}
		out = append(out, v)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read history: %w", err)
	}
	return out, nil
}
