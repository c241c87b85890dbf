// Package attack replays, against a real ferry-relay process, the attacks
// on a relay found in issue 13 (memory held by half-sent frames, floods of
// Subscribes, Acks and stalled handshakes, a disk filled by one sender, a
// drained prekey pool, an old invite's token), and measures, while each
// runs, what an honest client gets: the round trip of a send to a
// subscribed recipient (p50, p99, failures), the relay's peak resident
// memory, and whether every envelope the relay acknowledged to the honest
// sender reached the recipient.
//
// Its tests run every attack at a small scale (seconds each, in CI);
// its benchmarks run them at full scale and report the figures
// (docs/benchmarks.md). It is test support, not a tool for attacking
// other people's relays: it dials loopback addresses only.
package attack

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/ferry-im/ferry/channel"
	"github.com/ferry-im/ferry/link"
	"github.com/ferry-im/ferry/wire"
)

// Scale sizes an attack.
type Scale struct {
	// Conns is how many connections the attack uses (each attack says
	// what they do).
	Conns int
	// Addrs is how many source addresses (127.1.x.y) they come from.
	Addrs int
	// Bytes is how much data an attack that writes data writes at most.
	Bytes int64
	// Duration is how long the honest client measures while the attack
	// runs, once it is set up.
	Duration time.Duration
}

// Small runs in seconds (CI); Full is the scale of issue 13's findings.
var (
	Small = Scale{Conns: 300, Addrs: 20, Bytes: 96 << 20, Duration: 3 * time.Second}
	Full  = Scale{Conns: 3000, Addrs: 200, Bytes: 1 << 30, Duration: 20 * time.Second}
)

// Attack is one attack. Run sets it up against the relay, calls ready,
// and keeps it going until ctx ends; then it releases what it holds and
// returns. An error means the attack could not run, not that the relay
// resisted it.
type Attack struct {
	Name string
	// Relay, if set, says how the relay for this attack must be started.
	Relay func(RelayConfig, Scale) RelayConfig
	Run   func(ctx context.Context, e *Env, s Scale, ready func()) error
	// Check, if set, checks the relay after the attack (e.g. that the
	// prekeys were not drained) and returns what is wrong.
	Check func(ctx context.Context, e *Env) error
}

// Env is what an attack runs against: the relay and the honest users'
// mailbox, which some attacks target.
type Env struct {
	Relay *Relay
	// Victim is the honest recipient: its key, mailbox and the token of
	// an old invite an attacker got hold of (the honest sender holds its
	// own token).
	Victim      channel.KeyPair
	VictimBox   [16]byte
	InviteToken [32]byte
	// Prekeys is how many one-time prekeys of each kind the victim
	// uploaded before the attack.
	Prekeys int

	// mu protects problems.
	mu       sync.Mutex
	problems []error
}

// Problemf records something an attack saw the relay do wrong; Measure
// reports it (Report.CheckErr).
func (e *Env) Problemf(format string, args ...any) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.problems = append(e.problems, fmt.Errorf(format, args...))
}

// Report is what the honest client saw during one attack.
type Report struct {
	Attack string
	// RoundTrips is how many sends reached the recipient; Failed how many
	// did not within 10 s (or were refused: see Refused).
	RoundTrips, Failed int
	// Refused counts sends the relay refused with a temporary code (the
	// disk budget): retried by a real client, not lost.
	Refused int
	// FirstFailure is why the first failed round trip failed.
	FirstFailure error
	P50, P99     time.Duration
	Max          time.Duration
	// PeakRSS is the relay's highest resident memory during the attack.
	PeakRSS int64
	// RelayCPU is the share of one core the relay used while the honest
	// client measured (the attacker runs in the measuring process, on
	// the same machine).
	RelayCPU float64
	// Lost counts envelopes the relay acknowledged to the honest sender
	// that never reached the recipient.
	Lost int
	// CheckErr is what the attack's Check found wrong, if anything.
	CheckErr error
}

func (r Report) String() string {
	return fmt.Sprintf("%s: %d round trips, p50 %v, p99 %v, max %v, %d failed, %d refused, %d lost, relay peak RSS %d MiB, relay CPU %.0f%%",
		r.Attack, r.RoundTrips, r.P50.Round(time.Microsecond), r.P99.Round(time.Microsecond), r.Max.Round(time.Microsecond),
		r.Failed, r.Refused, r.Lost, r.PeakRSS>>20, 100*r.RelayCPU)
}

// Measure runs a against the relay of e at scale s while an honest client,
// in a process of its own, sends to e's victim every 20 ms (every tenth
// time from a new connection, timed from the dial), and reports what it
// saw.
func Measure(ctx context.Context, e *Env, a Attack, s Scale) (Report, error) {
	rep := Report{Attack: a.Name}
	h, err := startHonest(ctx, e, s.Duration)
	if err != nil {
		return rep, err
	}
	defer h.kill()
	actx, stop := context.WithCancel(ctx)
	defer stop()
	ready := make(chan struct{})
	done := make(chan error, 1)
	go func() { done <- a.Run(actx, e, s, sync.OnceFunc(func() { close(ready) })) }()
	select {
	case <-ready:
	case err := <-done:
		return rep, fmt.Errorf("attack %s: %w", a.Name, err)
	case <-ctx.Done():
		return rep, ctx.Err()
	}
	e.Relay.ResetPeak()
	cpu0, t0 := e.Relay.CPU(), time.Now()
	if err := h.say("go"); err != nil {
		return rep, fmt.Errorf("honest client: %w", err)
	}
	// Each round trip gives up after 10 s; the child ends its last one
	// well within a minute past the duration.
	if err := h.expect(ctx, "measured", s.Duration+time.Minute); err != nil {
		return rep, err
	}
	rep.PeakRSS = e.Relay.PeakRSS()
	rep.RelayCPU = float64(e.Relay.CPU()-cpu0) / float64(time.Since(t0))
	stop()
	if err := <-done; err != nil {
		return rep, fmt.Errorf("attack %s: %w", a.Name, err)
	}
	res, err := h.result()
	if err != nil {
		return rep, err
	}
	rep.RoundTrips, rep.Failed, rep.Refused, rep.Lost = res.RoundTrips, res.Failed, res.Refused, res.Lost
	rep.P50, rep.P99, rep.Max = res.P50, res.P99, res.Max
	if res.FirstFailure != "" {
		rep.FirstFailure = errors.New(res.FirstFailure)
	}
	e.mu.Lock()
	errs := e.problems
	e.problems = nil
	e.mu.Unlock()
	if a.Check != nil {
		errs = append(errs, a.Check(ctx, e))
	}
	rep.CheckErr = errors.Join(errs...)
	return rep, nil
}

// NewEnv makes the victim's mailbox on r: a token for the honest sender
// and one for an invite, and n one-time prekeys of each kind.
func NewEnv(ctx context.Context, r *Relay, n int) (*Env, error) {
	e := &Env{Relay: r, Prekeys: n}
	var err error
	if e.Victim, err = channel.GenerateKeyPair(rand.Reader); err != nil {
		return nil, err
	}
	e.VictimBox = channel.MailboxID(e.Victim.Public)
	rand.Read(e.InviteToken[:])
	c, err := connect(ctx, r.Link, e.Victim, net.IPv4(127, 0, 0, 1))
	if err != nil {
		return nil, err
	}
	defer c.Close()
	var keys []wire.Prekey
	for i := range n {
		keys = append(keys, wire.Prekey{ID: uint32(i + 1), Data: []byte("one-time prekey")})
	}
	for i, m := range []wire.Message{
		wire.SetToken{ReqID: 1, Token: honestToken},
		wire.AddToken{ReqID: 2, Token: e.InviteToken},
		wire.PutPrekeys{ReqID: 3, Signed: []byte("signed prekey"), OneTime: keys, KEM: keys, LastResort: []byte("last resort")},
	} {
		if _, err := request[wire.OK](ctx, c, m); err != nil {
			return nil, fmt.Errorf("set up the victim (request %d): %w", i+1, err)
		}
	}
	return e, nil
}

// honestToken is the token the honest sender holds for the victim.
var honestToken = [32]byte{'h', 'o', 'n', 'e', 's', 't'}

// connect dials the relay from ip and runs the handshake with key.
func connect(ctx context.Context, r link.Relay, key channel.KeyPair, ip net.IP) (*channel.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	nc, err := dialFrom(ctx, r, ip)
	if err != nil {
		return nil, err
	}
	return channel.Client(ctx, nc, key, r.Key)
}

// request sends m and returns the next frame if it is a T.
func request[T wire.Message](ctx context.Context, c *channel.Conn, m wire.Message) (T, error) {
	var zero T
	if err := send(ctx, c, m); err != nil {
		return zero, err
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	f, err := c.Recv(ctx)
	if err != nil {
		return zero, err
	}
	got, err := wire.Decode(f)
	if err != nil {
		return zero, err
	}
	v, ok := got.(T)
	if !ok {
		return zero, fmt.Errorf("got %T %+v, want %T", got, got, zero)
	}
	return v, nil
}

func send(ctx context.Context, c *channel.Conn, m wire.Message) error {
	f, err := wire.NewFrame(m)
	if err != nil {
		return err
	}
	return c.Send(ctx, f)
}

// Run starts a relay for a (from cfg: its binary, data directory, memory
// budget and more flags; a.Relay may change it), sets up the victim,
// measures a at scale s and stops the relay. The relay's stderr is
// returned with the report.
func Run(ctx context.Context, cfg RelayConfig, a Attack, s Scale) (Report, string, error) {
	if a.Relay != nil {
		cfg = a.Relay(cfg, s)
	}
	r, err := StartRelay(cfg)
	if err != nil {
		return Report{Attack: a.Name}, "", err
	}
	rep, err := func() (Report, error) {
		e, err := NewEnv(ctx, r, 100)
		if err != nil {
			return Report{Attack: a.Name}, err
		}
		return Measure(ctx, e, a, s)
	}()
	alive := r.Alive()
	if serr := r.Stop(); err == nil && (!alive || serr != nil) {
		err = fmt.Errorf("the relay did not survive %s: %v", a.Name, serr)
	}
	return rep, r.Stderr(), err
}
