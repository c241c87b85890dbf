package probe

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/ferry-im/ferry/channel"
	"github.com/ferry-im/ferry/internal/relayclient"
	"github.com/ferry-im/ferry/link"
	"github.com/ferry-im/ferry/monitor"
	"github.com/ferry-im/ferry/transport"
	"github.com/ferry-im/ferry/transport/fallback"
	"github.com/ferry-im/ferry/wire"
)

// TextConfig configures a TextProbe. Dir, Relay and Transport are
// required; the zero value of every other field works.
type TextConfig struct {
	// Dir holds the cell's two probe accounts (accounts.json, mode 0600).
	Dir string
	// Relay is the relay, with the one endpoint to probe.
	Relay link.Relay
	// Transport is that endpoint's transport.
	Transport Transport
	// NetDialer makes the raw connections (the path the trial takes). If
	// nil, a net.Dialer is used.
	NetDialer transport.NetDialer
	// Size is the length of the probe envelope in bytes. Default 60,000
	// (a long text message): the half measured for the rate is then
	// larger than a censor's burst allowance (16 KiB).
	Size int
	// DialTimeout bounds a dial and the channel handshake; StepTimeout
	// each exchange after it. Defaults 5 seconds (the client library's,
	// below the relay's 10-second handshake timeout: a censor that drops
	// the client's bytes then shows as a timeout, not as the relay giving
	// up) and 30 seconds.
	DialTimeout, StepTimeout time.Duration
	// Rand makes the keys, tokens, ids and envelopes. If nil, crypto/rand.
	Rand io.Reader
	// Now returns the current time. If nil, time.Now is used.
	Now func() time.Time
	// Logger receives the channel's debug events. If nil, nothing is
	// logged.
	Logger *slog.Logger
}

// TextProbe does over the relay protocol what a user's client does for a
// text message: probe account A sends an envelope to B's mailbox on an
// anonymous connection (a throwaway key) and gets the relay's SendOK; B
// connects with its device key, subscribes and receives it; B sends a
// receipt envelope to A the same way; A receives it. Every connection is
// new, made through the endpoint's transport, so each trial shows what a
// user opening the app would meet. The envelopes are random bytes of a
// text message's size, opaque to the relay as sealed envelopes are. It is
// a monitor.Probe; trials of one TextProbe do not overlap.
type TextProbe struct {
	cfg    TextConfig
	dialer *relayclient.Dialer
	now    func() time.Time

	mu  sync.Mutex // mu serialises trials and protects acc
	acc *accounts
}

var _ monitor.Probe = (*TextProbe)(nil)

// accounts are a cell's two probe accounts, kept in Dir/accounts.json.
type accounts struct {
	A, B       account
	Registered bool // both tokens are set on the relay
}

type account struct {
	Key   [32]byte // the device's private key
	Token [32]byte // its delivery token
	kp    channel.KeyPair
}

func (a *account) mailbox() [16]byte { return wire.MailboxID(a.kp.Public) }

// NewTextProbe returns a probe for cfg.
func NewTextProbe(cfg TextConfig) (*TextProbe, error) {
	reg, err := common{cfg.Dir, cfg.Relay, cfg.Transport, &cfg.NetDialer, &cfg.Now, &cfg.Rand, &cfg.Size}.fill("text probe")
	if err != nil {
		return nil, err
	}
	cfg.Size = min(cfg.Size, wire.MaxEnvelope)
	cfg.DialTimeout = orDuration(cfg.DialTimeout, 5*time.Second)
	cfg.StepTimeout = orDuration(cfg.StepTimeout, 30*time.Second)
	// The client's watcher closes a connection that looks blocked or
	// throttled, to move to another transport; the monitor measures the
	// one transport it probes, so only its own timeouts end a step.
	watch := fallback.WatchConfig{MinStall: cfg.StepTimeout, MaxStall: cfg.StepTimeout, ThrottleRate: 1, ThrottleFor: cfg.StepTimeout}
	d := &relayclient.Dialer{Transports: reg, DialTimeout: cfg.DialTimeout, RequestTimeout: cfg.StepTimeout, Rand: cfg.Rand, Logger: cfg.Logger, Watch: watch}
	return &TextProbe{cfg: cfg, dialer: d, now: cfg.Now}, nil
}

func orDuration(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}

// Probe runs one trial.
func (p *TextProbe) Probe(ctx context.Context) monitor.Trial {
	p.mu.Lock()
	defer p.mu.Unlock()
	tr := &textTrial{p: p, trialRun: newTrialRun(ctx, p.now)}
	tr.run()
	return tr.finish()
}

// textTrial is one trial of a TextProbe under way.
type textTrial struct {
	trialRun
	p *TextProbe
}

// registered loads the probe's accounts and registers them with the
// relay on their first trial; false means the trial has failed.
func (tr *textTrial) registered() (*accounts, bool) {
	acc, err := tr.p.loadAccounts()
	if err != nil {
		tr.t.Fail(monitor.StageLocal, err)
		return nil, false
	}
	if !acc.Registered {
		if !tr.step("register", func() error { return tr.register(acc) }) {
			return nil, false
		}
		acc.Registered = true
		if err := tr.p.saveAccounts(acc); err != nil {
			tr.t.Fail(monitor.StageLocal, err)
			return nil, false
		}
	}
	return acc, true
}

func (tr *textTrial) run() {
	p := tr.p
	acc, ok := tr.registered()
	if !ok {
		return
	}
	id, env, err := tr.envelope(p.cfg.Size)
	if err != nil {
		tr.t.Fail(monitor.StageLocal, err)
		return
	}
	if !tr.step("send", func() error { return tr.send(&acc.B, id, env) }) {
		return
	}
	if !tr.step("deliver", func() error { return tr.receive(&acc.B, id) }) {
		return
	}
	tr.t.Transfer = tr.rec.transfer()
	rid, receipt, err := tr.envelope(96)
	if err != nil {
		tr.t.Fail(monitor.StageLocal, err)
		return
	}
	copy(receipt, id[:]) // a receipt names the message it acknowledges
	if !tr.step("receipt_send", func() error { return tr.send(&acc.A, rid, receipt) }) {
		return
	}
	tr.step("receipt", func() error { return tr.receive(&acc.A, rid) })
}

// envelope returns a new message id and n random bytes.
func (tr *textTrial) envelope(n int) ([16]byte, []byte, error) {
	var id [16]byte
	b := make([]byte, n)
	if _, err := io.ReadFull(tr.p.cfg.Rand, id[:]); err != nil {
		return id, nil, fmt.Errorf("make probe envelope: %w", err)
	}
	if _, err := io.ReadFull(tr.p.cfg.Rand, b); err != nil {
		return id, nil, fmt.Errorf("make probe envelope: %w", err)
	}
	return id, b, nil
}

// step runs f as the trial's step called name and reports whether it
// succeeded; on failure it marks the trial failed where the recorder says.
func (tr *textTrial) step(name string, f func() error) bool {
	return step(&tr.t, tr.p.now, name, f, tr.fail)
}

// errNotDelivered: every connection worked but the envelope did not come.
var errNotDelivered = errors.New("the envelope did not arrive")

func (tr *textTrial) fail(err error) {
	var re *relayError
	switch {
	case errors.As(err, &re) && re.code == wire.CodeDenied:
		tr.t.FailWith(monitor.StageAuth, monitor.FailureDenied, "the relay refused the probe account: "+re.Error())
		tr.forget()
	case errors.As(err, &re):
		tr.t.FailWith(monitor.StageDeliver, monitor.FailureRelay, re.Error())
	case errors.Is(err, errNotDelivered):
		tr.t.FailWith(monitor.StageDeliver, monitor.FailureNotDelivered, err.Error())
	default:
		if d, network := tr.rec.diagnose(err); network {
			tr.t.FailWith(d.stage, d.failure, d.detail)
			return
		}
		tr.t.Fail(monitor.StageHandshake, err)
	}
}

// forget marks the accounts unregistered: the relay lost them; the next
// trial registers them again.
func (tr *textTrial) forget() {
	if tr.p.acc != nil {
		tr.p.acc.Registered = false
		tr.p.saveAccounts(tr.p.acc)
	}
}

// loadAccounts returns the probe accounts, making them on first use.
func (p *TextProbe) loadAccounts() (*accounts, error) {
	if p.acc != nil {
		return p.acc, nil
	}
	path := filepath.Join(p.cfg.Dir, "accounts.json")
	acc := new(accounts)
	b, err := os.ReadFile(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		for _, a := range []*account{&acc.A, &acc.B} {
			if _, err := io.ReadFull(p.cfg.Rand, a.Key[:]); err != nil {
				return nil, fmt.Errorf("make probe account: %w", err)
			}
			if _, err := io.ReadFull(p.cfg.Rand, a.Token[:]); err != nil {
				return nil, fmt.Errorf("make probe account: %w", err)
			}
		}
	case err != nil:
		return nil, fmt.Errorf("read probe accounts: %w", err)
	default:
		if err := json.Unmarshal(b, acc); err != nil {
			return nil, fmt.Errorf("read probe accounts %s: %w", path, err)
		}
	}
	for _, a := range []*account{&acc.A, &acc.B} {
		if a.kp, err = channel.NewKeyPair(a.Key); err != nil {
			return nil, fmt.Errorf("read probe accounts: %w", err)
		}
	}
	if err := p.saveAccounts(acc); err != nil {
		return nil, err
	}
	p.acc = acc
	return acc, nil
}

func (p *TextProbe) saveAccounts(acc *accounts) error {
	b, err := json.Marshal(acc)
	if err != nil {
		return fmt.Errorf("save probe accounts: %w", err)
	}
	if err := os.MkdirAll(p.cfg.Dir, 0o700); err != nil {
		return fmt.Errorf("save probe accounts: %w", err)
	}
	tmp := filepath.Join(p.cfg.Dir, "accounts.json.tmp")
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return fmt.Errorf("save probe accounts: %w", err)
	}
	if err := os.Rename(tmp, filepath.Join(p.cfg.Dir, "accounts.json")); err != nil {
		return fmt.Errorf("save probe accounts: %w", err)
	}
	return nil
}
