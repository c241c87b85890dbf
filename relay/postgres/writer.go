package postgres

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/ferry-im/ferry/relay"
)

// Writes.
//
// Every write is one statement (most call a function of schema.go) and is
// queued to the lane of its mailbox; a lane is a goroutine with its own
// connection. The lane takes every write waiting for it, up to MaxBatch,
// and sends them in one pipelined batch, which PostgreSQL runs as one
// implicit transaction: one round trip and one commit for all. A write's
// result is handed back only once the batch has committed.
//
// The writes of one mailbox always go to the same lane, so they run in the
// order they were queued. Within a batch the writes are sorted by mailbox
// (stably), and every write but an Ack locks its mailbox's row before
// anything else, so batches of different lanes, or of different relays,
// mostly lock rows in one order; when PostgreSQL reports a deadlock (an
// Ack deleting an envelope whose id another relay's retried Put inserts
// again) or a serialisation failure, the batch is simply run again.
//
// If the batch fails on a statement (a bug, a constraint), each write is
// retried alone so one bad write cannot fail the others. If the connection
// fails, the lane reconnects and runs the batch again, with backoff, until
// Options.Retry has passed; the batch may or may not have committed, which
// is harmless: every write is safe to repeat (a Put finds its own envelope
// by id; it then reports the envelope as new, not as a duplicate, so that
// the relay still pushes it), except that a repeated PopBundle may use up
// a one-time prekey that nobody receives, which is safe.

// op is one write waiting for a lane.
type op struct {
	ctx  context.Context
	mb   [16]byte
	sql  string
	args []any
	// scan reads the statement's result into the caller's variables. It
	// returns relay.ErrNotFound or relay.ErrQuota for a refused write.
	// retried says an earlier attempt may have committed.
	scan    func(row pgx.Row, retried bool) error
	retried bool
	err     chan error // buffered; receives the outcome after the commit
}

// lane is one writer: a goroutine, its connection and its queue.
type lane struct {
	cfg      *pgx.ConnConfig
	ops      chan *op
	maxBatch int
	retry    time.Duration
	conn     *pgx.Conn // nil until connected, and after a failure
}

// laneOf picks the lane of mailbox mb (mailbox ids are hashes, so any
// bytes of them spread evenly).
func (s *Store) laneOf(mb [16]byte) *lane {
	return s.lanes[binary.BigEndian.Uint32(mb[12:])%uint32(len(s.lanes))]
}

// submit queues o and returns the wait for its outcome and ready, which
// reports without blocking whether wait would return at once. The store
// stays open (mu held for reading) until wait is called.
func (s *Store) submit(o *op) (wait func() error, ready func() bool) {
	if err := s.begin(o.ctx); err != nil {
		return func() error { return err }, isReady
	}
	o.err = make(chan error, 1)
	select {
	case s.laneOf(o.mb).ops <- o:
	case <-o.ctx.Done():
		s.mu.RUnlock()
		return func() error { return o.ctx.Err() }, isReady
	}
	wait = func() error {
		defer s.mu.RUnlock()
		return <-o.err
	}
	return wait, func() bool { return len(o.err) > 0 }
}

// write runs o and waits for its outcome.
func (s *Store) write(o *op) error {
	wait, _ := s.submit(o)
	return wait()
}

func isReady() bool { return true }

// run commits batches until ops is closed and drained, then closes the
// connection.
func (l *lane) run(ctx context.Context) {
	defer func() {
		if l.conn != nil {
			l.conn.Close(context.Background())
		}
	}()
	batch := make([]*op, 0, l.maxBatch)
	for o := range l.ops {
		batch = append(batch[:0], o)
	fill:
		for len(batch) < l.maxBatch {
			select {
			case o, ok := <-l.ops:
				if !ok {
					break fill
				}
				batch = append(batch, o)
			default:
				break fill
			}
		}
		l.commit(ctx, batch)
		clear(batch)
	}
}

// commit runs batch and hands every write its outcome.
func (l *lane) commit(ctx context.Context, batch []*op) {
	live := batch[:0]
	for _, o := range batch {
		if err := o.ctx.Err(); err != nil {
			o.err <- err
			continue
		}
		live = append(live, o)
	}
	slices.SortStableFunc(live, func(a, b *op) int { return strings.Compare(string(a.mb[:]), string(b.mb[:])) })
	deadline := time.Now().Add(l.retry)
	err := l.exec(ctx, live, deadline)
	if err == nil {
		return
	}
	if len(live) == 1 || !isStatementError(err) {
		for _, o := range live {
			o.err <- err
		}
		return
	}
	for _, o := range live {
		if err := l.exec(ctx, []*op{o}, deadline); err != nil {
			o.err <- err
		}
	}
}

// exec runs ops as one transaction, again while the connection fails or
// the transaction conflicts, until deadline. On success it hands each op
// its outcome; on failure it returns the error and hands out nothing.
func (l *lane) exec(ctx context.Context, ops []*op, deadline time.Time) error {
	backoff := 50 * time.Millisecond
	for conflicts := 0; ; {
		err := l.try(ctx, ops)
		switch {
		case err == nil:
			return nil
		case isConflict(err) && conflicts < 10:
			conflicts++
			continue
		case isStatementError(err):
			return err
		}
		// The connection failed: the batch may have committed.
		for _, o := range ops {
			o.retried = true
		}
		if l.conn != nil {
			l.conn.Close(context.Background())
			l.conn = nil
		}
		if time.Now().Add(backoff).After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("database unavailable: %w", err)
		}
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
		}
		backoff = min(2*backoff, time.Second)
	}
}

// try sends ops in one batch on the lane's connection, connecting first if
// needed.
func (l *lane) try(ctx context.Context, ops []*op) error {
	ctx, cancel := context.WithTimeout(ctx, l.retry)
	defer cancel()
	if l.conn == nil {
		c, err := pgx.ConnectConfig(ctx, l.cfg)
		if err != nil {
			return err
		}
		l.conn = c
	}
	b := &pgx.Batch{}
	for _, o := range ops {
		b.Queue(o.sql, o.args...)
	}
	br := l.conn.SendBatch(ctx, b)
	results := make([]error, len(ops))
	for i, o := range ops {
		results[i] = o.scan(br.QueryRow(), o.retried)
	}
	if err := br.Close(); err != nil {
		return err
	}
	for i, o := range ops {
		if err := results[i]; err != nil && !refused(err) {
			// The batch committed, so this is not the database's error
			// but a result this code cannot read.
			o.err <- fmt.Errorf("read result: %w", err)
			continue
		}
		o.err <- results[i]
	}
	return nil
}

// refused reports whether err is a write's own refusal.
func refused(err error) bool {
	return errors.Is(err, relay.ErrNotFound) || errors.Is(err, relay.ErrQuota)
}

// isConflict reports a deadlock or serialisation failure: the transaction
// was rolled back and may simply run again.
func isConflict(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && (pe.Code == "40P01" || pe.Code == "40001")
}

// isStatementError reports an error the server raised for a statement,
// as opposed to a broken connection or a server going down (class 08,
// 57P01-57P03: retried on a new connection).
func isStatementError(err error) bool {
	var pe *pgconn.PgError
	if !errors.As(err, &pe) {
		return false
	}
	return !strings.HasPrefix(pe.Code, "08") && !strings.HasPrefix(pe.Code, "57P") && pe.Code != "53300"
}

// retryConflicts runs fn again while it reports a deadlock or
// serialisation failure.
func retryConflicts(ctx context.Context, fn func() error) error {
	for i := 0; ; i++ {
		err := fn()
		if err == nil || !isConflict(err) || i == 10 || ctx.Err() != nil {
			return err
		}
	}
}

// Put implements relay.Store.
func (s *Store) Put(ctx context.Context, mb [16]byte, env relay.Envelope, q relay.Quota) (uint64, bool, error) {
	wait, _ := s.PutAsyncPoll(ctx, mb, env, q)
	return wait()
}

// PutAsync implements relay.AsyncPutter.
func (s *Store) PutAsync(ctx context.Context, mb [16]byte, env relay.Envelope, q relay.Quota) func() (uint64, bool, error) {
	wait, _ := s.PutAsyncPoll(ctx, mb, env, q)
	return wait
}

// PutAsyncPoll implements relay.PollingPutter.
func (s *Store) PutAsyncPoll(ctx context.Context, mb [16]byte, env relay.Envelope, q relay.Quota) (func() (uint64, bool, error), func() bool) {
	data := slices.Clone(env.Data)
	if data == nil {
		data = []byte{} // NULL marks an acknowledged envelope
	}
	var (
		seq uint64
		dup bool
	)
	o := &op{
		ctx: ctx,
		mb:  mb,
		sql: `SELECT seq, dup, status FROM ferry_put($1, $2, $3, $4, $5, $6)`,
		args: []any{mb[:], env.ID[:], env.Received.UnixMilli(), data,
			int32(min(q.MaxCount, 1<<31-1)), q.MaxBytes},
		scan: func(row pgx.Row, retried bool) error {
			var (
				sq     int64
				d      bool
				status int16
			)
			if err := row.Scan(&sq, &d, &status); err != nil {
				return err
			}
			switch status {
			case 1:
				return relay.ErrNotFound
			case 2:
				return relay.ErrQuota
			}
			// An earlier attempt may have stored it: then it is new
			// to the caller (unless it was acknowledged since, seq 0).
			seq, dup = uint64(sq), d && !(retried && sq > 0)
			return nil
		},
	}
	wait, ready := s.submit(o)
	return func() (uint64, bool, error) {
		if err := wait(); err != nil {
			return 0, false, err
		}
		return seq, dup, nil
	}, ready
}

// Ack implements relay.Store.
func (s *Store) Ack(ctx context.Context, mb [16]byte, seqs []uint64) (int, error) {
	if len(seqs) == 0 {
		if err := s.begin(ctx); err != nil {
			return 0, err
		}
		s.mu.RUnlock()
		return 0, nil
	}
	list := make([]int64, len(seqs))
	for i, seq := range seqs {
		list[i] = int64(min(seq, 1<<63-1))
	}
	var n int
	err := s.write(&op{ctx: ctx, mb: mb, sql: `SELECT ferry_ack($1, $2)`, args: []any{mb[:], list},
		scan: func(row pgx.Row, _ bool) error { return row.Scan(&n) }})
	return n, err
}

// Token operations of ferry_token.
const (
	tokenSet    = 0
	tokenAdd    = 1
	tokenRemove = 2
)

// SetToken implements relay.Store.
func (s *Store) SetToken(ctx context.Context, mb [16]byte, hash [32]byte) error {
	return s.tokenWrite(ctx, mb, hash, tokenSet, 0)
}

// AddToken implements relay.Store.
func (s *Store) AddToken(ctx context.Context, mb [16]byte, hash [32]byte, max int) error {
	return s.tokenWrite(ctx, mb, hash, tokenAdd, max)
}

// RemoveToken implements relay.Store.
func (s *Store) RemoveToken(ctx context.Context, mb [16]byte, hash [32]byte) error {
	return s.tokenWrite(ctx, mb, hash, tokenRemove, 0)
}

// tokenWrite changes mb's tokens and drops its cached hashes (also after a
// failure: the change may have committed).
func (s *Store) tokenWrite(ctx context.Context, mb [16]byte, hash [32]byte, kind int16, max int) error {
	err := s.write(&op{ctx: ctx, mb: mb,
		sql:  `SELECT ferry_token($1, $2, $3, $4)`,
		args: []any{mb[:], hash[:], kind, int32(min(max, 1<<31-1))},
		scan: func(row pgx.Row, _ bool) error {
			var status int16
			if err := row.Scan(&status); err != nil {
				return err
			}
			if status == 2 {
				return relay.ErrQuota
			}
			return nil
		}})
	s.tokens.Invalidate(mb)
	return err
}

// Touch implements relay.Store.
func (s *Store) Touch(ctx context.Context, mb [16]byte, t time.Time) error {
	return s.write(&op{ctx: ctx, mb: mb,
		sql:  `UPDATE mailboxes SET seen = $2 WHERE id = $1 AND seen < $2 RETURNING true`,
		args: []any{mb[:], unixDay(t)},
		scan: func(row pgx.Row, _ bool) error {
			var ok bool
			if err := row.Scan(&ok); err != nil && !errors.Is(err, pgx.ErrNoRows) {
				return err
			}
			return nil
		}})
}

// idleChunk is how many mailboxes one DeleteIdle transaction deletes.
const idleChunk = 100

// DeleteIdle implements relay.Store, idleChunk mailboxes per transaction.
func (s *Store) DeleteIdle(ctx context.Context, cutoff time.Time) (int, error) {
	if err := s.begin(ctx); err != nil {
		return 0, err
	}
	defer s.mu.RUnlock()
	total := 0
	for {
		var ids [][]byte
		err := retryConflicts(ctx, func() error {
			rows, err := s.pool.Query(ctx, `SELECT ferry_delete_idle($1, $2)`, unixDay(cutoff), idleChunk)
			if err != nil {
				return err
			}
			ids, err = pgx.CollectRows(rows, pgx.RowTo[[]byte])
			return err
		})
		if err != nil {
			return total, fmt.Errorf("delete idle mailboxes: %w", err)
		}
		for _, id := range ids {
			s.tokens.Invalidate([16]byte(id))
		}
		total += len(ids)
		if len(ids) < idleChunk {
			return total, nil
		}
	}
}

// PutPrekeys implements relay.Store.
func (s *Store) PutPrekeys(ctx context.Context, mb [16]byte, up relay.PrekeyUpload, max int) error {
	var (
		kinds []int16
		ids   []int64
		datas [][]byte
	)
	for _, pool := range []struct {
		kind int16
		keys []relay.Prekey
	}{{kindOneTime, up.OneTime}, {kindKEM, up.KEM}} {
		for _, p := range pool.keys {
			kinds = append(kinds, pool.kind)
			ids = append(ids, int64(p.ID))
			datas = append(datas, nonNil(slices.Clone(p.Data)))
		}
	}
	return s.write(&op{ctx: ctx, mb: mb,
		sql: `SELECT ferry_put_prekeys($1, $2, $3, $4, $5, $6, $7)`,
		args: []any{mb[:], nonNil(slices.Clone(up.Signed)), nonNil(slices.Clone(up.LastResort)),
			kinds, ids, datas, int32(min(max, 1<<31-1))},
		scan: func(row pgx.Row, _ bool) error {
			var status int16
			if err := row.Scan(&status); err != nil {
				return err
			}
			if status == 2 {
				return relay.ErrQuota
			}
			return nil
		}})
}

// Prekey pool kinds in the prekeys table.
const (
	kindOneTime = 1
	kindKEM     = 2
)

// PopBundle implements relay.Store.
func (s *Store) PopBundle(ctx context.Context, mb [16]byte) (relay.Bundle, error) {
	var b relay.Bundle
	err := s.write(&op{ctx: ctx, mb: mb,
		sql:  `SELECT has_signed, signed, last_resort, one_id, one_data, kem_id, kem_data FROM ferry_pop_bundle($1)`,
		args: []any{mb[:]},
		scan: func(row pgx.Row, _ bool) error {
			var (
				found          bool
				oneID, kemID   *int64
				lastResort     []byte
				oneData, kemDa []byte
			)
			b = relay.Bundle{}
			if err := row.Scan(&found, &b.Signed, &lastResort, &oneID, &oneData, &kemID, &kemDa); err != nil {
				return err
			}
			if !found {
				return relay.ErrNotFound
			}
			if oneID != nil {
				b.OneTime, b.HasOneTime = relay.Prekey{ID: uint32(*oneID), Data: oneData}, true
			}
			switch {
			case kemID != nil:
				b.KEM, b.HasKEM = relay.Prekey{ID: uint32(*kemID), Data: kemDa}, true
			case len(lastResort) > 0:
				b.KEM, b.HasKEM, b.KEMLastResort = relay.Prekey{Data: lastResort}, true, true
			}
			return nil
		}})
	if err != nil {
		return relay.Bundle{}, err
	}
	return b, nil
}

func nonNil(b []byte) []byte {
	if b == nil {
		return []byte{}
	}
	return b
}
