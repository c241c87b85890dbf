package probe

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/ferry-im/ferry/internal/relayclient"
	"github.com/ferry-im/ferry/link"
	"github.com/ferry-im/ferry/monitor"
	"github.com/ferry-im/ferry/transport"
	"github.com/ferry-im/ferry/wire"
)

// DefaultMediaSizes are the attachments a media trial moves: 100 KB, 1 MB
// and 10 MB (decimal), a photo's, a voice note's and a video's sizes.
var DefaultMediaSizes = []int64{100_000, 1_000_000, 10_000_000}

// MediaConfig configures a MediaProbe. Dir, Relay and Transport are
// required; the zero value of every other field works.
type MediaConfig struct {
	// Dir holds the cell's probe accounts (accounts.json) and its blobs'
	// keys (media.json), both mode 0600.
	Dir string
	// Relay is the relay, with the one endpoint to probe.
	Relay link.Relay
	// Transport is that endpoint's transport.
	Transport Transport
	// NetDialer makes the raw connections (the path the trial takes). If
	// nil, a net.Dialer is used.
	NetDialer transport.NetDialer
	// Get selects the direction: false uploads the attachments
	// (monitor.FeatureMediaPut), true downloads them
	// (monitor.FeatureMediaGet).
	Get bool
	// Sizes are the attachments' sizes in bytes, moved in this order in
	// every trial. If empty, DefaultMediaSizes.
	Sizes []int64
	// Budget bounds the transfers of one trial (a throttled 10 MB upload
	// would take minutes). A size that would not finish within what is
	// left of it at the rate measured so far is skipped, with the sizes
	// after it; a transfer that the budget stops anyway leaves the rate
	// to the sizes before it (the trial fails if there is none). A
	// transfer that stops moving fails after StepTimeout. Default 80 s,
	// within the monitor's 2-minute trial timeout.
	Budget time.Duration
	// DialTimeout bounds a dial and the channel handshake; StepTimeout
	// each request and each answer of a transfer. Defaults 5 s and 30 s.
	DialTimeout, StepTimeout time.Duration
	// Rand makes the keys and the attachments' bytes. If nil, crypto/rand.
	Rand io.Reader
	// Now returns the current time. If nil, time.Now is used.
	Now func() time.Time
	// Logger receives the channel's debug events. If nil, nothing is
	// logged.
	Logger *slog.Logger
}

// MediaProbe moves attachments as a user's client does, with the client's
// own relay-protocol package (internal/relayclient, docs/protocol.md
// section 6.13), over one endpoint of a relay: for media_put it creates
// (emptying it first) one blob per size, charged to its probe account's
// mailbox, and uploads random bytes (sealed attachments look random) into
// it, checking the relay's digest; for media_get it downloads one complete
// blob per size, uploaded once beforehand (and again when the relay lost
// it), checking the bytes' digest. Every trial opens a new connection
// through the endpoint's transport. The rate of the largest transfer
// (its second half, as for text) is the trial's. Its blobs are reused from
// trial to trial, so the relay keeps one per size and cell. It is a
// monitor.Probe; trials of one MediaProbe do not overlap.
type MediaProbe struct {
	text *TextProbe // the accounts, the dialer, the registration
	cfg  MediaConfig
}

var _ monitor.Probe = (*MediaProbe)(nil)

// NewMediaProbe returns a probe for cfg.
func NewMediaProbe(cfg MediaConfig) (*MediaProbe, error) {
	if len(cfg.Sizes) == 0 {
		cfg.Sizes = DefaultMediaSizes
	}
	for _, s := range cfg.Sizes {
		if s <= 0 || s > wire.MaxBlobSize {
			return nil, fmt.Errorf("new media probe: size %d: give sizes of 1 byte to 1 TiB", s)
		}
	}
	cfg.Budget = orDuration(cfg.Budget, 80*time.Second)
	text, err := NewTextProbe(TextConfig{
		Dir: cfg.Dir, Relay: cfg.Relay, Transport: cfg.Transport, NetDialer: cfg.NetDialer,
		DialTimeout: cfg.DialTimeout, StepTimeout: cfg.StepTimeout, Rand: cfg.Rand, Now: cfg.Now, Logger: cfg.Logger,
	})
	if err != nil {
		return nil, fmt.Errorf("new media probe: %w", err)
	}
	return &MediaProbe{text: text, cfg: cfg}, nil
}

// FormatSize formats a size in bytes as the trials' steps name it:
// 100KB, 1MB, 10MB, 1500B.
func FormatSize(n int64) string {
	switch {
	case n >= 1_000_000 && n%1_000_000 == 0:
		return strconv.FormatInt(n/1_000_000, 10) + "MB"
	case n >= 1000 && n%1000 == 0:
		return strconv.FormatInt(n/1000, 10) + "KB"
	}
	return strconv.FormatInt(n, 10) + "B"
}

// ParseSize parses a size as FormatSize writes it (KB and MB are decimal;
// KiB and MiB binary).
func ParseSize(s string) (int64, error) {
	t := strings.ToUpper(strings.TrimSpace(s))
	mult := int64(1)
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"KIB", 1 << 10}, {"MIB", 1 << 20}, {"GIB", 1 << 30}, {"KB", 1000}, {"MB", 1000_000}, {"GB", 1000_000_000}, {"B", 1}} {
		if strings.HasSuffix(t, u.suffix) {
			t, mult = strings.TrimSpace(strings.TrimSuffix(t, u.suffix)), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil || n <= 0 || n > wire.MaxBlobSize/mult {
		return 0, fmt.Errorf("attachment size %q: give a size such as 100KB, 1MB or 10MB", s)
	}
	return n * mult, nil
}

// mediaState is a cell's blobs, kept in Dir/media.json: per size, the
// write key of its blob, and for downloads the digest of the complete
// blob (empty until it is uploaded).
type mediaState struct {
	Blobs map[string]mediaBlob `json:"blobs"`
}

type mediaBlob struct {
	Key    [32]byte `json:"key"`
	Digest []byte   `json:"digest,omitempty"`
}

// Probe runs one trial.
func (p *MediaProbe) Probe(ctx context.Context) monitor.Trial {
	p.text.mu.Lock()
	defer p.text.mu.Unlock()
	tr := &mediaTrial{textTrial: textTrial{p: p.text, trialRun: newTrialRun(ctx, p.text.now)}, mp: p}
	tr.run()
	return tr.finish()
}

// mediaTrial is one trial of a MediaProbe under way.
type mediaTrial struct {
	textTrial
	mp        *MediaProbe
	stage     monitor.Stage // the stage of the transfer under way
	best      monitor.Transfer
	lastErr   error // of the latest transfer
	connected bool  // the trial's connection is up
}

func (tr *mediaTrial) run() {
	p, cfg := tr.p, tr.mp.cfg
	tr.stage = monitor.StageMediaPut
	if cfg.Get {
		tr.stage = monitor.StageMediaGet
	}
	acc, ok := tr.registered()
	if !ok {
		return
	}
	st, err := tr.mp.loadState()
	if err != nil {
		tr.t.Fail(monitor.StageLocal, err)
		return
	}
	var c *relayclient.Conn
	if !tr.step("connect", func() error {
		var err error
		c, err = tr.dial(acc.B.kp)
		return err
	}) {
		return
	}
	defer c.Close()
	tr.connected = true
	budget, cancel := context.WithTimeout(tr.ctx, cfg.Budget)
	defer cancel()
	for _, size := range cfg.Sizes {
		name := FormatSize(size)
		b, ok := st.Blobs[name]
		if !ok {
			if _, err := io.ReadFull(p.cfg.Rand, b.Key[:]); err != nil {
				tr.t.Fail(monitor.StageLocal, fmt.Errorf("make blob key: %w", err))
				return
			}
		}
		if !tr.fits(budget, size) {
			break
		}
		var done bool
		if cfg.Get {
			done = tr.get(budget, c, &acc.B, &b, size, name)
		} else {
			done = tr.put(budget, c, &acc.B, &b, size, name)
		}
		st.Blobs[name] = b
		if err := tr.mp.saveState(st); err != nil {
			tr.t.Fail(monitor.StageLocal, err)
			return
		}
		if !done {
			break
		}
	}
	if tr.t.OK {
		tr.t.Transfer = tr.best
	}
}

// put uploads size random bytes into blob b and checks the relay's
// digest. It reports whether the next size may follow.
func (tr *mediaTrial) put(budget context.Context, c *relayclient.Conn, owner *account, b *mediaBlob, size int64, name string) bool {
	data := make([]byte, size)
	if _, err := io.ReadFull(tr.p.cfg.Rand, data); err != nil {
		tr.t.Fail(monitor.StageLocal, fmt.Errorf("make attachment: %w", err))
		return false
	}
	b.Digest = nil
	return tr.transfer(budget, "put "+name, func(ctx context.Context, progress func(int64)) error {
		return tr.upload(ctx, c, owner, b, data, progress)
	})
}

// upload creates (empties) blob b and writes data into it.
func (tr *mediaTrial) upload(ctx context.Context, c *relayclient.Conn, owner *account, b *mediaBlob, data []byte, progress func(int64)) error {
	rctx, cancel := context.WithTimeout(ctx, tr.p.cfg.StepTimeout)
	st, err := c.BlobCreate(rctx, b.Key, owner.mailbox(), owner.Token, int64(len(data)), true)
	cancel()
	if err != nil {
		return refusal(err)
	}
	st, err = c.Upload(ctx, b.Key, bytes.NewReader(data), int64(len(data)), st, progress)
	if err != nil {
		return refusal(err)
	}
	sum := sha256.Sum256(data)
	if !st.Complete || !bytes.Equal(st.Digest[:], sum[:]) {
		return errBadDigest
	}
	b.Digest = sum[:]
	return nil
}

// errBadDigest: the relay's digest, or the downloaded bytes', is not the
// attachment's.
var errBadDigest = errors.New("the attachment's digest does not match")

// get downloads blob b (uploading it first when it is not there) and
// checks its digest. It reports whether the next size may follow.
func (tr *mediaTrial) get(budget context.Context, c *relayclient.Conn, owner *account, b *mediaBlob, size int64, name string) bool {
	if len(b.Digest) == 0 {
		if !tr.setup(budget, c, owner, b, size, name) {
			return false
		}
	}
	buf := &memoryAt{b: make([]byte, size)}
	download := func(ctx context.Context, progress func(int64)) error {
		if err := c.Download(ctx, wire.BlobID(b.Key), buf, 0, size, progress); err != nil {
			return refusal(err)
		}
		if sum := sha256.Sum256(buf.b); !bytes.Equal(sum[:], b.Digest) {
			return errBadDigest
		}
		return nil
	}
	var re *relayError
	done := tr.transfer(budget, "get "+name, download)
	if !done && tr.t.Stage == tr.stage && tr.t.Failure == monitor.FailureRelay && errors.As(tr.lastErr, &re) && re.code == wire.CodeNotFound {
		// The relay lost the blob (or it expired): upload it again and
		// measure the download once more.
		tr.t.OK, tr.t.Stage, tr.t.Failure, tr.t.Detail = true, "", "", ""
		b.Digest = nil
		if !tr.setup(budget, c, owner, b, size, name) {
			return false
		}
		done = tr.transfer(budget, "get "+name, download)
	}
	return done
}

// setup uploads blob b for later downloads; a failure is the trial's, at
// stage media_put.
func (tr *mediaTrial) setup(budget context.Context, c *relayclient.Conn, owner *account, b *mediaBlob, size int64, name string) bool {
	stage := tr.stage
	tr.stage = monitor.StageMediaPut
	defer func() { tr.stage = stage }()
	data := make([]byte, size)
	if _, err := io.ReadFull(tr.p.cfg.Rand, data); err != nil {
		tr.t.Fail(monitor.StageLocal, fmt.Errorf("make attachment: %w", err))
		return false
	}
	return tr.step("upload "+name, func() error {
		return tr.upload(budget, c, owner, b, data, nil)
	})
}

// transfer runs one transfer as a step, measuring its progress, and
// reports whether the next size may follow: false when it failed (the
// trial failed) or the budget ran out (the trial counts what it
// measured).
func (tr *mediaTrial) transfer(budget context.Context, name string, f func(ctx context.Context, progress func(int64)) error) bool {
	marks := &connStats{now: tr.now}
	var moved int64
	progress := func(n int64) {
		if n > moved {
			marks.read(int(n-moved), nil)
			moved = n
		}
	}
	cut := false
	start := tr.now()
	ok := tr.step(name, func() error {
		err := f(budget, progress)
		if err != nil && budget.Err() != nil && tr.ctx.Err() == nil && tr.best.Measured() {
			cut = true // the budget ran out, and an earlier size gave a rate
			return nil
		}
		if err != nil && budget.Err() != nil && tr.ctx.Err() == nil {
			err = fmt.Errorf("%s did not finish within the trial's budget (%v): %w", name, tr.mp.cfg.Budget, err)
		}
		tr.lastErr = err
		return err
	})
	if !ok {
		return false
	}
	if cut {
		tr.t.Detail = fmt.Sprintf("%s stopped at %d bytes when the trial's budget (%v) ran out; the rate is the sizes' before it", name, moved, tr.mp.cfg.Budget)
		tr.t.Steps[len(tr.t.Steps)-1].Name += " (cut by budget)"
		return false
	}
	// A download's rate is that of its second half, as for text. An
	// upload's is the whole transfer's: the relay's answers, which say
	// what it has stored, come in clumps behind the pieces in flight, so
	// that the second half's can read several times too fast.
	m := marks.sustained()
	if !tr.mp.cfg.Get {
		m = monitor.Transfer{Bytes: moved, Time: tr.now().Sub(start)}
	}
	if m.Bytes > tr.best.Bytes && strings.HasPrefix(name, tr.prefix()) {
		tr.best = m
	}
	return true
}

// fits reports whether a transfer of size bytes can finish within what
// is left of the budget at the rate measured so far (always, before a
// rate is known); if not, it notes the sizes skipped.
func (tr *mediaTrial) fits(budget context.Context, size int64) bool {
	r := tr.best.Rate()
	deadline, _ := budget.Deadline()
	if r <= 0 || float64(size)/r < deadline.Sub(tr.now()).Seconds() {
		return true
	}
	tr.t.Detail = fmt.Sprintf("%s and larger skipped: at %s it would not finish within the trial's budget (%v)", FormatSize(size), monitor.FormatRate(r), tr.mp.cfg.Budget)
	return false
}

// prefix is the name of the measured transfers' steps.
func (tr *mediaTrial) prefix() string {
	if tr.mp.cfg.Get {
		return "get "
	}
	return "put "
}

// step runs f as the trial's step called name, failing the trial where
// the recorder says, at the transfer's stage.
func (tr *mediaTrial) step(name string, f func() error) bool {
	return step(&tr.t, tr.p.now, name, f, tr.fail)
}

func (tr *mediaTrial) fail(err error) {
	var re *relayError
	switch {
	case errors.As(err, &re) && re.code == wire.CodeDenied:
		tr.t.FailWith(monitor.StageAuth, monitor.FailureDenied, "the relay refused the probe account: "+re.Error())
		tr.forget()
	case errors.As(err, &re):
		tr.t.FailWith(tr.stage, monitor.FailureRelay, re.Error())
	case errors.Is(err, errBadDigest):
		tr.t.FailWith(tr.stage, monitor.FailureBadResponse, err.Error())
	default:
		if d, network := tr.rec.diagnose(err); network {
			if d.stage == monitor.StageDeliver {
				d.stage = tr.stage // the channel was up: the transfer failed
			}
			tr.t.FailWith(d.stage, d.failure, d.detail)
			return
		}
		if tr.connected && (errors.Is(err, context.DeadlineExceeded) || errors.Is(err, relayclient.ErrUnreachable) && strings.Contains(err.Error(), "no answer")) {
			// No connection failed, but the relay's answers stopped
			// coming: the bytes vanish (a drop).
			tr.t.FailWith(tr.stage, monitor.FailureTimeout, err.Error())
			return
		}
		if tr.connected {
			tr.t.Fail(tr.stage, err)
			return
		}
		tr.t.Fail(monitor.StageHandshake, err)
	}
}

// loadState returns the cell's blobs.
func (p *MediaProbe) loadState() (*mediaState, error) {
	st := &mediaState{Blobs: map[string]mediaBlob{}}
	b, err := os.ReadFile(filepath.Join(p.cfg.Dir, "media.json"))
	switch {
	case errors.Is(err, os.ErrNotExist):
		return st, nil
	case err != nil:
		return nil, fmt.Errorf("read probe blobs: %w", err)
	}
	if err := json.Unmarshal(b, st); err != nil {
		return nil, fmt.Errorf("read probe blobs: %w", err)
	}
	if st.Blobs == nil {
		st.Blobs = map[string]mediaBlob{}
	}
	return st, nil
}

func (p *MediaProbe) saveState(st *mediaState) error {
	b, err := json.Marshal(st)
	if err != nil {
		return fmt.Errorf("save probe blobs: %w", err)
	}
	tmp := filepath.Join(p.cfg.Dir, "media.json.tmp")
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return fmt.Errorf("save probe blobs: %w", err)
	}
	if err := os.Rename(tmp, filepath.Join(p.cfg.Dir, "media.json")); err != nil {
		return fmt.Errorf("save probe blobs: %w", err)
	}
	return nil
}

// memoryAt is an io.WriterAt over a byte slice of the download's size.
type memoryAt struct{ b []byte }

func (m *memoryAt) WriteAt(p []byte, off int64) (int, error) {
	if off < 0 || off+int64(len(p)) > int64(len(m.b)) {
		return 0, errors.New("write past the attachment's end")
	}
	return copy(m.b[off:], p), nil
}
