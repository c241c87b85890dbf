// Package rankcache keeps the transport rankings of the user's relay (the
// monitor's closed loop, docs/monitor.md section 12): it fetches them with
// the client's other traffic on the connection to its own relay, keeps the
// ones that verify (monitor/ranking: certified by the relay's key, signed,
// current) in a file of the profile, and orders a link's endpoints by them
// before the client dials. A forged or stale ranking is dropped and never
// used.
//
// It is not a dialer: relayclient.Dialer.Rank calls Order.
package rankcache

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/ferry-im/ferry/link"
	"github.com/ferry-im/ferry/monitor/ranking"
	"github.com/ferry-im/ferry/wire"
)

// FileName is the cache's file in a profile directory.
const FileName = "rankings.json"

// Defaults of a zero Cache.
const (
	DefaultRefresh = 10 * time.Minute
	DefaultTimeout = 3 * time.Second
)

// Fetcher asks a relay for its rankings; *relayclient.Conn is one.
type Fetcher interface {
	GetRanking(ctx context.Context) (wire.Rankings, error)
}

// Cache is the rankings of one relay. RelayKey is required; the zero
// value of every other field works. It is safe for concurrent use.
type Cache struct {
	// RelayKey is the static key of the relay (from its link) that must
	// have certified every ranking.
	RelayKey [32]byte
	// Path is the file the verified rankings are kept in. If empty, they
	// are kept in memory only.
	Path string
	// Refresh is how long a fetch is good for. Default 10 minutes.
	Refresh time.Duration
	// Timeout bounds a fetch (a relay older than rankings never answers
	// one). Default 3 seconds.
	Timeout time.Duration
	// Now returns the current time. If nil, time.Now is used.
	Now func() time.Time
	// Logger receives why a ranking was dropped. If nil, nothing is logged.
	Logger *slog.Logger

	mu     sync.Mutex // mu protects the fields below
	loaded bool
	state  state
}

// state is what the file holds.
type state struct {
	Fetched  time.Time `json:"fetched"`
	Observed string    `json:"observed,omitempty"` // the client's address as the relay saw it
	Blobs    [][]byte  `json:"blobs,omitempty"`    // verified when fetched
}

func (c *Cache) now() time.Time {
	if c.Now == nil {
		return time.Now()
	}
	return c.Now()
}

func (c *Cache) log() *slog.Logger {
	if c.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return c.Logger
}

// load reads the file once. c.mu must be held.
func (c *Cache) load() {
	if c.loaded || c.Path == "" {
		c.loaded = true
		return
	}
	c.loaded = true
	b, err := os.ReadFile(c.Path)
	if err == nil {
		err = json.Unmarshal(b, &c.state)
	}
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		c.log().Info("transport rankings unreadable; fetching them again", "err", err)
		c.state = state{}
	}
}

// Due reports whether the rankings should be fetched again.
func (c *Cache) Due() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.load()
	refresh := c.Refresh
	if refresh <= 0 {
		refresh = DefaultRefresh
	}
	return c.now().Sub(c.state.Fetched) >= refresh
}

// Fetch asks the relay for its rankings, keeps the ones that verify and
// saves them. A relay that does not answer in Timeout is asked again after
// Refresh.
func (c *Cache) Fetch(ctx context.Context, f Fetcher) error {
	timeout := c.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	fctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	rk, err := f.GetRanking(fctx)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.load()
	c.state.Fetched = c.now()
	if err != nil {
		return fmt.Errorf("fetch transport rankings: %w", err)
	}
	st := state{Fetched: c.state.Fetched}
	if rk.Observed.IsValid() {
		st.Observed = rk.Observed.String()
	}
	for _, b := range rk.Blobs {
		if _, err := ranking.Verify(b, c.RelayKey, c.state.Fetched); err != nil {
			c.log().Info("transport ranking dropped", "err", err)
			continue
		}
		st.Blobs = append(st.Blobs, b)
	}
	c.state = st
	return c.save()
}

// save writes the state to Path atomically. c.mu must be held.
func (c *Cache) save() error {
	if c.Path == "" {
		return nil
	}
	b, err := json.Marshal(c.state)
	if err != nil {
		return err
	}
	tmp := c.Path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return fmt.Errorf("save transport rankings: %w", err)
	}
	if err := os.Rename(tmp, c.Path); err != nil {
		return fmt.Errorf("save transport rankings: %w", err)
	}
	return nil
}

// Order returns eps ordered by the rankings of relay r and true, if r is
// the cache's relay and a ranking still holds for the client's network;
// else eps as they are and false.
func (c *Cache) Order(r link.Relay, eps []link.Endpoint) ([]link.Endpoint, bool) {
	if r.Key != c.RelayKey {
		return eps, false
	}
	c.mu.Lock()
	c.load()
	st := c.state
	c.mu.Unlock()
	var rs []*ranking.Ranking
	for _, b := range st.Blobs {
		if r, err := ranking.Verify(b, c.RelayKey, c.now()); err == nil {
			rs = append(rs, r)
		}
	}
	observed, _ := netip.ParseAddr(st.Observed)
	es := ranking.Pick(rs, observed)
	if len(es) == 0 {
		return eps, false
	}
	return ranking.Order(eps, es), true
}

// InProfile returns the path of the cache in profile directory home.
func InProfile(home string) string { return filepath.Join(home, FileName) }
