package monitor

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"
)

// Probe runs one trial of a cell. It fills the trial's outcome (OK, or
// Stage, Failure and Detail), Steps and Transfer; the Runner fills the
// cell, the endpoint, the start and runtime when zero, and the controls.
// It must return when ctx is done.
type Probe interface {
	Probe(ctx context.Context) Trial
}

// ControlProbe measures the neutral reference site through the same path
// as a cell's probe: the pre control (post false) only whether the site
// can be reached, the post control (post true) also the path's rate. It
// must return when ctx is done.
type ControlProbe interface {
	Control(ctx context.Context, post bool) Control
}

// Target is one cell the Runner probes.
type Target struct {
	Cell
	// Endpoint is the endpoint probed, as transport=host:port (no secrets).
	Endpoint string
	Probe    Probe
	// Control, if not nil, runs before and after every trial.
	Control ControlProbe
	// SharedServer says the control reaches the relay's own address (a
	// transport's cover site): a censor's residual block caused by the
	// probe would fail the post control too, so after a failed probe the
	// post control waits Config.Residual first.
	SharedServer bool
}

// Store keeps the history the Runner writes. monitor/history is the
// SQLite implementation.
type Store interface {
	// AddTrial records a trial.
	AddTrial(ctx context.Context, t *Trial) error
	// SaveAssessment records a cell's current assessment. When its state
	// changed, started is the event that begins and ended the one that
	// ends (with End set), or nil when started supersedes the open event
	// (it starts no later): the store then drops the open event. Both are
	// nil when nothing changed.
	SaveAssessment(ctx context.Context, a Assessment, ended, started *Event) error
	// RecentTrials returns up to n of the cell's latest trials, oldest
	// first.
	RecentTrials(ctx context.Context, c Cell, n int) ([]Trial, error)
	// OpenEvent returns the cell's open event, or nil.
	OpenEvent(ctx context.Context, c Cell) (*Event, error)
}

// Sink receives every trial with the assessment it led to, and every
// change of state. OONIWriter, Metrics and Webhook are sinks. Its methods
// are called from the Runner's goroutines, one cell at a time, and must
// be safe for concurrent use across cells.
type Sink interface {
	Trial(ctx context.Context, t *Trial, a Assessment)
	Change(ctx context.Context, ended *Event, started Event)
}

// Config configures a Runner. The zero value of every field but Targets
// works.
type Config struct {
	Targets []Target
	// Interval is the time between the starts of two trials of a cell,
	// varied by Jitter. Default 5 minutes.
	Interval time.Duration
	// Jitter is the fraction of Interval by which each wait is varied at
	// random, either way. Default 0.2; negative for none.
	Jitter float64
	// Timeout bounds one probe (controls excluded). Default 2 minutes.
	Timeout time.Duration
	// ControlTimeout bounds one control. Default 30 seconds.
	ControlTimeout time.Duration
	// Residual is how long a post control waits after a failed probe
	// when it shares the relay's address (Target.SharedServer): past the
	// longest residual block of docs/censor.md (180 s). Default 190 s.
	Residual time.Duration
	// Thresholds tune the classifier.
	Thresholds Thresholds
	// Store, if not nil, keeps the history.
	Store Store
	// Sinks receive trials and changes (outputs, metrics, webhooks).
	Sinks []Sink
	// Logger receives operational events; never keys, tokens or message
	// text. If nil, nothing is logged.
	Logger *slog.Logger
	// Now returns the current time. If nil, time.Now is used. (Waits use
	// the runtime's timers.)
	Now func() time.Time
	// Rand varies the waits. If nil, crypto/rand is used.
	Rand io.Reader
}

func (c *Config) interval() time.Duration { return orDuration(c.Interval, 5*time.Minute) }
func (c *Config) timeout() time.Duration  { return orDuration(c.Timeout, 2*time.Minute) }
func (c *Config) controlTimeout() time.Duration {
	return orDuration(c.ControlTimeout, 30*time.Second)
}
func (c *Config) residual() time.Duration { return orDuration(c.Residual, 190*time.Second) }

func (c *Config) jitter() float64 {
	switch {
	case c.Jitter == 0:
		return 0.2
	case c.Jitter < 0:
		return 0
	}
	return min(c.Jitter, 1)
}

func orDuration(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}

// Runner probes its targets on a schedule, classifies their trials and
// feeds the store and the sinks. Its methods are safe for concurrent use.
type Runner struct {
	cfg Config
	log *slog.Logger
	now func() time.Time

	randMu sync.Mutex // randMu protects rand
	rand   io.Reader

	mu    sync.Mutex // mu protects cells
	cells map[Cell]*cellState
}

// cellState is a target's classifier, open event and latest trial.
type cellState struct {
	cls    *Classifier
	open   *Event
	latest Sibling   // the latest trial, as its siblings see it
	end    time.Time // when it ended; zero before the first
}

// NewRunner returns a Runner for cfg. Targets must name distinct cells.
func NewRunner(cfg Config) (*Runner, error) {
	r := &Runner{cfg: cfg, log: cfg.Logger, now: cfg.Now, rand: cfg.Rand, cells: map[Cell]*cellState{}}
	if r.log == nil {
		r.log = slog.New(slog.DiscardHandler)
	}
	if r.now == nil {
		r.now = time.Now
	}
	if r.rand == nil {
		r.rand = rand.Reader
	}
	for _, t := range cfg.Targets {
		if t.Probe == nil {
			return nil, fmt.Errorf("target %s has no probe", t.Cell)
		}
		if _, dup := r.cells[t.Cell]; dup {
			return nil, fmt.Errorf("two targets for cell %s", t.Cell)
		}
		r.cells[t.Cell] = &cellState{cls: NewClassifier(t.Cell, cfg.Thresholds)}
	}
	return r, nil
}

// Assessments returns the current assessment of every cell, in the order
// of the targets.
func (r *Runner) Assessments() []Assessment {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]Assessment, 0, len(r.cfg.Targets))
	for _, t := range r.cfg.Targets {
		out = append(out, r.cells[t.Cell].cls.Current())
	}
	return out
}

// Restore replays each cell's latest trials from the store, so that a
// restarted monitor keeps its states, and their start times, where it
// left them.
func (r *Runner) Restore(ctx context.Context) error {
	if r.cfg.Store == nil {
		return nil
	}
	for _, t := range r.cfg.Targets {
		trials, err := r.cfg.Store.RecentTrials(ctx, t.Cell, restoreTrials)
		if err != nil {
			return fmt.Errorf("restore %s: %w", t.Cell, err)
		}
		open, err := r.cfg.Store.OpenEvent(ctx, t.Cell)
		if err != nil {
			return fmt.Errorf("restore %s: %w", t.Cell, err)
		}
		r.mu.Lock()
		cs := r.cells[t.Cell]
		for i := range trials {
			cs.cls.Observe(&trials[i])
		}
		cs.open = open
		if open != nil && open.State == cs.cls.cur.State && open.Mechanism == cs.cls.cur.Mechanism {
			cs.cls.cur.Since, cs.cls.cur.Detected = open.Start, open.Detected
		}
		r.mu.Unlock()
	}
	return nil
}

// restoreTrials is how many trials Restore replays per cell.
const restoreTrials = 200

// Run probes every target until ctx is done, each on its own schedule,
// starting at once. It returns nil when ctx is done.
func (r *Runner) Run(ctx context.Context) error {
	g, ctx := errgroup.WithContext(ctx)
	for _, t := range r.cfg.Targets {
		g.Go(func() error {
			for {
				start := r.now()
				r.RunTrial(ctx, t)
				if err := sleep(ctx, r.wait(start)); err != nil {
					return nil
				}
			}
		})
	}
	return g.Wait()
}

// RunOnce runs one trial of every target, in parallel, and returns when
// they are done.
func (r *Runner) RunOnce(ctx context.Context) {
	var wg sync.WaitGroup
	for _, t := range r.cfg.Targets {
		wg.Go(func() { r.RunTrial(ctx, t) })
	}
	wg.Wait()
}

// wait returns how long to wait after a trial that started at start.
func (r *Runner) wait(start time.Time) time.Duration {
	iv := float64(r.cfg.interval())
	if j := r.cfg.jitter(); j > 0 {
		iv *= 1 + j*(2*r.float()-1)
	}
	return time.Duration(iv) - r.now().Sub(start)
}

// float returns a uniform number in [0, 1).
func (r *Runner) float() float64 {
	var b [8]byte
	r.randMu.Lock()
	_, err := io.ReadFull(r.rand, b[:])
	r.randMu.Unlock()
	if err != nil {
		return 0.5
	}
	return float64(binary.LittleEndian.Uint64(b[:])>>11) / (1 << 53)
}

// sleep waits d, or until ctx is done and then returns its error.
func sleep(ctx context.Context, d time.Duration) error {
	select {
	case <-time.After(max(d, 0)):
		return ctx.Err()
	case <-ctx.Done():
		return ctx.Err()
	}
}

// RunTrial runs one trial of t (pre control, probe, post control),
// records and classifies it, and returns it. A trial interrupted by ctx is
// neither recorded nor classified.
func (r *Runner) RunTrial(ctx context.Context, t Target) Trial {
	var trial Trial
	if t.Control != nil {
		pre := r.control(ctx, t, false)
		trial.Pre = &pre
	}
	start := r.now()
	pctx, cancel := context.WithTimeout(ctx, r.cfg.timeout())
	p := t.Probe.Probe(pctx)
	cancel()
	trial.Outcome, trial.Steps = p.Outcome, p.Steps
	trial.Cell, trial.Endpoint = t.Cell, t.Endpoint
	if trial.Start.IsZero() {
		trial.Start = start
	}
	if trial.Runtime == 0 {
		trial.Runtime = r.now().Sub(start)
	}
	if t.Control != nil {
		if !trial.OK && t.SharedServer {
			if sleep(ctx, r.cfg.residual()) != nil {
				return trial
			}
		}
		post := r.control(ctx, t, true)
		trial.Post = &post
	}
	if ctx.Err() != nil {
		return trial
	}
	r.record(ctx, &trial)
	return trial
}

func (r *Runner) control(ctx context.Context, t Target, post bool) Control {
	start := r.now()
	cctx, cancel := context.WithTimeout(ctx, r.cfg.controlTimeout())
	defer cancel()
	c := t.Control.Control(cctx, post)
	if c.Start.IsZero() {
		c.Start = start
	}
	if c.Runtime == 0 {
		c.Runtime = r.now().Sub(start)
	}
	return c
}

// Observe classifies a trial that ran elsewhere (or in a test) as if the
// Runner had run it: it records it and feeds the sinks.
func (r *Runner) Observe(ctx context.Context, t *Trial) (Assessment, error) {
	r.mu.Lock()
	_, ok := r.cells[t.Cell]
	r.mu.Unlock()
	if !ok {
		return Assessment{}, fmt.Errorf("observe trial: unknown cell %s", t.Cell)
	}
	return r.record(ctx, t), nil
}

// record stores and classifies a trial and tells the sinks.
func (r *Runner) record(ctx context.Context, t *Trial) Assessment {
	if t.Siblings == nil {
		r.mu.Lock()
		t.Siblings = r.siblings(t)
		r.mu.Unlock()
	}
	// The history must survive a full disk: the state is still computed
	// and served, and the error is logged and counted.
	if r.cfg.Store != nil {
		if err := r.cfg.Store.AddTrial(ctx, t); err != nil {
			r.storeError(t.Cell, err)
		}
	}
	r.mu.Lock()
	cs := r.cells[t.Cell]
	cs.latest = Sibling{Transport: t.Transport, Feature: t.Feature, Start: t.Start, OK: t.OK}
	cs.end = t.Start.Add(t.Runtime)
	a, changed := cs.cls.Observe(t)
	var ended, started *Event
	if changed || cs.open == nil {
		// An event the new one starts no later than is superseded (the
		// store drops it), not ended: the cell was in the new state all
		// along, the monitor only learnt it now.
		if cs.open != nil && a.Since.After(cs.open.Start) {
			e := *cs.open
			e.End = a.Since
			ended = &e
		}
		ev := a.event()
		started = &ev
		cs.open = started
	}
	r.mu.Unlock()
	if r.cfg.Store != nil {
		if err := r.cfg.Store.SaveAssessment(ctx, a, ended, started); err != nil {
			r.storeError(t.Cell, err)
		}
	}
	for _, s := range r.cfg.Sinks {
		s.Trial(ctx, t, a)
		if started != nil {
			s.Change(ctx, ended, *started)
		}
	}
	if started != nil {
		r.log.Info("cell changed state", "cell", t.Cell.String(), "state", string(a.State), "mechanism", string(a.Mechanism), "since", a.Since, "evidence", a.Evidence)
	}
	return a
}

// siblings returns the latest trial of every other transport of t's relay,
// from the same vantage, that ended no longer than an interval before t
// started. r.mu must be held.
func (r *Runner) siblings(t *Trial) []Sibling {
	var out []Sibling
	oldest := t.Start.Add(-r.cfg.interval())
	for _, tg := range r.cfg.Targets {
		c := tg.Cell
		if c.Vantage != t.Vantage || c.Relay != t.Relay || c.Transport == t.Transport {
			continue
		}
		// Not older than an interval, and not from after this trial (a
		// replay or Observe may feed cells out of step).
		if cs := r.cells[c]; !cs.end.IsZero() && !cs.end.Before(oldest) && !cs.latest.Start.After(t.Start.Add(t.Runtime)) {
			out = append(out, cs.latest)
		}
	}
	return out
}

// ErrStore is what a Sink's StoreError receives wrapped.
var ErrStore = errors.New("the monitor's history could not be written")

func (r *Runner) storeError(c Cell, err error) {
	r.log.Error("write history", "cell", c.String(), "err", err)
	for _, s := range r.cfg.Sinks {
		if se, ok := s.(interface{ StoreError(error) }); ok {
			se.StoreError(fmt.Errorf("%w: %v", ErrStore, err))
		}
	}
}
