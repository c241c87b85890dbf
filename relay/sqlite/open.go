package sqlite

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	sqlite "modernc.org/sqlite"
)

// Errors of Open that callers branch on. The error Open returns wraps one
// of them and says what it found.
var (
	// ErrMissing means the database file does not exist and
	// Options.MustExist forbade creating it.
	ErrMissing = errors.New("relay database is missing")
	// ErrDamaged means the database file exists but is not a sound relay
	// database: empty, not SQLite, or failing SQLite's integrity check.
	// Open refuses it rather than serve part of it; Recover rebuilds a
	// database from what can still be read. Later failures that SQLite
	// reports as corruption wrap it too.
	ErrDamaged = errors.New("relay database is damaged")
	// ErrEmpty is the ErrDamaged of an empty (0-byte) file, which a relay
	// never leaves behind: nothing in it can be recovered.
	ErrEmpty = fmt.Errorf("%w: the file is empty (0 bytes)", ErrDamaged)
)

// sqliteHeader starts every SQLite database file.
const sqliteHeader = "SQLite format 3\x00"

// connPragmas are set on every connection.
const connPragmas = "?_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)&_pragma=synchronous(FULL)"

// Open opens the database at path, creating it if it does not exist
// (unless Options.MustExist), checks it (SQLite's integrity_check, or
// quick_check with Options.QuickCheck) and migrates it to the current
// schema. A database that is empty, not SQLite or damaged is refused with
// an error wrapping ErrDamaged; nothing is changed in it. The Store owns a
// writer goroutine until Close.
func Open(ctx context.Context, path string, opts *Options) (*Store, error) {
	if path == "" || strings.ContainsAny(path, "?#") {
		return nil, fmt.Errorf("open relay database: unusable path %q", path)
	}
	if err := prepareFile(ctx, path, opts.mustExist()); err != nil {
		return nil, fmt.Errorf("open relay database %s: %w", path, err)
	}
	// temp_store(MEMORY) keeps the statement journals (which let one
	// statement of a batch roll back alone, e.g. a multi-row Ack) in
	// memory rather than in a temporary file written page by page; they
	// play no part in crash recovery, which is the WAL's. secure_delete
	// (FAST) zeroes deleted content where that costs no extra I/O.
	wdb, err := sql.Open("sqlite", path+connPragmas+"&_pragma=cache_size(-32000)&_pragma=journal_size_limit(67108864)&_pragma=temp_store(MEMORY)&_pragma=secure_delete(FAST)&_txlock=immediate")
	if err != nil {
		return nil, fmt.Errorf("open relay database %s: %w", path, err)
	}
	wdb.SetMaxOpenConns(1)
	wdb.SetMaxIdleConns(1)
	wdb.SetConnMaxLifetime(0)
	wdb.SetConnMaxIdleTime(0)
	if err := check(ctx, wdb, opts.quickCheck()); err != nil {
		wdb.Close()
		return nil, fmt.Errorf("open relay database %s: %w", path, err)
	}
	if err := migrate(ctx, wdb); err != nil {
		wdb.Close()
		return nil, fmt.Errorf("open relay database %s: %w", path, err)
	}
	s, err := start(ctx, path, wdb, opts)
	if err != nil {
		return nil, fmt.Errorf("open relay database %s: %w", path, err)
	}
	return s, nil
}

// start opens the read pool and starts the writer on a checked, migrated
// database. It closes wdb if it fails.
func start(ctx context.Context, path string, wdb *sql.DB, opts *Options) (*Store, error) {
	rdb, err := sql.Open("sqlite", path+connPragmas+"&_pragma=query_only(1)")
	if err != nil {
		wdb.Close()
		return nil, err
	}
	rdb.SetMaxOpenConns(opts.readers())
	rdb.SetMaxIdleConns(opts.readers())
	rdb.SetConnMaxIdleTime(0)
	s := &Store{
		path:     path,
		wdb:      wdb,
		rdb:      rdb,
		ops:      make(chan *op, 4*opts.maxBatch()),
		done:     make(chan struct{}),
		maxBatch: opts.maxBatch(),
	}
	fail := func(err error) (*Store, error) {
		s.read.close()
		rdb.Close()
		wdb.Close()
		return nil, err
	}
	if err := s.read.prepare(ctx, rdb); err != nil {
		return fail(err)
	}
	conn, err := wdb.Conn(ctx)
	if err != nil {
		return fail(err)
	}
	w := &writer{conn: conn, boxes: make(map[[16]byte]*boxState)}
	if err := w.prepare(ctx); err != nil {
		conn.Close()
		return fail(err)
	}
	s.w = w
	go func() {
		defer close(s.done)
		w.run(s.ops, s.maxBatch)
	}()
	return s, nil
}

// prepareFile makes sure path holds something to open: it creates a new
// database if there is none (unless mustExist), and refuses an empty file
// or one that is not SQLite.
func prepareFile(ctx context.Context, path string, mustExist bool) error {
	f, err := os.Open(path)
	switch {
	case errors.Is(err, fs.ErrNotExist) && mustExist:
		return fmt.Errorf("%w: the file does not exist", ErrMissing)
	case errors.Is(err, fs.ErrNotExist):
		return create(ctx, path)
	case err != nil:
		return err
	}
	defer f.Close()
	head := make([]byte, len(sqliteHeader))
	n, err := io.ReadFull(f, head)
	switch {
	case n == 0 && (err == io.EOF || err == nil):
		return ErrEmpty
	case err != nil && err != io.ErrUnexpectedEOF:
		return err
	case !bytes.Equal(head[:n], []byte(sqliteHeader)):
		return fmt.Errorf("%w: the file does not start like an SQLite database", ErrDamaged)
	}
	return nil
}

// create makes a new, empty database at path: it builds it at path.new and
// renames it into place once it is complete and synced, so a crash never
// leaves a half-made (or empty) file at path.
func create(ctx context.Context, path string) error {
	tmp := path + ".new"
	for _, p := range []string{tmp, tmp + "-wal", tmp + "-shm"} {
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("create: %w", err)
		}
	}
	// The database holds token hashes and sealed envelopes: readable by
	// its owner only (SQLite gives the -wal and -shm files the same mode).
	f, err := os.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("create: %w", err)
	}
	f.Close()
	db, err := sql.Open("sqlite", tmp+connPragmas)
	if err != nil {
		return fmt.Errorf("create: %w", err)
	}
	err = migrate(ctx, db)
	if err == nil {
		_, err = db.ExecContext(ctx, "PRAGMA wal_checkpoint(TRUNCATE)")
	}
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = syncFile(tmp)
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err == nil {
		err = syncFile(filepath.Dir(path))
	}
	if err != nil {
		return fmt.Errorf("create: %w", err)
	}
	return nil
}

func syncFile(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}

// check runs SQLite's integrity check (or quick check) and returns an
// error wrapping ErrDamaged with the first problems it reports.
func check(ctx context.Context, db *sql.DB, quick bool) error {
	pragma := "PRAGMA integrity_check(10)"
	if quick {
		pragma = "PRAGMA quick_check(10)"
	}
	stopped := func(err error) error {
		if errors.Is(damaged(err), ErrDamaged) {
			return fmt.Errorf("%w: SQLite's integrity check stopped: %v", ErrDamaged, err)
		}
		return fmt.Errorf("check: %w", err)
	}
	rows, err := db.QueryContext(ctx, pragma)
	if err != nil {
		return stopped(err)
	}
	defer rows.Close()
	var problems []string
	for rows.Next() {
		var p string
		if err := rows.Scan(&p); err != nil {
			return stopped(err)
		}
		// A row may hold several lines, under a heading naming the
		// database.
		for _, line := range strings.Split(p, "\n") {
			if line != "" && !strings.HasPrefix(line, "*** ") {
				problems = append(problems, line)
			}
		}
	}
	if err := rows.Err(); err != nil {
		return stopped(err)
	}
	if len(problems) == 1 && problems[0] == "ok" {
		return nil
	}
	if len(problems) == 0 {
		return fmt.Errorf("%w: the integrity check reported nothing", ErrDamaged)
	}
	more := ""
	if len(problems) > 1 {
		more = fmt.Sprintf(" and %d more problems", len(problems)-1)
	}
	return fmt.Errorf("%w: SQLite's integrity check reports %q%s", ErrDamaged, problems[0], more)
}

// SQLite's primary result codes for a damaged file.
const (
	codeCorrupt = 11 // SQLITE_CORRUPT: the database disk image is malformed
	codeNotADB  = 26 // SQLITE_NOTADB: file is not a database
)

// damaged wraps err with ErrDamaged if SQLite reports the file as damaged.
func damaged(err error) error {
	var se *sqlite.Error
	if errors.As(err, &se) {
		switch se.Code() & 0xff {
		case codeCorrupt, codeNotADB:
			return fmt.Errorf("%w: %w", ErrDamaged, err)
		}
	}
	return err
}
