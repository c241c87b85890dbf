// Package postgres is the relay's Store on PostgreSQL (through pgx), for
// several relay processes that share their state: a cluster (see
// docs/operations.md). One relay on one machine needs none of it; its
// default store is relay/sqlite.
//
// It keeps the same promise as relay/sqlite: a write returns only once its
// transaction has committed (with PostgreSQL's synchronous_commit on, the
// default, once the commit is on disk), so an acknowledged send survives
// kill -9 of the relay or of the database. To make that affordable it
// group-commits: writes go to a few writer connections (by mailbox, so the
// writes of one mailbox stay in order), and each writer sends all the
// writes waiting for it in one round trip, as one transaction, with one
// commit (writer.go). Reads go through a pool of other connections.
//
// It survives the database going away: a writer whose connection breaks
// reconnects and retries the batch (every write is safe to repeat: a
// repeated Put finds its envelope by id), and calls fail with an error
// only if the database stays unreachable for longer than Options.Retry.
//
// It is not a cache or a bus: every relay of a cluster reads the same
// tables, and relay.Bus tells them when to look. The schema is versioned
// and migrated forward by Open, in the first schema of the connection's
// search_path.
package postgres

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/ferry-im/ferry/relay"
	"github.com/ferry-im/ferry/relay/internal/rowscan"
	"github.com/ferry-im/ferry/relay/internal/tokencache"
)

var (
	_ relay.Store         = (*Store)(nil)
	_ relay.AsyncPutter   = (*Store)(nil)
	_ relay.PollingPutter = (*Store)(nil)
	_ relay.ArrivalLister = (*Store)(nil)
	_ relay.Sizer         = (*Store)(nil)
)

// Options tunes a Store. The zero value is what the relay uses.
type Options struct {
	// Writers is the number of writer connections (and of transactions
	// committing at once). If zero, half of the URL's pool_max_conns
	// (default 8), at least 1.
	Writers int
	// Readers is the size of the pool of read connections. If zero, the
	// rest of pool_max_conns, at least 1.
	Readers int
	// MaxBatch is the most writes one writer commits in one transaction.
	// If zero, 512.
	MaxBatch int
	// Retry is how long a write keeps being retried while the database is
	// unreachable before it fails. If zero, 10 seconds.
	Retry time.Duration
	// TokenCache is how long a delivery token hash found in the database
	// is trusted without reading it again: another relay of the cluster may
	// remove it, and it is accepted until then (a token added is never
	// refused: a hash not cached is read). A change made through this
	// Store is seen at once. If zero, 10 seconds.
	TokenCache time.Duration
}

func (o *Options) maxBatch() int {
	if o == nil || o.MaxBatch <= 0 {
		return 512
	}
	return o.MaxBatch
}

func (o *Options) retry() time.Duration {
	if o == nil || o.Retry <= 0 {
		return 10 * time.Second
	}
	return o.Retry
}

func (o *Options) tokenCache() time.Duration {
	if o == nil || o.TokenCache <= 0 {
		return 10 * time.Second
	}
	return o.TokenCache
}

// conns splits the connection budget between writers and readers.
func (o *Options) conns(poolMax int32, explicit bool) (writers, readers int) {
	total := 8
	if explicit {
		total = max(int(poolMax), 2)
	}
	writers, readers = max(total/2, 1), max(total-total/2, 1)
	if o != nil && o.Writers > 0 {
		writers = o.Writers
	}
	if o != nil && o.Readers > 0 {
		readers = o.Readers
	}
	return writers, readers
}

// Store is a relay.Store in a PostgreSQL database.
type Store struct {
	url    string
	opts   *Options
	pool   *pgxpool.Pool
	lanes  []*lane
	done   sync.WaitGroup // the lanes' goroutines
	stop   context.CancelFunc
	tokens tokencache.Cache

	// mu protects closed. Every method holds it for reading for its whole
	// call, so Close (which takes it for writing) waits for calls in
	// flight and then stops the writers.
	mu     sync.RWMutex
	closed bool
}

// Open connects to the database at url (a postgres:// URL or a key=value
// connection string that pgx understands; pool_max_conns there bounds the
// connections this Store opens), migrates its schema and starts the
// writers. The Store owns a goroutine per writer until Close.
func Open(ctx context.Context, url string, opts *Options) (*Store, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("open relay database: %w", err)
	}
	writers, readers := opts.conns(cfg.MaxConns, hasParam(url, "pool_max_conns"))
	cfg.MaxConns = int32(readers)
	cfg.MinConns = 0
	conn, err := pgx.ConnectConfig(ctx, cfg.ConnConfig.Copy())
	if err != nil {
		return nil, fmt.Errorf("open relay database: %w", err)
	}
	err = migrate(ctx, conn)
	conn.Close(context.Background())
	if err != nil {
		return nil, fmt.Errorf("open relay database: %w", err)
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("open relay database: %w", err)
	}
	lctx, stop := context.WithCancel(context.Background())
	s := &Store{url: url, opts: opts, pool: pool, stop: stop}
	s.tokens.TTL = opts.tokenCache()
	for range writers {
		l := &lane{
			cfg:      cfg.ConnConfig,
			ops:      make(chan *op, 2*opts.maxBatch()),
			maxBatch: opts.maxBatch(),
			retry:    opts.retry(),
		}
		s.lanes = append(s.lanes, l)
		s.done.Go(func() { l.run(lctx) })
	}
	return s, nil
}

// hasParam reports whether a URL or connection string sets name.
func hasParam(url, name string) bool { return strings.Contains(url, name+"=") }

// URL is the connection URL the Store was opened with.
func (s *Store) URL() string { return s.url }

// Close stops the writers once the writes in flight are committed and
// closes the connections. It is idempotent.
func (s *Store) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		s.done.Wait()
		return nil
	}
	s.closed = true
	for _, l := range s.lanes {
		close(l.ops)
	}
	s.mu.Unlock()
	s.done.Wait()
	s.stop()
	s.pool.Close()
	return nil
}

// begin holds mu for reading for the duration of one call, failing once
// the store is closed.
func (s *Store) begin(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.RLock()
	if s.closed {
		s.mu.RUnlock()
		return relay.ErrClosed
	}
	return nil
}

// Pending implements relay.Store.
func (s *Store) Pending(ctx context.Context, mb [16]byte, after uint64, limit int) ([]relay.Envelope, error) {
	if err := s.begin(ctx); err != nil {
		return nil, err
	}
	defer s.mu.RUnlock()
	if limit <= 0 {
		return nil, nil
	}
	rows, err := s.pool.Query(ctx, `SELECT seq, id, received, data FROM envelopes
		WHERE mailbox = $1 AND seq > $2 ORDER BY seq LIMIT $3`, mb[:], int64(after), limit)
	if err != nil {
		return nil, fmt.Errorf("read pending envelopes: %w", err)
	}
	defer rows.Close()
	return rowscan.Envelopes(rows)
}

// Usage implements relay.Store.
func (s *Store) Usage(ctx context.Context, mb [16]byte) (relay.Usage, error) {
	if err := s.begin(ctx); err != nil {
		return relay.Usage{}, err
	}
	defer s.mu.RUnlock()
	var u relay.Usage
	switch err := s.pool.QueryRow(ctx, `SELECT count, bytes FROM mailboxes WHERE id = $1`, mb[:]).Scan(&u.Count, &u.Bytes); {
	case errors.Is(err, pgx.ErrNoRows):
		return relay.Usage{}, nil
	case err != nil:
		return relay.Usage{}, fmt.Errorf("read mailbox usage: %w", err)
	}
	return u, nil
}

// HasToken implements relay.Store. Hashes found are cached for
// Options.TokenCache (another relay may remove them); a hash not found is
// always looked up, so a new token is never refused.
func (s *Store) HasToken(ctx context.Context, mb [16]byte, hash [32]byte) (bool, error) {
	if err := s.begin(ctx); err != nil {
		return false, err
	}
	defer s.mu.RUnlock()
	if s.tokens.Has(mb, hash) {
		return true, nil
	}
	gen := s.tokens.Generation()
	var ok bool
	err := s.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM tokens WHERE mailbox = $1 AND hash = $2)`, mb[:], hash[:]).Scan(&ok)
	if err != nil {
		return false, fmt.Errorf("read token: %w", err)
	}
	if ok {
		s.tokens.Fill(mb, hash, gen)
	}
	return ok, nil
}

// Bundle implements relay.Store.
func (s *Store) Bundle(ctx context.Context, mb [16]byte) (relay.Bundle, error) {
	if err := s.begin(ctx); err != nil {
		return relay.Bundle{}, err
	}
	defer s.mu.RUnlock()
	var b relay.Bundle
	var lastResort []byte
	switch err := s.pool.QueryRow(ctx, `SELECT signed, last_resort FROM mailboxes WHERE id = $1`, mb[:]).Scan(&b.Signed, &lastResort); {
	case errors.Is(err, pgx.ErrNoRows):
		return relay.Bundle{}, relay.ErrNotFound
	case err != nil:
		return relay.Bundle{}, fmt.Errorf("read bundle: %w", err)
	}
	if len(b.Signed) == 0 {
		return relay.Bundle{}, relay.ErrNotFound
	}
	if len(lastResort) > 0 {
		b.KEM, b.HasKEM, b.KEMLastResort = relay.Prekey{Data: lastResort}, true, true
	}
	return b, nil
}

// DiskUsage implements relay.Sizer: the size of this store's tables and
// indexes. The free space of the database server's disk is not known
// here (Free is -1).
func (s *Store) DiskUsage(ctx context.Context) (relay.DiskUsage, error) {
	if err := s.begin(ctx); err != nil {
		return relay.DiskUsage{}, err
	}
	defer s.mu.RUnlock()
	var used int64
	err := s.pool.QueryRow(ctx, `SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0)::bigint
		FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE n.nspname = current_schema() AND c.relkind = 'r'`).Scan(&used)
	if err != nil {
		return relay.DiskUsage{}, fmt.Errorf("read database size: %w", err)
	}
	return relay.DiskUsage{Used: used, Free: -1}, nil
}

// PrekeyCounts implements relay.Store.
func (s *Store) PrekeyCounts(ctx context.Context, mb [16]byte) (oneTime, kem int, err error) {
	if err := s.begin(ctx); err != nil {
		return 0, 0, err
	}
	defer s.mu.RUnlock()
	err = s.pool.QueryRow(ctx, `SELECT count(*) FILTER (WHERE kind = 1), count(*) FILTER (WHERE kind = 2)
		FROM prekeys WHERE mailbox = $1`, mb[:]).Scan(&oneTime, &kem)
	if err != nil {
		return 0, 0, fmt.Errorf("count prekeys: %w", err)
	}
	return oneTime, kem, nil
}

// Arrivals implements relay.ArrivalLister: the newest pending seq of every
// mailbox with an envelope received at or after since (on the sending
// relay's clock), at most limit mailboxes.
func (s *Store) Arrivals(ctx context.Context, since time.Time, limit int) ([]relay.Arrival, error) {
	if err := s.begin(ctx); err != nil {
		return nil, err
	}
	defer s.mu.RUnlock()
	rows, err := s.pool.Query(ctx, `SELECT mailbox, max(seq) FROM envelopes
		WHERE received >= $1 GROUP BY mailbox LIMIT $2`, since.UnixMilli(), limit)
	if err != nil {
		return nil, fmt.Errorf("read arrivals: %w", err)
	}
	defer rows.Close()
	var out []relay.Arrival
	for rows.Next() {
		var (
			a   relay.Arrival
			mb  []byte
			seq int64
		)
		if err := rows.Scan(&mb, &seq); err != nil {
			return nil, fmt.Errorf("read arrivals: %w", err)
		}
		copy(a.Mailbox[:], mb)
		a.Seq = uint64(seq)
		out = append(out, a)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read arrivals: %w", err)
	}
	return out, nil
}

// Expire implements relay.Store. It deletes in chunks of expireChunk rows,
// one transaction each, first expired envelopes (one relay of a cluster
// at a time), then acknowledged ids received on a day before cutoff's.
func (s *Store) Expire(ctx context.Context, cutoff time.Time) (int, error) {
	if err := s.begin(ctx); err != nil {
		return 0, err
	}
	defer s.mu.RUnlock()
	total := 0
	for {
		var n int
		err := retryConflicts(ctx, func() error {
			return s.pool.QueryRow(ctx, `SELECT ferry_expire($1, $2)`, cutoff.UnixMilli(), expireChunk).Scan(&n)
		})
		if err != nil {
			return total, fmt.Errorf("expire envelopes: %w", err)
		}
		total += n
		if n < expireChunk {
			break
		}
	}
	for {
		tag, err := s.pool.Exec(ctx, `DELETE FROM acked WHERE ctid IN
			(SELECT ctid FROM acked WHERE day < $1 LIMIT $2)`, unixDay(cutoff), expireChunk)
		if err != nil {
			return total, fmt.Errorf("expire acknowledged ids: %w", err)
		}
		if tag.RowsAffected() < expireChunk {
			return total, nil
		}
	}
}

// unixDay is the UTC day of t, in days since 1970-01-01.
func unixDay(t time.Time) int32 { return int32(t.Unix() / 86400) }

// expireChunk is how many rows one Expire transaction deletes at most, so
// a large expiry never holds up sends for long.
const expireChunk = 2000

// ClusterKey records pub as the cluster's relay public key if none is
// recorded, and fails if another one is: every relay of a cluster must
// hold the same key, the one the cluster's link carries.
func (s *Store) ClusterKey(ctx context.Context, pub [32]byte) error {
	if err := s.begin(ctx); err != nil {
		return err
	}
	defer s.mu.RUnlock()
	var got []byte
	err := s.pool.QueryRow(ctx, `INSERT INTO relay_cluster (key) VALUES ($1)
		ON CONFLICT (one) DO UPDATE SET key = relay_cluster.key RETURNING key`, pub[:]).Scan(&got)
	if err != nil {
		return fmt.Errorf("record cluster key: %w", err)
	}
	if [32]byte(got) != pub {
		return errors.New("this relay's key is not the cluster's: copy relay.key from a node of the cluster into this node's data directory")
	}
	return nil
}

// Node is one relay of a cluster as it registered itself.
type Node struct {
	Name      string
	Endpoints []string // "transport=host:port", in the node's order
	Seen      time.Time
}

// RegisterNode records (or replaces) a node's endpoints.
func (s *Store) RegisterNode(ctx context.Context, n Node) error {
	if err := s.begin(ctx); err != nil {
		return err
	}
	defer s.mu.RUnlock()
	_, err := s.pool.Exec(ctx, `INSERT INTO relay_nodes (name, endpoints, seen) VALUES ($1, $2, $3)
		ON CONFLICT (name) DO UPDATE SET endpoints = excluded.endpoints, seen = excluded.seen`,
		n.Name, strings.Join(n.Endpoints, "\n"), n.Seen.UnixMilli())
	if err != nil {
		return fmt.Errorf("register node: %w", err)
	}
	return nil
}

// Nodes lists the registered nodes by name.
func (s *Store) Nodes(ctx context.Context) ([]Node, error) {
	if err := s.begin(ctx); err != nil {
		return nil, err
	}
	defer s.mu.RUnlock()
	rows, err := s.pool.Query(ctx, `SELECT name, endpoints, seen FROM relay_nodes ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("list nodes: %w", err)
	}
	defer rows.Close()
	var out []Node
	for rows.Next() {
		var (
			n    Node
			eps  string
			seen int64
		)
		if err := rows.Scan(&n.Name, &eps, &seen); err != nil {
			return nil, fmt.Errorf("list nodes: %w", err)
		}
		n.Endpoints = strings.Fields(eps)
		n.Seen = time.UnixMilli(seen)
		out = append(out, n)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list nodes: %w", err)
	}
	return out, nil
}

// RemoveNode forgets a node, so the cluster's link no longer lists it.
func (s *Store) RemoveNode(ctx context.Context, name string) error {
	if err := s.begin(ctx); err != nil {
		return err
	}
	defer s.mu.RUnlock()
	tag, err := s.pool.Exec(ctx, `DELETE FROM relay_nodes WHERE name = $1`, name)
	if err != nil {
		return fmt.Errorf("remove node: %w", err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("remove node: no node named %s", strconv.Quote(name))
	}
	return nil
}
