// Package rowscan reads the rows of a relay Store's SQL queries into relay
// types, the same way for every SQL backend (database/sql for relay/sqlite,
// pgx for relay/postgres).
package rowscan

import (
	"fmt"
	"time"

	"github.com/ferry-im/ferry/relay"
)

// Rows is what both database/sql and pgx rows provide.
type Rows interface {
	Next() bool
	Scan(dest ...any) error
	Err() error
}

// Envelopes reads rows of (seq, id, received in Unix milliseconds, data)
// until they end. A NULL or empty data reads as an empty, non-nil slice.
func Envelopes(rows Rows) ([]relay.Envelope, error) {
	var out []relay.Envelope
	for rows.Next() {
		var (
			e        relay.Envelope
			seq, ms  int64
			id, data []byte
		)
		if err := rows.Scan(&seq, &id, &ms, &data); err != nil {
			return nil, fmt.Errorf("read pending envelopes: %w", err)
		}
		e.Seq = uint64(seq)
		copy(e.ID[:], id)
		e.Received = time.UnixMilli(ms)
		e.Data = data
		if e.Data == nil {
			e.Data = []byte{}
		}
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read pending envelopes: %w", err)
	}
	return out, nil
}
