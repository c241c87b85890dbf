package relay

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"

	"github.com/ferry-im/ferry/wire"
)

// Transport rankings (docs/protocol.md section 6.12). The relay keeps one
// opaque blob per publisher key (Config.RankingPublishers), in memory, and
// hands all of them to any client that asks, with the client's address as
// the relay sees it. It never parses or checks a blob: clients verify the
// signatures (monitor/ranking), and a publisher re-publishes after a
// restart of the relay.
type rankings struct {
	publishers [][32]byte // in the order of Config.RankingPublishers

	mu    sync.Mutex // mu protects blobs
	blobs map[[32]byte][]byte
}

func newRankings(publishers [][32]byte) (*rankings, error) {
	if len(publishers) > wire.MaxRankings {
		return nil, fmt.Errorf("new relay server: %d ranking publishers, at most %d", len(publishers), wire.MaxRankings)
	}
	return &rankings{publishers: slices.Clone(publishers), blobs: make(map[[32]byte][]byte)}, nil
}

// errNotPublisher: the connection's key may not publish rankings.
var errNotPublisher = errors.New("this key may not publish rankings")

// put stores blob as publisher's ranking.
func (r *rankings) put(publisher [32]byte, blob []byte) error {
	if !slices.Contains(r.publishers, publisher) {
		return errNotPublisher
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.blobs[publisher] = slices.Clone(blob)
	return nil
}

// all returns the stored blobs, in the order of the publishers.
func (r *rankings) all() [][]byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out [][]byte
	for _, p := range r.publishers {
		if b, ok := r.blobs[p]; ok {
			out = append(out, b)
		}
	}
	return out
}

func (c *conn) handlePutRanking(ctx context.Context, m wire.PutRanking) error {
	if !c.allow() {
		return c.reply(ctx, wire.Error{ReqID: m.ReqID, Code: wire.CodeRateLimited, Msg: "too many requests"})
	}
	if err := c.s.rankings.put(c.ch.PeerKey(), m.Blob); err != nil {
		return c.reply(ctx, wire.Error{ReqID: m.ReqID, Code: wire.CodeDenied, Msg: err.Error()})
	}
	c.log.Info("ranking published", "bytes", len(m.Blob))
	return c.reply(ctx, wire.OK{ReqID: m.ReqID})
}

func (c *conn) handleGetRanking(ctx context.Context, m wire.GetRanking) error {
	if !c.allow() {
		return c.reply(ctx, wire.Error{ReqID: m.ReqID, Code: wire.CodeRateLimited, Msg: "too many requests"})
	}
	var observed netip.Addr
	if ap, err := netip.ParseAddrPort(c.ch.RemoteAddr().String()); err == nil {
		observed = ap.Addr().Unmap()
	}
	return c.reply(ctx, wire.Rankings{ReqID: m.ReqID, Observed: observed, Blobs: c.s.rankings.all()})
}
