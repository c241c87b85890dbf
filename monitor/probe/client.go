package probe

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/ferry-im/ferry"
	"github.com/ferry-im/ferry/link"
	"github.com/ferry-im/ferry/monitor"
	"github.com/ferry-im/ferry/transport"
)

// ClientConfig configures a ClientProbe. Dir, Relay and Transport are
// required; the zero value of every other field works.
type ClientConfig struct {
	// Dir holds the cell's two probe accounts (profiles "a" and "b").
	Dir string
	// Relay is the relay, with the one endpoint to probe.
	Relay link.Relay
	// Transport is that endpoint's transport.
	Transport Transport
	// NetDialer makes the raw connections (the path the trial takes). If
	// nil, a net.Dialer is used.
	NetDialer transport.NetDialer
	// Size is the length of the probe message in bytes. Default 60,000,
	// just under the client's limit (64 KiB): the half measured for the
	// rate is then larger than a censor's burst allowance (16 KiB).
	Size int
	// Rand is the accounts' and the messages' randomness. If nil,
	// crypto/rand is used.
	Rand io.Reader
	// Now returns the current time. If nil, time.Now is used.
	Now func() time.Time
	// Logger receives the client library's events. If nil, nothing is
	// logged.
	Logger *slog.Logger
}

// Probe accounts' names, and the marker files of the accounts directory.
const (
	nameA       = "probe-a"
	nameB       = "probe-b"
	readyMarker = "ready" // both accounts exist and know each other
	dirtyMarker = "dirty" // a trial failed: a message may wait in an outbox; start afresh
)

// ClientProbe makes the round trip of TextProbe through the whole client
// library (package ferry), as a user's client does: two probe profiles,
// end-to-end sessions, the outbox, the local store. It sends a text
// message from one to the other over one endpoint of a relay, waits for it
// to arrive and for its delivery receipt to come back, and measures the
// rate at which it downloaded. It costs far more than TextProbe (two SQLite
// profiles, and new ones after every failed trial), so the monitor runs it
// as its own feature (FeatureClientText) when asked. It is a
// monitor.Probe; trials of one ClientProbe do not overlap.
type ClientProbe struct {
	cfg ClientConfig
	reg *transport.Registry
	now func() time.Time

	mu sync.Mutex // mu serialises trials
}

var _ monitor.Probe = (*ClientProbe)(nil)

// NewClientProbe returns a probe for cfg.
func NewClientProbe(cfg ClientConfig) (*ClientProbe, error) {
	reg, err := common{cfg.Dir, cfg.Relay, cfg.Transport, &cfg.NetDialer, &cfg.Now, &cfg.Rand, &cfg.Size}.fill("client probe")
	if err != nil {
		return nil, err
	}
	return &ClientProbe{cfg: cfg, reg: reg, now: cfg.Now}, nil
}

// trial is one trial of a ClientProbe under way.
type trial struct {
	trialRun
	p *ClientProbe
}

// Probe runs one trial.
func (p *ClientProbe) Probe(ctx context.Context) monitor.Trial {
	p.mu.Lock()
	defer p.mu.Unlock()
	tr := &trial{p: p, trialRun: newTrialRun(ctx, p.now)}
	tr.run()
	if !tr.t.OK {
		// A message may wait in an outbox, or on the relay: the next trial
		// starts from new accounts so that it measures only itself.
		os.WriteFile(filepath.Join(p.cfg.Dir, dirtyMarker), nil, 0o600)
	}
	return tr.finish()
}

func (tr *trial) run() {
	a, b, ok := tr.accounts()
	if !ok {
		return
	}
	defer a.Close()
	defer b.Close()
	text, err := tr.p.text()
	if err != nil {
		tr.t.Fail(monitor.StageLocal, err)
		return
	}
	conv, err := a.FindConversation(tr.ctx, nameB)
	if err != nil {
		tr.t.Fail(monitor.StageLocal, err)
		return
	}
	var m *ferry.Message
	if !tr.step("send", func() (err error) { m, err = a.Send(tr.ctx, conv.ID, text); return }) {
		tr.refused(a, conv.ID, m)
		return
	}
	arrived := false
	onMsg := func(ms []*ferry.Message) {
		for _, x := range ms {
			arrived = arrived || x.ID == m.ID
		}
	}
	if !tr.step("deliver", func() error { return b.Sync(tr.ctx, ferry.SyncOptions{OnMessages: onMsg}) }) {
		return
	}
	tr.t.Transfer = tr.rec.transfer()
	if !arrived {
		tr.notDelivered("the message did not arrive")
		return
	}
	delivered := false
	if !tr.step("receipt", func() error {
		if err := a.Sync(tr.ctx, ferry.SyncOptions{}); err != nil {
			return err
		}
		ms, err := a.Messages(tr.ctx, ferry.Query{Conversation: conv.ID, Last: 16})
		for _, x := range ms {
			delivered = delivered || x.ID == m.ID && x.State >= ferry.StateDelivered && x.State != ferry.StateFailed
		}
		return err
	}) {
		return
	}
	if !delivered {
		tr.notDelivered("the delivery receipt did not come back")
	}
}

// step runs f as the trial's step called name and reports whether it
// succeeded; on failure it marks the trial failed where the recorder says.
func (tr *trial) step(name string, f func() error) bool {
	return step(&tr.t, tr.p.now, name, f, tr.fail)
}

// step runs f as t's step called name, timed with now, and reports
// whether it succeeded; on failure fail marks t failed.
func step(t *monitor.Trial, now func() time.Time, name string, f func() error, fail func(error)) bool {
	start := now()
	err := f()
	s := monitor.Step{Name: name, Start: start.Sub(t.Start), Duration: now().Sub(start)}
	if err != nil {
		fail(err)
		s.Failure = t.Failure
	}
	t.Steps = append(t.Steps, s)
	return err == nil
}

// fail marks the trial failed by err: where the connections failed, or
// on the monitor's own machine when no connection did and the error is
// not the client's "unreachable".
func (tr *trial) fail(err error) {
	if d, network := tr.rec.diagnose(err); network {
		tr.t.FailWith(d.stage, d.failure, d.detail)
		return
	}
	switch {
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		tr.t.Fail(monitor.StageHandshake, err)
	case errors.Is(err, ferry.ErrQueued), errors.Is(err, ferry.ErrUnreachable):
		tr.t.FailWith(monitor.StageDeliver, monitor.FailureNotDelivered, err.Error())
	default:
		tr.t.FailWith(monitor.StageLocal, monitor.FailureLocal, err.Error())
	}
}

// refused turns a failed send whose message the relay refused for good
// into an auth failure: the relay no longer knows the probe account.
func (tr *trial) refused(a *ferry.Client, conv ferry.ConversationID, m *ferry.Message) {
	if m == nil {
		return
	}
	ms, err := a.Messages(context.WithoutCancel(tr.ctx), ferry.Query{Conversation: conv, Last: 16})
	if err != nil {
		return
	}
	for _, x := range ms {
		if x.ID == m.ID && x.State == ferry.StateFailed {
			tr.t.FailWith(monitor.StageAuth, monitor.FailureDenied, "the relay refused the probe message for good: it does not know the probe account")
		}
	}
}

func (tr *trial) notDelivered(detail string) {
	tr.t.FailWith(monitor.StageDeliver, monitor.FailureNotDelivered, detail)
	if n := len(tr.t.Steps); n > 0 {
		tr.t.Steps[n-1].Failure = monitor.FailureNotDelivered
	}
}

// text returns a new probe message of the configured size.
func (p *ClientProbe) text() (string, error) {
	var nonce [8]byte
	if _, err := io.ReadFull(p.cfg.Rand, nonce[:]); err != nil {
		return "", fmt.Errorf("make probe message: %w", err)
	}
	head := "ferry-monitor probe " + hex.EncodeToString(nonce[:]) + " "
	return head + strings.Repeat(".", max(0, p.cfg.Size-len(head))), nil
}
