// Package tokencache keeps delivery token hashes in memory for a relay
// Store: every Send checks one, and reading the database each time would
// cost a query per message.
//
// It caches hashes found (a mailbox may have several), never their
// absence. A Store drops a mailbox's hashes when it writes that mailbox's
// tokens, and a hash read while such a write went on is not cached. A
// Store that is the only writer of its database keeps hashes for ever (TTL
// zero); one whose tokens other processes may change (relay/postgres)
// keeps them for a TTL, so a removed token stays accepted for at most that
// long, and a new one is never refused. It holds at most Max hashes and
// evicts an arbitrary mailbox's when full.
package tokencache

import (
	"sync"
	"time"
)

// Max is the most hashes a Cache holds.
const Max = 1 << 17

// Cache maps mailboxes to the token hashes known to be theirs. Its zero
// value is an empty cache whose entries never expire.
type Cache struct {
	// TTL bounds how long a hash is used after Fill; zero means for ever.
	// Set it before first use.
	TTL time.Duration
	// Now is the clock for TTL. If nil, time.Now is used.
	Now func() time.Time

	// mu protects m, n and gen.
	mu  sync.Mutex
	m   map[[16]byte]map[[32]byte]time.Time // hash -> expiry (zero: never)
	n   int                                 // hashes in m
	gen uint64                              // incremented by every Invalidate
}

func (c *Cache) now() time.Time {
	if c.Now == nil {
		return time.Now()
	}
	return c.Now()
}

// Has reports whether h is cached as one of mb's hashes.
func (c *Cache) Has(mb [16]byte, h [32]byte) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	exp, ok := c.m[mb][h]
	return ok && (exp.IsZero() || !c.now().After(exp))
}

// Generation is what Fill needs to tell whether an Invalidate came in
// between: take it before reading the database.
func (c *Cache) Generation() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.gen
}

// Invalidate drops mb's hashes after a write to its tokens committed (or
// failed: it may have committed).
func (c *Cache) Invalidate(mb [16]byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	c.n -= len(c.m[mb])
	delete(c.m, mb)
}

// Fill caches a hash found in the database, unless an Invalidate happened
// since Generation returned gen (the read may then be stale).
func (c *Cache) Fill(mb [16]byte, h [32]byte, gen uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.gen != gen {
		return
	}
	if c.m == nil {
		c.m = make(map[[16]byte]map[[32]byte]time.Time)
	}
	for c.n >= Max {
		for k, v := range c.m {
			c.n -= len(v)
			delete(c.m, k)
			break
		}
	}
	set := c.m[mb]
	if set == nil {
		set = make(map[[32]byte]time.Time, 1)
		c.m[mb] = set
	}
	if _, ok := set[h]; !ok {
		c.n++
	}
	var exp time.Time
	if c.TTL > 0 {
		exp = c.now().Add(c.TTL)
	}
	set[h] = exp
}
