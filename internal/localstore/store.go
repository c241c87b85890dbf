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
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/chacha20poly1305"
	_ "modernc.org/sqlite" // database/sql driver "sqlite"
)

// DBFile is the name of the database file in the profile directory.
const DBFile = "ferry.db"

// schemaVersion is the database layout version stored in meta.
const schemaVersion = 1

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

// Store is an open profile database. Its methods are safe for concurrent
// use, and several processes may open the same profile: transactions are
// taken with BEGIN IMMEDIATE and wait for each other.
type Store struct {
	db     *sql.DB
	seal   sealer
	idxKey []byte // HMAC key for lookup columns derived from the profile key

	// unscrubbed is set while committed transactions replaced or deleted
	// secrets whose old bytes may still be in the WAL (a checkpoint was
	// not done or could not finish).
	unscrubbed atomic.Bool
	closeOnce  sync.Once
	closeErr   error
}

const schema = `
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS profile (id INTEGER PRIMARY KEY CHECK (id = 1), data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS contacts (id INTEGER PRIMARY KEY AUTOINCREMENT, data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS messages (
	seq INTEGER PRIMARY KEY AUTOINCREMENT,
	id BLOB NOT NULL UNIQUE,
	contact INTEGER NOT NULL,
	outgoing INTEGER NOT NULL,
	sent INTEGER NOT NULL,
	received INTEGER NOT NULL,
	state INTEGER NOT NULL,
	n INTEGER NOT NULL DEFAULT 0,
	held INTEGER NOT NULL DEFAULT 0,
	body BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_contact ON messages (contact, seq);
CREATE TABLE IF NOT EXISTS outbox (
	seq INTEGER PRIMARY KEY AUTOINCREMENT,
	id BLOB NOT NULL UNIQUE,
	contact INTEGER NOT NULL,
	created INTEGER NOT NULL,
	attempts INTEGER NOT NULL DEFAULT 0,
	data BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS seen (id BLOB PRIMARY KEY, at INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS seen_at ON seen (at);
CREATE TABLE IF NOT EXISTS invites (tag BLOB PRIMARY KEY, created INTEGER NOT NULL, data BLOB NOT NULL);
`

// Exists reports whether dir holds a profile.
func Exists(dir string) bool {
	_, err := os.Stat(filepath.Join(dir, KeyFile))
	return err == nil
}

// Create makes a new profile in dir (created with mode 0700 if missing):
// a fresh profile key in KeyFile and an empty database. It fails with
// ErrExists if a profile is there already.
func Create(ctx context.Context, dir string, opts Options) (*Store, error) {
	r := opts.Rand
	if r == nil {
		r = rand.Reader
	}
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
	if err := writeFileSync(filepath.Join(dir, KeyFile), file); err != nil {
		s.Close()
		return nil, fmt.Errorf("write key file: %w", err)
	}
	return s, nil
}

// Open opens the profile in dir. A wrong or missing passphrase fails with
// ErrWrongPassphrase, ErrPassphraseRequired or ErrNoPassphrase, and nothing
// on disk is changed.
func Open(ctx context.Context, dir string, opts Options) (*Store, error) {
	r := opts.Rand
	if r == nil {
		r = rand.Reader
	}
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
	if _, err := db.ExecContext(ctx, schema); err != nil {
		db.Close()
		return nil, fmt.Errorf("create schema: %w", err)
	}
	// The database file holds only sealed secrets, but keep it private.
	os.Chmod(filepath.Join(dir, DBFile), 0o600)
	return &Store{db: db, seal: sealer{aead: aead, rand: r}, idxKey: mac.Sum(nil)}, nil
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
	if string(ver) != strconv.Itoa(schemaVersion) {
		return fmt.Errorf("database has schema version %s, this ferry understands %d", ver, schemaVersion)
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
}

// Profile returns the profile or ErrNotFound.
func (t *Tx) Profile() (*Profile, error) {
	var sealed []byte
	err := t.tx.QueryRowContext(t.ctx, `SELECT data FROM profile WHERE id = 1`).Scan(&sealed)
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
	if _, err := t.tx.ExecContext(t.ctx, `INSERT OR REPLACE INTO profile (id, data) VALUES (1, ?)`, sealed); err != nil {
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
	// SendN is the counter of the last text message sent to the contact.
	SendN uint64 `json:"send_n"`
	// RecvN is the counter up to which the contact's messages were shown
	// in order.
	RecvN uint64 `json:"recv_n"`
}

func contactAD(id int64) string { return "contacts|data|" + strconv.FormatInt(id, 10) }

// Contacts returns every contact in the order they were added.
func (t *Tx) Contacts() ([]*Contact, error) {
	rows, err := t.tx.QueryContext(t.ctx, `SELECT id, data FROM contacts ORDER BY id`)
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
	err := t.tx.QueryRowContext(t.ctx, `SELECT data FROM contacts WHERE id = ?`, id).Scan(&sealed)
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
	if c.ID == 0 {
		// Reserve the id first: the associated data binds the sealed
		// value to it.
		res, err := t.tx.ExecContext(t.ctx, `INSERT INTO contacts (data) VALUES (x'')`)
		if err != nil {
			return fmt.Errorf("insert contact: %w", err)
		}
		if c.ID, err = res.LastInsertId(); err != nil {
			return fmt.Errorf("insert contact: %w", err)
		}
	}
	sealed, err := t.sealJSON(contactAD(c.ID), c)
	if err != nil {
		return err
	}
	if _, err := t.tx.ExecContext(t.ctx, `UPDATE contacts SET data = ? WHERE id = ?`, sealed, c.ID); err != nil {
		return fmt.Errorf("write contact: %w", err)
	}
	t.erased = true // the previous session state
	return nil
}

// State is a message's delivery state. Outgoing messages move
// Queued -> Sent -> Delivered -> Read; incoming ones are stored as
// Delivered and become Read once shown.
type State int

// States, in order: a state never moves backwards. Failed is terminal: the
// relay refused the message for good (unknown mailbox, wrong token, too
// large).
const (
	Queued    State = 0
	Sent      State = 1
	Delivered State = 2
	Read      State = 3
	Failed    State = 4
)

func (s State) String() string {
	switch s {
	case Queued:
		return "queued"
	case Sent:
		return "sent"
	case Delivered:
		return "delivered"
	case Read:
		return "read"
	case Failed:
		return "failed"
	}
	return "state(" + strconv.Itoa(int(s)) + ")"
}

// Message is one text message. Text is sealed at rest; the other fields
// are stored in the clear.
type Message struct {
	Seq      int64 // local order of arrival, assigned by InsertMessage
	ID       [16]byte
	Contact  int64
	Outgoing bool
	Sent     time.Time
	Received time.Time // zero for outgoing messages
	State    State
	Text     string
	// N is the sender's counter for incoming messages (0 if unknown).
	N uint64
	// Held marks an incoming message kept back until the ones before it
	// arrive; Messages does not return held messages.
	Held bool
}

func messageAD(id [16]byte) string { return "messages|body|" + hex.EncodeToString(id[:]) }

// InsertMessage stores m and sets m.Seq. It reports false, and changes
// nothing, if a message with the same id exists.
func (t *Tx) InsertMessage(m *Message) (bool, error) {
	body, err := t.s.seal.seal(messageAD(m.ID), []byte(m.Text))
	if err != nil {
		return false, err
	}
	var recv int64
	if !m.Received.IsZero() {
		recv = m.Received.UnixMilli()
	}
	res, err := t.tx.ExecContext(t.ctx, `INSERT OR IGNORE INTO messages (id, contact, outgoing, sent, received, state, n, held, body)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`, m.ID[:], m.Contact, m.Outgoing, m.Sent.UnixMilli(), recv, int(m.State), int64(m.N), m.Held, body)
	if err != nil {
		return false, fmt.Errorf("insert message: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return false, nil
	}
	m.Seq, err = res.LastInsertId()
	return err == nil, err
}

// AdvanceState moves the message with the given id in the conversation
// with contact to state s if it is in an earlier state, and reports whether
// it moved. Unknown ids are ignored.
func (t *Tx) AdvanceState(id [16]byte, contact int64, s State) (bool, error) {
	res, err := t.tx.ExecContext(t.ctx, `UPDATE messages SET state = ? WHERE id = ? AND contact = ? AND state < ?`,
		int(s), id[:], contact, int(s))
	if err != nil {
		return false, fmt.Errorf("update message state: %w", err)
	}
	n, _ := res.RowsAffected()
	return n > 0, nil
}

// MessageQuery selects messages. Zero fields do not filter.
type MessageQuery struct {
	After    int64 // only messages with Seq > After
	Contact  int64 // only this conversation
	Incoming bool  // only incoming messages
	Limit    int   // at most this many (the most recent ones when Last is set)
	Last     bool  // take the last Limit messages instead of the first
}

// Messages returns the messages matching q in Seq order, leaving out held
// ones.
func (t *Tx) Messages(q MessageQuery) ([]*Message, error) {
	query := `SELECT ` + messageColumns + ` FROM messages WHERE seq > ? AND held = 0`
	args := []any{q.After}
	if q.Contact != 0 {
		query += ` AND contact = ?`
		args = append(args, q.Contact)
	}
	if q.Incoming {
		query += ` AND outgoing = 0`
	}
	if q.Last {
		query += ` ORDER BY seq DESC`
	} else {
		query += ` ORDER BY seq`
	}
	if q.Limit > 0 {
		query += ` LIMIT ?`
		args = append(args, q.Limit)
	}
	out, err := t.queryMessages(query, args...)
	if err != nil {
		return nil, err
	}
	if q.Last {
		for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
			out[i], out[j] = out[j], out[i]
		}
	}
	return out, nil
}

// HeldMessages returns the contact's held messages in counter order; with
// contact 0, every contact's.
func (t *Tx) HeldMessages(contact int64) ([]*Message, error) {
	if contact == 0 {
		return t.queryMessages(`SELECT ` + messageColumns + ` FROM messages WHERE held = 1 ORDER BY contact, n`)
	}
	return t.queryMessages(`SELECT `+messageColumns+` FROM messages WHERE held = 1 AND contact = ? ORDER BY n`, contact)
}

// Release makes a held message visible as the newest message (a new Seq),
// so that it is shown after the ones that were missing before it.
func (t *Tx) Release(m *Message) error {
	if _, err := t.tx.ExecContext(t.ctx, `DELETE FROM messages WHERE id = ?`, m.ID[:]); err != nil {
		return fmt.Errorf("release message: %w", err)
	}
	m.Held = false
	ok, err := t.InsertMessage(m)
	if err == nil && !ok {
		err = fmt.Errorf("release message: %w", ErrCorrupt)
	}
	return err
}

const messageColumns = `seq, id, contact, outgoing, sent, received, state, n, held, body`

func (t *Tx) queryMessages(query string, args ...any) ([]*Message, error) {
	rows, err := t.tx.QueryContext(t.ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("read messages: %w", err)
	}
	defer rows.Close()
	var out []*Message
	for rows.Next() {
		m := new(Message)
		var id, body []byte
		var sent, recv, n int64
		var state int
		if err := rows.Scan(&m.Seq, &id, &m.Contact, &m.Outgoing, &sent, &recv, &state, &n, &m.Held, &body); err != nil {
			return nil, fmt.Errorf("read messages: %w", err)
		}
		if len(id) != 16 {
			return nil, ErrCorrupt
		}
		copy(m.ID[:], id)
		m.Sent = time.UnixMilli(sent)
		if recv != 0 {
			m.Received = time.UnixMilli(recv)
		}
		m.State = State(state)
		m.N = uint64(n)
		text, err := t.s.seal.open(messageAD(m.ID), body)
		if err != nil {
			return nil, err
		}
		m.Text = string(text)
		out = append(out, m)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read messages: %w", err)
	}
	return out, nil
}

// Cursor returns the named plaintext counter (0 if unset), such as the
// last message Seq shown by ferry read.
func (t *Tx) Cursor(name string) (int64, error) {
	var v []byte
	err := t.tx.QueryRowContext(t.ctx, `SELECT v FROM meta WHERE k = ?`, "cursor:"+name).Scan(&v)
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
	if _, err := t.tx.ExecContext(t.ctx, `INSERT OR REPLACE INTO meta (k, v) VALUES (?, ?)`,
		"cursor:"+name, []byte(strconv.FormatInt(v, 10))); err != nil {
		return fmt.Errorf("write cursor: %w", err)
	}
	return nil
}

// Outgoing is one envelope waiting in the outbox for the relay's SendOK.
// Envelope is sealed at rest.
type Outgoing struct {
	Seq      int64
	ID       [16]byte
	Contact  int64
	Created  time.Time
	Attempts int
	Envelope []byte
}

func outboxAD(id [16]byte) string { return "outbox|data|" + hex.EncodeToString(id[:]) }

// Enqueue adds o to the outbox and sets o.Seq.
func (t *Tx) Enqueue(o *Outgoing) error {
	sealed, err := t.s.seal.seal(outboxAD(o.ID), o.Envelope)
	if err != nil {
		return err
	}
	res, err := t.tx.ExecContext(t.ctx, `INSERT INTO outbox (id, contact, created, data) VALUES (?, ?, ?, ?)`,
		o.ID[:], o.Contact, o.Created.UnixMilli(), sealed)
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
	rows, err := t.tx.QueryContext(t.ctx, `SELECT seq, id, contact, created, attempts, data FROM outbox ORDER BY seq LIMIT ?`, limit)
	if err != nil {
		return nil, fmt.Errorf("read outbox: %w", err)
	}
	defer rows.Close()
	var out []*Outgoing
	for rows.Next() {
		o := new(Outgoing)
		var id, data []byte
		var created int64
		if err := rows.Scan(&o.Seq, &id, &o.Contact, &created, &o.Attempts, &data); err != nil {
			return nil, fmt.Errorf("read outbox: %w", err)
		}
		if len(id) != 16 {
			return nil, ErrCorrupt
		}
		copy(o.ID[:], id)
		o.Created = time.UnixMilli(created)
		if o.Envelope, err = t.s.seal.open(outboxAD(o.ID), data); err != nil {
			return nil, err
		}
		out = append(out, o)
	}
	return out, rows.Err()
}

// OutboxLen returns the number of queued envelopes.
func (t *Tx) OutboxLen() (int, error) {
	var n int
	if err := t.tx.QueryRowContext(t.ctx, `SELECT count(*) FROM outbox`).Scan(&n); err != nil {
		return 0, fmt.Errorf("count outbox: %w", err)
	}
	return n, nil
}

// Dequeue removes the envelope with the given id, reporting whether it was
// there.
func (t *Tx) Dequeue(id [16]byte) (bool, error) {
	res, err := t.tx.ExecContext(t.ctx, `DELETE FROM outbox WHERE id = ?`, id[:])
	if err != nil {
		return false, fmt.Errorf("dequeue: %w", err)
	}
	n, _ := res.RowsAffected()
	return n > 0, nil
}

// MarkSeen records id as seen at time at and reports whether it was new.
func (t *Tx) MarkSeen(id [16]byte, at time.Time) (bool, error) {
	res, err := t.tx.ExecContext(t.ctx, `INSERT OR IGNORE INTO seen (id, at) VALUES (?, ?)`, id[:], at.UnixMilli())
	if err != nil {
		return false, fmt.Errorf("mark seen: %w", err)
	}
	n, _ := res.RowsAffected()
	return n > 0, nil
}

// ForgetSeen deletes seen ids recorded before t0 and returns how many.
func (t *Tx) ForgetSeen(before time.Time) (int64, error) {
	res, err := t.tx.ExecContext(t.ctx, `DELETE FROM seen WHERE at < ?`, before.UnixMilli())
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
	if _, err := t.tx.ExecContext(t.ctx, `INSERT INTO invites (tag, created, data) VALUES (?, ?, ?)`,
		tag, created.UnixMilli(), sealed); err != nil {
		return fmt.Errorf("add invite: %w", err)
	}
	return nil
}

// TakeInvite removes the invite with this secret and reports whether it
// was outstanding.
func (t *Tx) TakeInvite(secret []byte) (bool, error) {
	res, err := t.tx.ExecContext(t.ctx, `DELETE FROM invites WHERE tag = ?`, t.inviteTag(secret))
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
	if err := t.tx.QueryRowContext(t.ctx, `SELECT count(*) FROM invites`).Scan(&n); err != nil {
		return 0, fmt.Errorf("count invites: %w", err)
	}
	return n, nil
}
