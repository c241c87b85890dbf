package relay

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ferry-im/ferry/wire"
)

// Blob frames (docs/protocol.md section 6.13). Blob puts and gets are not
// charged to the request rate limits, which count requests: an upload is
// thousands of them. Creating and querying a blob is.

// blobMetrics are the blob store's and fan-out's collectors.
type blobMetrics struct {
	requests   *prometheus.CounterVec // op, result
	putBytes   *prometheus.CounterVec // result: stored, duplicate
	getBytes   prometheus.Counter
	completed  prometheus.Counter
	expired    prometheus.Counter
	fanouts    prometheus.Counter
	recipients *prometheus.CounterVec // result
}

func newBlobMetrics(reg *prometheus.Registry) *blobMetrics {
	m := &blobMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ferry_relay_blob_requests_total",
			Help: "Blob requests by operation (create, status, put, get) and result (ok, duplicate, gap, superseded, incomplete, denied, not_found, quota, too_large, bad_request, rate_limited, unavailable, error).",
		}, []string{"op", "result"}),
		putBytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ferry_relay_blob_put_bytes_total",
			Help: "Bytes received in BlobPut frames: stored, or duplicate (the relay had them already: a resumed upload sent them again).",
		}, []string{"result"}),
		getBytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ferry_relay_blob_get_bytes_total",
			Help: "Bytes sent in BlobData frames.",
		}),
		completed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ferry_relay_blobs_completed_total",
			Help: "Blobs whose last byte was stored.",
		}),
		expired: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ferry_relay_blobs_expired_total",
			Help: "Blobs deleted by their TTL (or, incomplete, by their idle TTL).",
		}),
		fanouts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ferry_relay_fanouts_total",
			Help: "Fanout requests handled.",
		}),
		recipients: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ferry_relay_fanout_recipients_total",
			Help: "Fanout recipients by result (stored, duplicate, denied, quota, rate_limited, error).",
		}, []string{"result"}),
	}
	reg.MustRegister(m.requests, m.putBytes, m.getBytes, m.completed, m.expired, m.fanouts, m.recipients)
	return m
}

// blobState is the BlobState answer for info.
func blobState(reqID uint32, info BlobInfo) wire.BlobState {
	st := wire.BlobState{ReqID: reqID, Size: uint64(info.Size), Stored: uint64(info.Stored), Complete: info.Complete}
	if info.Complete {
		st.Digest = info.Digest
	}
	return st
}

// blobFail answers a blob request with Error and counts it.
func (c *conn) blobFail(ctx context.Context, op string, reqID uint32, result string, code wire.Code, msg string) error {
	c.s.metrics.blob.requests.WithLabelValues(op, result).Inc()
	return c.reply(ctx, wire.Error{ReqID: reqID, Code: code, Msg: msg})
}

// blobStoreFailed answers a store failure, unless it is the connection's
// own cancellation.
func (c *conn) blobStoreFailed(ctx context.Context, op string, reqID uint32, err error) error {
	return c.storeFailed(ctx, op+" blob", err, func() error {
		return c.blobFail(ctx, op, reqID, "error", wire.CodeUnavailable, "attachment storage unavailable")
	})
}

const (
	noBlobs     = "this relay stores no attachments"
	notFinished = "the upload of this attachment is not finished; try again later"
)

// handleBlobCreate creates a blob (or finds it, for a resumed upload),
// charged to a mailbox whose token the client holds.
func (c *conn) handleBlobCreate(ctx context.Context, m wire.BlobCreate) error {
	const op = "create"
	lim := c.s.limits
	switch {
	case c.s.blobs == nil:
		return c.blobFail(ctx, op, m.ReqID, "unavailable", wire.CodeUnavailable, noBlobs)
	case !c.allow():
		return c.blobFail(ctx, op, m.ReqID, "rate_limited", wire.CodeRateLimited, "too many requests")
	case lim.BlobMaxSize > 0 && m.Size > uint64(lim.BlobMaxSize):
		return c.blobFail(ctx, op, m.ReqID, "too_large", wire.CodeTooLarge, fmt.Sprintf("attachments on this relay are at most %d bytes", lim.BlobMaxSize))
	}
	ok, err := c.checkToken(ctx, m.Mailbox, m.Token)
	if err != nil {
		return c.blobStoreFailed(ctx, op, m.ReqID, err)
	}
	if !ok {
		return c.blobFail(ctx, op, m.ReqID, "denied", wire.CodeDenied, "unknown mailbox or wrong delivery token")
	}
	q := BlobQuota{MaxCount: lim.BlobQuotaCount, MaxBytes: lim.BlobQuotaBytes}
	info, err := c.s.blobs.Create(ctx, wire.BlobID(m.Key), m.Mailbox, int64(m.Size), c.s.now(), q)
	switch {
	case errors.Is(err, ErrQuota):
		return c.blobFail(ctx, op, m.ReqID, "quota", wire.CodeQuota, "the recipient's attachment storage on this relay is full")
	case errors.Is(err, ErrBlobSize):
		return c.blobFail(ctx, op, m.ReqID, "bad_request", wire.CodeBadRequest, "the attachment exists with another size")
	case err != nil:
		return c.blobStoreFailed(ctx, op, m.ReqID, err)
	}
	if m.Flags&wire.BlobReset != 0 {
		if info, err = c.s.blobs.Reset(ctx, info.ID, c.s.now()); err != nil {
			return c.blobStoreFailed(ctx, op, m.ReqID, err)
		}
	}
	c.s.writers.claim(info.ID, c)
	c.s.metrics.blob.requests.WithLabelValues(op, "ok").Inc()
	return c.reply(ctx, blobState(m.ReqID, info))
}

// handleBlobStatus tells the holder of a blob's key how much is stored.
func (c *conn) handleBlobStatus(ctx context.Context, m wire.BlobStatus) error {
	const op = "status"
	switch {
	case c.s.blobs == nil:
		return c.blobFail(ctx, op, m.ReqID, "unavailable", wire.CodeUnavailable, noBlobs)
	case !c.allow():
		return c.blobFail(ctx, op, m.ReqID, "rate_limited", wire.CodeRateLimited, "too many requests")
	}
	info, err := c.s.blobs.Info(ctx, wire.BlobID(m.Key))
	switch {
	case errors.Is(err, ErrNotFound):
		return c.blobFail(ctx, op, m.ReqID, "not_found", wire.CodeNotFound, "no such upload (it may have expired)")
	case err != nil:
		return c.blobStoreFailed(ctx, op, m.ReqID, err)
	}
	c.s.writers.claim(info.ID, c)
	c.s.metrics.blob.requests.WithLabelValues(op, "ok").Inc()
	return c.reply(ctx, blobState(m.ReqID, info))
}

// handleBlobPut writes a piece of a blob. A piece beyond the bytes stored
// writes nothing and is answered with the state, whose Stored tells the
// client where to go on; bytes the relay has already are counted as
// duplicates and not written again.
func (c *conn) handleBlobPut(ctx context.Context, m wire.BlobPut) error {
	const op = "put"
	if c.s.blobs == nil {
		return c.blobFail(ctx, op, m.ReqID, "unavailable", wire.CodeUnavailable, noBlobs)
	}
	bid := wire.BlobID(m.Key)
	bm := c.s.metrics.blob
	if !c.s.writers.mayWrite(bid, c) {
		// A connection the upload has moved away from (it resumed on a
		// new one): its late pieces are not written.
		info, err := c.s.blobs.Info(ctx, bid)
		if err != nil {
			return c.blobStoreFailed(ctx, op, m.ReqID, err)
		}
		bm.requests.WithLabelValues(op, "superseded").Inc()
		return c.reply(ctx, blobState(m.ReqID, info))
	}
	info, dup, err := c.s.blobs.Write(ctx, bid, int64(m.Offset), m.Data, c.s.now())
	if info.Complete {
		c.s.writers.release(bid)
	}
	switch {
	case errors.Is(err, ErrNotFound):
		return c.blobFail(ctx, op, m.ReqID, "not_found", wire.CodeNotFound, "no such upload (it may have expired); create it first")
	case errors.Is(err, ErrBlobRange):
		return c.blobFail(ctx, op, m.ReqID, "bad_request", wire.CodeBadRequest, "the piece goes past the attachment's size")
	case errors.Is(err, ErrBlobGap):
		bm.requests.WithLabelValues(op, "gap").Inc()
		return c.reply(ctx, blobState(m.ReqID, info))
	case err != nil:
		return c.blobStoreFailed(ctx, op, m.ReqID, err)
	}
	if dup > 0 {
		bm.putBytes.WithLabelValues("duplicate").Add(float64(dup))
	}
	if n := len(m.Data) - dup; n > 0 {
		bm.putBytes.WithLabelValues("stored").Add(float64(n))
		if info.Complete {
			bm.completed.Inc()
		}
	}
	if dup == len(m.Data) {
		bm.requests.WithLabelValues(op, "duplicate").Inc()
	} else {
		bm.requests.WithLabelValues(op, "ok").Inc()
	}
	return c.reply(ctx, blobState(m.ReqID, info))
}

// blobWriters remembers which connection writes each blob in progress:
// the last one to create it or ask for its status (a resumed upload), or
// else the first to write it. Pieces from any other connection (an
// earlier one of the same upload, whose frames still arrive) are not
// written, so a resumed upload never has the relay store a byte twice.
type blobWriters struct {
	mu sync.Mutex // mu protects by and owned
	by map[[16]byte]*conn
	// owned lists each connection's blobs, to forget them when it ends.
	owned map[*conn][][16]byte
}

func (w *blobWriters) claim(id [16]byte, c *conn) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.by == nil {
		w.by, w.owned = make(map[[16]byte]*conn), make(map[*conn][][16]byte)
	}
	if w.by[id] != c {
		w.by[id] = c
		w.owned[c] = append(w.owned[c], id)
	}
}

// mayWrite reports whether c may write blob id, making it the writer if
// there is none (after a relay restart).
func (w *blobWriters) mayWrite(id [16]byte, c *conn) bool {
	w.mu.Lock()
	cur := w.by[id]
	w.mu.Unlock()
	if cur == nil {
		w.claim(id, c)
		return true
	}
	return cur == c
}

func (w *blobWriters) release(id [16]byte) {
	w.mu.Lock()
	defer w.mu.Unlock()
	delete(w.by, id)
}

// forget drops c's claims when it ends.
func (w *blobWriters) forget(c *conn) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, id := range w.owned[c] {
		if w.by[id] == c {
			delete(w.by, id)
		}
	}
	delete(w.owned, c)
}

var blobBufs = sync.Pool{New: func() any { b := make([]byte, wire.MaxBlobData); return &b }}

// handleBlobGet reads a range of a complete blob.
func (c *conn) handleBlobGet(ctx context.Context, m wire.BlobGet) error {
	const op = "get"
	if c.s.blobs == nil {
		return c.blobFail(ctx, op, m.ReqID, "unavailable", wire.CodeUnavailable, noBlobs)
	}
	bp := blobBufs.Get().(*[]byte)
	defer blobBufs.Put(bp)
	n, err := c.s.blobs.ReadAt(ctx, m.ID, (*bp)[:m.Length], int64(m.Offset))
	if errors.Is(err, ErrNotFound) {
		if info, ierr := c.s.blobs.Info(ctx, m.ID); ierr == nil && !info.Complete {
			return c.blobFail(ctx, op, m.ReqID, "incomplete", wire.CodeUnavailable, notFinished)
		}
	}
	switch {
	case errors.Is(err, ErrNotFound):
		return c.blobFail(ctx, op, m.ReqID, "not_found", wire.CodeNotFound, "no such attachment (it may have expired)")
	case errors.Is(err, ErrBlobRange):
		return c.blobFail(ctx, op, m.ReqID, "bad_request", wire.CodeBadRequest, "the range starts past the attachment's end")
	case err != nil:
		return c.blobStoreFailed(ctx, op, m.ReqID, err)
	}
	c.s.metrics.blob.requests.WithLabelValues(op, "ok").Inc()
	c.s.metrics.blob.getBytes.Add(float64(n))
	return c.reply(ctx, wire.BlobData{ReqID: m.ReqID, Offset: m.Offset, Data: (*bp)[:n]})
}

// sweepBlobs deletes the blobs past their TTLs.
func (s *Server) sweepBlobs(ctx context.Context) error {
	if s.blobs == nil || s.limits.BlobTTL <= 0 && s.limits.BlobIdleTTL <= 0 {
		return nil
	}
	now := s.now()
	created, touched := now.Add(-s.limits.BlobTTL), now.Add(-s.limits.BlobIdleTTL)
	if s.limits.BlobTTL <= 0 {
		created = now.Add(-1 << 62)
	}
	if s.limits.BlobIdleTTL <= 0 {
		touched = now.Add(-1 << 62)
	}
	n, err := s.blobs.Expire(ctx, created, touched)
	s.metrics.blob.expired.Add(float64(n))
	if err != nil {
		if ctx.Err() == nil {
			s.log.Error("expire blobs", "err", err)
		}
		return fmt.Errorf("sweep blobs: %w", err)
	}
	return nil
}
