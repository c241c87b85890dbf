// Package localstore is the Ferry client's local state: one SQLite database
// in the profile directory holding the profile (identity, device key, prekey
// secrets), contacts with their session state, the message history, the
// outbox, the ids already seen (for de-duplication) and outstanding invites.
//
// Everything sensitive is sealed at rest with XChaCha20-Poly1305 under a
// 32-byte profile key; only ids, timestamps, states and ordering columns are
// stored in the clear. The profile key lives in the file KeyFile, either in
// the clear (protected by the file's 0600 mode) or wrapped under a
// passphrase with Argon2id. docs/client.md describes the layout and the
// trade-off.
//
// Every change runs inside one transaction (Store.Update), so a crash never
// leaves half of a change applied. Secrets that are replaced or deleted
// (session states, consumed prekeys, taken invites) are erased from the
// files: SQLite's secure_delete zeroes freed cells and pages, and the
// write-ahead log is checkpointed and truncated after every transaction
// that replaced or deleted one, so old ciphertext under the unchanged
// profile key does not outlive the state that forward secrecy discarded. It is not the client's logic: it does not
// know about relays, sessions or receipts beyond storing their bytes.
package localstore

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"

	"golang.org/x/crypto/chacha20poly1305"

	"github.com/ferry-im/ferry/internal/atomicfile"
	_ "modernc.org/sqlite" // database/sql driver "sqlite"
)

// DBFile is the name of the database file in the profile directory.
const DBFile = "ferry.db"

var (
	// ErrNoProfile means the directory holds no profile.
	ErrNoProfile = errors.New("no profile here; run ferry init first")
	// ErrExists means Create found a profile already there.
	ErrExists = errors.New("a profile already exists here")
	// ErrCorrupt means a sealed value failed authentication: the database
	// was modified or belongs to another profile key.
	ErrCorrupt = errors.New("local state failed its integrity check")
	// ErrNotFound means the requested row does not exist.
	ErrNotFound = errors.New("not found")
)

// Options configure Open and Create. The zero value opens a profile whose
// key is not protected by a passphrase.
type Options struct {
	// Passphrase, if non-nil, protects (Create) or unlocks (Open) the
	// profile key with Argon2id.
	Passphrase []byte
	// Rand is the source of keys and nonces. If nil, crypto/rand is used.
	Rand io.Reader
}

func (o Options) rand() io.Reader {
	if o.Rand == nil {
		return rand.Reader
	}
	return o.Rand
}

// Store is an open profile database. Its methods are safe for concurrent
// use, and several processes may open the same profile: transactions are
// taken with BEGIN IMMEDIATE and wait for each other.
type Store struct {
	dir    string
	key    []byte // the profile key
	db     *sql.DB
	seal   sealer
	idxKey []byte // HMAC key for lookup columns derived from the profile key

	// stmts holds the statements prepared so far, by their SQL: parsing
	// SQL was the largest single cost of a transaction.
	stmtMu sync.Mutex
	stmts  map[string]*sql.Stmt
	wanted map[string]bool // queries to prepare after the transaction

	// unscrubbed is set while committed transactions replaced or deleted
	// secrets whose old bytes may still be in the WAL (a checkpoint was
	// not done or could not finish).
	unscrubbed atomic.Bool
	closeOnce  sync.Once
	closeErr   error
}

// Exists reports whether dir holds a profile.
func Exists(dir string) bool {
	_, err := os.Stat(filepath.Join(dir, KeyFile))
	return err == nil
}

// Create makes a new profile in dir (created with mode 0700 if missing):
// a fresh profile key in KeyFile and an empty database. It fails with
// ErrExists if a profile is there already.
func Create(ctx context.Context, dir string, opts Options) (*Store, error) {
	r := opts.rand()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create profile directory: %w", err)
	}
	if Exists(dir) {
		return nil, ErrExists
	}
	key, file, err := newKeyFile(r, opts.Passphrase)
	if err != nil {
		return nil, err
	}
	// The database is initialised before the key file is written: a crash
	// in between leaves no key file, so the directory still counts as
	// having no profile and Create can run again.
	for _, f := range []string{DBFile, DBFile + "-wal", DBFile + "-shm"} {
		os.Remove(filepath.Join(dir, f))
	}
	s, err := open(ctx, dir, key, r)
	if err != nil {
		return nil, err
	}
	if err := s.initMeta(ctx); err != nil {
		s.Close()
		return nil, err
	}
	if err := atomicfile.Write(filepath.Join(dir, KeyFile), file); err != nil {
		s.Close()
		return nil, fmt.Errorf("write key file: %w", err)
	}
	return s, nil
}

// Open opens the profile in dir. A wrong or missing passphrase fails with
// ErrWrongPassphrase, ErrPassphraseRequired or ErrNoPassphrase, and nothing
// on disk is changed.
func Open(ctx context.Context, dir string, opts Options) (*Store, error) {
	r := opts.rand()
	file, err := os.ReadFile(filepath.Join(dir, KeyFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, ErrNoProfile
	}
	if err != nil {
		return nil, fmt.Errorf("read key file: %w", err)
	}
	key, err := unwrapKey(file, opts.Passphrase)
	if err != nil {
		return nil, err
	}
	if _, err := os.Stat(filepath.Join(dir, DBFile)); err != nil {
		return nil, fmt.Errorf("open database: %w", err)
	}
	s, err := open(ctx, dir, key, r)
	if err != nil {
		return nil, err
	}
	if err := s.checkMeta(ctx); err != nil {
		s.Close()
		return nil, err
	}
	// A process killed between a commit and its checkpoint left the old
	// frames in the WAL: erase them now.
	s.scrub(ctx)
	return s, nil
}

func open(ctx context.Context, dir string, key []byte, r io.Reader) (*Store, error) {
	aead, err := chacha20poly1305.NewX(key)
	if err != nil {
		return nil, err
	}
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte("ferry localstore index v1"))
	dsn := "file:" + filepath.Join(dir, DBFile) +
		"?_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)&_pragma=synchronous(FULL)" +
		"&_pragma=secure_delete(ON)&_txlock=immediate"
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("open database: %w", err)
	}
	// One connection: transactions of this process queue in database/sql
	// instead of spinning on SQLite's busy handler.
	db.SetMaxOpenConns(1)
	// The database file holds only sealed secrets, but keep it private.
	os.Chmod(filepath.Join(dir, DBFile), 0o600)
	return &Store{dir: dir, key: key, db: db, seal: sealer{aead: aead, rand: r}, idxKey: mac.Sum(nil)}, nil
}

// check is the plaintext sealed in meta to detect a key that does not match
// the database.
const check = "ferry profile v1"

func (s *Store) initMeta(ctx context.Context) error {
	sealed, err := s.seal.seal("meta|check", []byte(check))
	if err != nil {
		return err
	}
	return s.Update(ctx, func(tx *Tx) error {
		if _, err := tx.tx.ExecContext(ctx, schema); err != nil {
			return fmt.Errorf("create schema: %w", err)
		}
		if _, err := tx.tx.ExecContext(ctx, `INSERT OR REPLACE INTO meta (k, v) VALUES ('check', ?), ('schema', ?)`,
			sealed, []byte(strconv.Itoa(schemaVersion))); err != nil {
			return fmt.Errorf("write meta: %w", err)
		}
		return nil
	})
}

func (s *Store) checkMeta(ctx context.Context) error {
	var sealed, ver []byte
	if err := s.db.QueryRowContext(ctx, `SELECT v FROM meta WHERE k = 'check'`).Scan(&sealed); err != nil {
		return fmt.Errorf("read meta: %w", err)
	}
	if v, err := s.seal.open("meta|check", sealed); err != nil || string(v) != check {
		return fmt.Errorf("profile key does not match the database: %w", ErrCorrupt)
	}
	if err := s.db.QueryRowContext(ctx, `SELECT v FROM meta WHERE k = 'schema'`).Scan(&ver); err != nil {
		return fmt.Errorf("read meta: %w", err)
	}
	v, err := strconv.Atoi(string(ver))
	if err != nil || v < 1 {
		return fmt.Errorf("read schema version %q: %w", ver, ErrCorrupt)
	}
	if v > schemaVersion {
		return fmt.Errorf("this profile was made by a newer Ferry (schema %d; this one knows up to %d): update Ferry", v, schemaVersion)
	}
	if v < schemaVersion {
		return s.migrate(ctx, v)
	}
	return nil
}

// SetPassphrase rewrites the key file so that the profile key is wrapped
// under passphrase, or kept in the clear if passphrase is nil. The key and
// the database do not change, so a crash leaves either the old key file or
// the new one.
func (s *Store) SetPassphrase(passphrase []byte) error {
	file, err := keyFile(s.seal.rand, s.key, passphrase)
	if err != nil {
		return err
	}
	if err := atomicfile.Write(filepath.Join(s.dir, KeyFile), file); err != nil {
		return fmt.Errorf("write key file: %w", err)
	}
	return nil
}

// Close erases what the WAL still holds of replaced secrets and closes the
// database. It is idempotent.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		// The last connection to close checkpoints and deletes the WAL
		// anyway; this covers another process still holding it open.
		if s.unscrubbed.Load() {
			s.scrub(context.Background())
		}
		s.stmtMu.Lock()
		for _, st := range s.stmts {
			st.Close()
		}
		s.stmtMu.Unlock()
		s.closeErr = s.db.Close()
	})
	return s.closeErr
}

// scrub copies the WAL into the database and truncates it to zero bytes,
// so frames holding old versions of replaced or deleted secrets leave the
// files (secure_delete has zeroed them in the pages written back). If
// another connection's reader keeps the checkpoint from finishing within
// the busy timeout, the next transaction or Close tries again.
func (s *Store) scrub(ctx context.Context) {
	var busy, logFrames, done int
	err := s.db.QueryRowContext(ctx, `PRAGMA wal_checkpoint(TRUNCATE)`).Scan(&busy, &logFrames, &done)
	s.unscrubbed.Store(err != nil || busy != 0)
}

// Update runs fn inside one immediate (write-locked) transaction and commits
// it if fn returns nil; otherwise nothing fn did is kept.
func (s *Store) Update(ctx context.Context, fn func(*Tx) error) error {
	sqlTx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin transaction: %w", err)
	}
	tx := &Tx{tx: sqlTx, s: s, ctx: ctx}
	defer s.prepareWanted(ctx)
	if err := fn(tx); err != nil {
		sqlTx.Rollback()
		return err
	}
	if err := sqlTx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	// The change is durable; erasing the old versions is best effort
	// and never turns a committed change into an error.
	if tx.erased || s.unscrubbed.Load() {
		s.unscrubbed.Store(true)
		s.scrub(ctx)
	}
	return nil
}

// Tx is one transaction. It must not be used after the function given to
// Update returns.
type Tx struct {
	tx  *sql.Tx
	s   *Store
	ctx context.Context
	// erased records that the transaction replaced or deleted a secret, so
	// Update checkpoints the WAL after the commit.
	erased bool
}

// stmt returns the transaction's statement for query. A query seen for
// the first time is prepared in the transaction only, and once the
// transaction is over on the store, for later ones: preparing on the
// store inside a transaction would wait for the store's one connection.
func (t *Tx) stmt(query string) (*sql.Stmt, error) {
	s := t.s
	s.stmtMu.Lock()
	st := s.stmts[query]
	if st == nil {
		if s.wanted == nil {
			s.wanted = make(map[string]bool)
		}
		s.wanted[query] = true
	}
	s.stmtMu.Unlock()
	if st != nil {
		return t.tx.StmtContext(t.ctx, st), nil
	}
	return t.tx.PrepareContext(t.ctx, query)
}

// prepareWanted prepares on the store the queries transactions have asked
// for since the last call. Outside a transaction only. It does not hold
// stmtMu while it prepares: a transaction holding the store's one
// connection may need stmtMu to finish.
func (s *Store) prepareWanted(ctx context.Context) {
	s.stmtMu.Lock()
	var queries []string
	for q := range s.wanted {
		queries = append(queries, q)
	}
	clear(s.wanted)
	s.stmtMu.Unlock()
	for _, q := range queries {
		st, err := s.db.PrepareContext(ctx, q)
		if err != nil {
			continue // asked for again next time
		}
		s.stmtMu.Lock()
		if s.stmts == nil {
			s.stmts = make(map[string]*sql.Stmt)
		}
		if s.stmts[q] == nil {
			s.stmts[q] = st
			st = nil
		}
		s.stmtMu.Unlock()
		if st != nil {
			st.Close() // another goroutine prepared it first
		}
	}
}

func (t *Tx) exec(query string, args ...any) (sql.Result, error) {
	st, err := t.stmt(query)
	if err != nil {
		return nil, err
	}
	return st.ExecContext(t.ctx, args...)
}

func (t *Tx) query(query string, args ...any) (*sql.Rows, error) {
	st, err := t.stmt(query)
	if err != nil {
		return nil, err
	}
	return st.QueryContext(t.ctx, args...)
}

func (t *Tx) queryRow(query string, args ...any) *sql.Row {
	st, err := t.stmt(query)
	if err != nil {
		return t.tx.QueryRowContext(t.ctx, query, args...) // reports the error
	}
	return st.QueryRowContext(t.ctx, args...)
}

func (t *Tx) sealJSON(ad string, v any) ([]byte, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	return t.s.seal.seal(ad, b)
}

func (t *Tx) openJSON(ad string, sealed []byte, v any) error {
	b, err := t.s.seal.open(ad, sealed)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("decode %s: %w", ad, ErrCorrupt)
	}
	return nil
}
