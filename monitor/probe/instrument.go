package probe

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/ferry-im/ferry/link"
	"github.com/ferry-im/ferry/monitor"
	"github.com/ferry-im/ferry/transport"
)

// A recorder watches the connections a trial makes, at two layers: the
// raw connection the transport runs over (connect, and the bytes and
// errors under the transport) and the transport's conn the channel runs
// over (whether the relay sent anything, when each byte arrived). It
// travels in the context handed to the client library, which hands it to
// the transport dialers.
type recorder struct {
	now func() time.Time

	mu       sync.Mutex // mu protects attempts
	attempts []*attempt
}

// attempt is one dial of an endpoint. Its dial may run on a goroutine of
// the client's race while the trial reads it.
type attempt struct {
	start      time.Time
	setupStage func(err error, serverBytes bool) monitor.Stage

	mu           sync.Mutex // mu protects the fields below
	rawErr       error      // the raw dial failed
	transportErr error      // the raw dial worked, the transport's dial failed
	raw, tr      *connStats // nil until dialed
}

// attemptState is a copy of an attempt's results.
type attemptState struct {
	rawErr, transportErr error
	raw, tr              *connStats
}

func (a *attempt) state() attemptState {
	a.mu.Lock()
	defer a.mu.Unlock()
	return attemptState{a.rawErr, a.transportErr, a.raw, a.tr}
}

// set changes the attempt's results under its lock.
func (a *attempt) set(f func(a *attempt)) {
	a.mu.Lock()
	defer a.mu.Unlock()
	f(a)
}

type recorderKey struct{}
type attemptKey struct{}

func withRecorder(ctx context.Context, r *recorder) context.Context {
	return context.WithValue(ctx, recorderKey{}, r)
}

// connStats is what a watched conn saw. Errors are recorded until the
// owner closes the conn.
type connStats struct {
	now func() time.Time

	mu     sync.Mutex // mu protects the fields below
	up     int64
	down   int64
	marks  []mark // cumulative bytes read, with when
	err    error  // the first read or write error
	closed bool
}

type mark struct {
	at time.Time
	n  int64
}

// maxMarks bounds the read marks kept per conn (one per Read call).
const maxMarks = 1 << 14

func (s *connStats) read(n int, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if n > 0 {
		s.down += int64(n)
		if len(s.marks) < maxMarks {
			s.marks = append(s.marks, mark{at: s.now(), n: s.down})
		}
	}
	s.fail(err)
}

func (s *connStats) wrote(n int, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.up += int64(n)
	s.fail(err)
}

// fail records err as the conn's error unless one is recorded, the owner
// closed the conn, or err only says it is closed.
func (s *connStats) fail(err error) {
	if err == nil || s.err != nil || s.closed || errors.Is(err, net.ErrClosed) {
		return
	}
	s.err = err
}

func (s *connStats) snapshot() (up, down int64, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.up, s.down, s.err
}

// sustained returns the second half of the bytes read: how many and how
// long they took to arrive (a censor's burst allowance goes into the
// first half).
func (s *connStats) sustained() monitor.Transfer {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.marks) < 2 {
		return monitor.Transfer{}
	}
	last := s.marks[len(s.marks)-1]
	half := last.n / 2
	for _, m := range s.marks {
		if m.n >= half {
			return monitor.Transfer{Bytes: last.n - m.n, Time: last.at.Sub(m.at)}
		}
	}
	return monitor.Transfer{}
}

// watchedConn is a net.Conn whose reads and writes go into stats.
type watchedConn struct {
	net.Conn
	stats *connStats
}

func (c *watchedConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	c.stats.read(n, err)
	return n, err
}

func (c *watchedConn) Write(b []byte) (int, error) {
	n, err := c.Conn.Write(b)
	c.stats.wrote(n, err)
	return n, err
}

func (c *watchedConn) Close() error {
	c.stats.mu.Lock()
	c.stats.closed = true
	c.stats.mu.Unlock()
	return c.Conn.Close()
}

// netDialer watches the raw connections a transport makes through base.
type netDialer struct {
	base transport.NetDialer
	now  func() time.Time
}

func (d *netDialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	c, err := d.base.DialContext(ctx, network, addr)
	a, _ := ctx.Value(attemptKey{}).(*attempt)
	if a == nil {
		return c, err
	}
	if err != nil {
		a.set(func(a *attempt) { a.rawErr = err })
		return nil, err
	}
	st := &connStats{now: d.now}
	a.set(func(a *attempt) { a.raw = st })
	return &watchedConn{Conn: c, stats: st}, nil
}

// transportDialer watches the dials of one transport.
type transportDialer struct {
	inner      transport.Dialer
	now        func() time.Time
	setupStage func(err error, serverBytes bool) monitor.Stage
}

func (d *transportDialer) DialContext(ctx context.Context, ep link.Endpoint) (net.Conn, error) {
	r, _ := ctx.Value(recorderKey{}).(*recorder)
	if r == nil {
		return d.inner.DialContext(ctx, ep)
	}
	a := &attempt{start: d.now(), setupStage: d.setupStage}
	r.mu.Lock()
	r.attempts = append(r.attempts, a)
	r.mu.Unlock()
	c, err := d.inner.DialContext(context.WithValue(ctx, attemptKey{}, a), ep)
	if err != nil {
		a.set(func(a *attempt) {
			if a.rawErr == nil {
				a.transportErr = err
			}
		})
		return nil, err
	}
	st := &connStats{now: d.now}
	a.set(func(a *attempt) { a.tr = st })
	return &watchedConn{Conn: c, stats: st}, nil
}

// failed reports whether the attempt shows a failure of its own.
func (a *attempt) failed() bool {
	st := a.state()
	if st.rawErr != nil || st.transportErr != nil {
		return true
	}
	for _, s := range []*connStats{st.raw, st.tr} {
		if s != nil {
			if _, _, err := s.snapshot(); err != nil {
				return true
			}
		}
	}
	return false
}

// diagnosis is where and how a step failed.
type diagnosis struct {
	stage   monitor.Stage
	failure string
	detail  string
}

// diagnose says where a step that returned stepErr failed, from the
// latest attempt that failed (or the latest attempt). network is false
// when no attempt was made or none shows a network failure.
func (r *recorder) diagnose(stepErr error) (d diagnosis, network bool) {
	r.mu.Lock()
	attempts := append([]*attempt(nil), r.attempts...)
	r.mu.Unlock()
	var a *attempt
	for i := len(attempts) - 1; i >= 0 && a == nil; i-- {
		if attempts[i].failed() {
			a = attempts[i]
		}
	}
	if a == nil {
		return diagnosis{}, false
	}
	return a.diagnose(stepErr), true
}

func (a *attempt) diagnose(stepErr error) diagnosis {
	return a.state().diagnose(a.setupStage, stepErr)
}

func (a attemptState) diagnose(setupStage func(error, bool) monitor.Stage, stepErr error) diagnosis {
	var dnsErr *net.DNSError
	switch {
	case a.rawErr != nil && errors.As(a.rawErr, &dnsErr):
		return diagnosis{monitor.StageDNS, monitor.Failure(a.rawErr), a.rawErr.Error()}
	case a.rawErr != nil:
		return diagnosis{monitor.StageConnect, monitor.Failure(a.rawErr), a.rawErr.Error()}
	case a.transportErr != nil:
		// Between the raw connection and the channel: the transport's own
		// handshake (TLS and HTTP for https). What the raw conn saw (an
		// RST, a timeout) says more than the transport's wrapped error.
		err := a.transportErr
		serverBytes := false
		if a.raw != nil {
			_, down, rerr := a.raw.snapshot()
			serverBytes = down > 0
			if rerr != nil {
				err = rerr
			}
		}
		stage := monitor.StageHandshake
		if setupStage != nil {
			stage = setupStage(a.transportErr, serverBytes)
		}
		return diagnosis{stage, monitor.Failure(err), a.transportErr.Error()}
	}
	stage := monitor.StageHandshake
	err := stepErr
	if a.tr != nil {
		_, down, terr := a.tr.snapshot()
		if down > 0 {
			stage = monitor.StageDeliver
		}
		if terr != nil {
			err = terr
		}
	}
	if a.raw != nil {
		if _, _, rerr := a.raw.snapshot(); rerr != nil && err == stepErr {
			err = rerr
		}
	}
	if err == nil {
		return diagnosis{stage, monitor.FailureTimeout, "no answer"}
	}
	return diagnosis{stage, monitor.Failure(err), err.Error()}
}

// transfer returns the sustained part of the largest download any
// attempt made.
func (r *recorder) transfer() monitor.Transfer {
	r.mu.Lock()
	defer r.mu.Unlock()
	var best *connStats
	var most int64
	for _, a := range r.attempts {
		tr := a.state().tr
		if tr == nil {
			continue
		}
		if _, down, _ := tr.snapshot(); down > most {
			best, most = tr, down
		}
	}
	if best == nil || most < minTransfer {
		return monitor.Transfer{}
	}
	return best.sustained()
}

// watchedRegistry returns a registry holding t alone, its dialer making
// raw connections through nd, both watched.
func watchedRegistry(t Transport, nd transport.NetDialer, now func() time.Time) (*transport.Registry, error) {
	td := &transportDialer{
		inner:      t.New(&netDialer{base: nd, now: now}),
		now:        now,
		setupStage: t.SetupStage,
	}
	return transport.NewRegistry(transport.Entry{Name: t.Name, Dialer: td})
}

// common holds what both probes' configurations share.
type common struct {
	dir       string
	relay     link.Relay
	transport Transport
	nd        *transport.NetDialer
	now       *func() time.Time
	rand      *io.Reader
	size      *int
}

// fill checks the shared fields, sets their defaults and returns the
// watched registry of the transport.
func (c common) fill(what string) (*transport.Registry, error) {
	if c.dir == "" || len(c.relay.Endpoints) != 1 || c.transport.New == nil {
		return nil, fmt.Errorf("new %s: a directory, a relay with one endpoint and its transport are needed", what)
	}
	if *c.now == nil {
		*c.now = time.Now
	}
	if *c.rand == nil {
		*c.rand = rand.Reader
	}
	if *c.size <= 0 {
		*c.size = 60000
	}
	if *c.nd == nil {
		*c.nd = &net.Dialer{}
	}
	reg, err := watchedRegistry(c.transport, *c.nd, *c.now)
	if err != nil {
		return nil, fmt.Errorf("new %s: %w", what, err)
	}
	return reg, nil
}

// trialRun is what a trial of either probe carries while it runs: the
// trial, the recorder that watches its connections, and the context that
// carries the recorder.
type trialRun struct {
	t   monitor.Trial
	rec *recorder
	ctx context.Context
	now func() time.Time
}

func newTrialRun(ctx context.Context, now func() time.Time) trialRun {
	r := trialRun{t: monitor.Trial{Outcome: monitor.Outcome{Start: now(), OK: true}}, rec: &recorder{now: now}, now: now}
	r.ctx = withRecorder(ctx, r.rec)
	return r
}

// finish sets the trial's runtime and returns it.
func (r *trialRun) finish() monitor.Trial {
	r.t.Runtime = r.now().Sub(r.t.Start)
	return r.t
}
