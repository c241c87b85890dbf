package relayclient

import (
	"context"
	"encoding/hex"
	"strings"
	"sync"
	"time"

	"github.com/ferry-im/ferry/channel"
	"github.com/ferry-im/ferry/link"
	"github.com/ferry-im/ferry/transport/fallback"
)

// DefaultPrefer are the transports a Dialer with no Order tries first where
// its memory knows nothing better: the disguised ones, https (it looks like
// a browser) before obfs (random-looking); tcp, which a censor sees
// through, after them (docs/transports.md section 7).
var DefaultPrefer = []string{"https", "obfs"}

// ErrStalled is wrapped (with ErrUnreachable) by the error of a connection
// its watcher closed: the transport stopped carrying, though the relay
// may well be up. A redial races the other transports first, so a caller
// may retry at once.
var ErrStalled = fallback.ErrStalled

// checkEvery is how often a connection asks its watcher whether it stalled.
const checkEvery = 100 * time.Millisecond

// Route is the transport of the latest connection to one relay, and why it
// is not the one used before.
type Route struct {
	Transport string // e.g. "obfs"
	Addr      string
	Since     time.Time
	// Why is empty for the first connection, and says why the previous
	// transport was left otherwise ("https stopped answering: ...").
	Why string
}

// routes keeps the route to each relay, by relay key, and the last reason
// a transport was left, by transport name.
type routes struct {
	mu     sync.Mutex // mu protects the fields below
	byKey  map[string]Route
	reason map[string]string
	notify func(relayKey [32]byte, r Route)
}

// use records that a connection to the relay with key came up over ep; it
// reports the route and whether it changed.
func (rs *routes) use(key [32]byte, ep link.Endpoint, now time.Time) (Route, bool) {
	rs.mu.Lock()
	k := hex.EncodeToString(key[:])
	old, had := rs.byKey[k]
	if had && old.Transport == ep.Transport {
		rs.mu.Unlock()
		return old, false
	}
	r := Route{Transport: ep.Transport, Addr: ep.Addr, Since: now}
	if had {
		r.Why = rs.reason[old.Transport]
		if r.Why == "" {
			r.Why = old.Transport + " could not be reached"
		}
	}
	if rs.byKey == nil {
		rs.byKey = make(map[string]Route)
	}
	rs.byKey[k] = r
	notify := rs.notify
	rs.mu.Unlock()
	if notify != nil {
		notify(key, r)
	}
	return r, true
}

func (rs *routes) left(transport, why string) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	if rs.reason == nil {
		rs.reason = make(map[string]string)
	}
	rs.reason[transport] = why
}

// Route returns the route of the latest connection to the relay with key.
func (d *Dialer) Route(key [32]byte) (Route, bool) {
	d.routes.mu.Lock()
	defer d.routes.mu.Unlock()
	r, ok := d.routes.byKey[hex.EncodeToString(key[:])]
	return r, ok
}

// OnRoute sets a function called, outside the Dialer's locks, each time
// the route to a relay changes (its first connection included).
func (d *Dialer) OnRoute(f func(relayKey [32]byte, r Route)) {
	d.routes.mu.Lock()
	defer d.routes.mu.Unlock()
	d.routes.notify = f
}

// race returns the fallback dialer that orders and races endpoints: with
// an Order, a fresh one that keeps exactly that order; else the Dialer's
// own, which learns per network.
func (d *Dialer) race() *fallback.Dialer {
	if len(d.Order) > 0 {
		return fallback.New(fallback.Config{Prefer: d.Order, Stagger: d.Stagger})
	}
	d.once.Do(func() {
		if d.Fallback == nil {
			d.Fallback = fallback.New(fallback.Config{Prefer: DefaultPrefer, Memory: d.Memory, Stagger: d.Stagger})
		}
	})
	return d.Fallback
}

// dialed is a won race: the channel, its transport conn's watcher and
// the endpoint.
type dialed struct {
	ch *channel.Conn
	w  *fallback.Watched
	ep link.Endpoint
}

func (x *dialed) Close() error { return x.ch.Close() }

// health closes the connection when its watcher says it stalled: the
// relay stopped answering requests although nothing failed (a censor's
// drop), or a download crawls (a throttle).
func (c *Conn) health(ctx context.Context) {
	defer c.wg.Done()
	t := time.NewTicker(checkEvery)
	defer t.Stop()
	for {
		select {
		case <-t.C:
		case <-c.quit:
			return
		case <-c.done:
			return
		case <-ctx.Done():
			return
		}
		err := c.watch.Check()
		if err == nil {
			continue
		}
		why := c.ep.Transport + " stopped answering: " + strings.TrimSuffix(err.Error(), ": "+fallback.ErrStalled.Error())
		c.log.Info("transport stalled; closing the connection", "transport", c.ep.Transport, "why", err.Error())
		c.stalled.Store(&why)
		if c.fb != nil {
			c.fb.Failed(c.ep, err.Error())
		}
		c.routes.left(c.ep.Transport, why)
		c.ch.Close()
		return
	}
}
