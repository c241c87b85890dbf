package censor

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"syscall"
	"time"
)

// How a probe's connection ended, as Reaction.Close.
const (
	CloseFIN     = "FIN"     // the server closed cleanly (read returned EOF)
	CloseRST     = "RST"     // the server reset the connection (ECONNRESET or EPIPE)
	CloseOpen    = "open"    // still open when ReadTimeout ran out; the prober closed it
	CloseTimeout = "timeout" // the connection could not be set up in time (e.g. SYNs dropped)
	CloseRefused = "refused" // the dial was refused (RST to the SYN)
	CloseError   = "error"   // any other failure
)

// The probes of Alice et al., "How China Detects and Blocks Shadowsocks"
// (IMC 2020), section 4: replays of a client's real first packet, as is or
// with bytes changed, and random probes of these lengths.
var (
	// probeRandomLengths are the random probes' lengths: 7-8, 11-12, 16-17,
	// 22-23, 32-34, 40-42, 48-50 and 221 bytes.
	probeRandomLengths = []int{7, 8, 11, 12, 16, 17, 22, 23, 32, 33, 34, 40, 41, 42, 48, 49, 50, 221}
	// probeReplayChanges are the replays: the offsets changed in each.
	probeReplayChanges = []struct {
		name    string
		offsets []int
	}{
		{"replay", nil},
		{"replay-b0", []int{0}},
		{"replay-b0-7,62-63", []int{0, 1, 2, 3, 4, 5, 6, 7, 62, 63}},
		{"replay-b16", []int{16}},
	}
)

// Prober is an active prober after the Great Firewall's (docs/gfw.md
// section 3): it sends a server replays of a client's first packet, soon
// and later, and random probes, and records how the server reacts to each.
// A server that reacts unlike a common web server gives itself away; see
// Differ. The zero Prober is ready to use.
type Prober struct {
	// Dial opens the probes' connections. If nil, a net.Dialer with a
	// timeout of ReadTimeout is used.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// Rand supplies the random probes and changed bytes. If nil,
	// crypto/rand.Reader is used.
	Rand io.Reader
	// Now measures Reaction.After. If nil, time.Now is used. Read
	// deadlines always use the connection's own (real) clock.
	Now func() time.Time
	// Sleep waits d or until ctx is done, returning ctx.Err() then. Tests
	// inject it so that "later" replays do not take hours. If nil, a
	// timer is used.
	Sleep func(ctx context.Context, d time.Duration) error
	// ReadTimeout is how long a probe waits for the server to close after
	// sending; a server still open then is recorded as CloseOpen. If zero,
	// 10 s is used. (The GFW's probers waited longer; a server that closes
	// after more than ReadTimeout looks the same as one that never does.)
	ReadTimeout time.Duration
	// Soon is the delay before the first replays and the random probes.
	// If zero, 280 ms is used: the fastest replay Alice et al. saw.
	Soon time.Duration
	// Later is the delay, from the start of Probe, of the second round of
	// replays. If zero, one hour is used ("others hours later"); if
	// negative, there is no second round.
	Later time.Duration
	// Concurrency bounds the probes in flight. If zero, 4 is used.
	Concurrency int
	// MaxRead bounds the bytes read from the server per probe; a server
	// that sends more is recorded as CloseOpen. If zero, 64 KiB is used.
	MaxRead int
	// Logger receives one debug line per reaction. If nil, nothing is
	// logged. Probe payloads are never logged.
	Logger *slog.Logger
}

// Reaction is how a server reacted to one probe.
type Reaction struct {
	// Probe names the probe: "replay", "replay-b0", "replay-b0-7,62-63",
	// "replay-b16" (each also with "-later"), "random-N" for N bytes.
	Probe string
	// Sent is the bytes written (less than the probe when the server
	// reset the connection early); Received the bytes the server sent back.
	Sent, Received int
	// Head is the first bytes received, up to 64.
	Head []byte
	// Close is one of CloseFIN, CloseRST, CloseOpen, CloseTimeout,
	// CloseRefused, CloseError.
	Close string
	// After is the time from the connection's setup to its end.
	After time.Duration
}

// Report is a server's reactions to a set of probes, in a fixed order.
type Report struct {
	Addr      string
	Reactions []Reaction
}

// headLen is the length of Reaction.Head.
const headLen = 64

func (p *Prober) readTimeout() time.Duration {
	if p.ReadTimeout > 0 {
		return p.ReadTimeout
	}
	return 10 * time.Second
}

func (p *Prober) soon() time.Duration {
	if p.Soon > 0 {
		return p.Soon
	}
	return 280 * time.Millisecond
}

func (p *Prober) later() time.Duration {
	if p.Later != 0 {
		return p.Later
	}
	return time.Hour
}

func (p *Prober) concurrency() int {
	if p.Concurrency > 0 {
		return p.Concurrency
	}
	return 4
}

func (p *Prober) maxRead() int {
	if p.MaxRead > 0 {
		return p.MaxRead
	}
	return 64 << 10
}

func (p *Prober) now() time.Time {
	if p.Now != nil {
		return p.Now()
	}
	return time.Now()
}

func (p *Prober) rand() io.Reader {
	if p.Rand != nil {
		return p.Rand
	}
	return rand.Reader
}

func (p *Prober) sleep(ctx context.Context, d time.Duration) error {
	if p.Sleep != nil {
		return p.Sleep(ctx, d)
	}
	return SystemClock{}.Sleep(ctx, d)
}

func (p *Prober) dial(ctx context.Context, addr string) (net.Conn, error) {
	if p.Dial != nil {
		return p.Dial(ctx, "tcp", addr)
	}
	d := &net.Dialer{Timeout: p.readTimeout()}
	return d.DialContext(ctx, "tcp", addr)
}

// probe is one probe to send.
type probe struct {
	name    string
	payload []byte
}

// probes builds the two rounds of probes: replays of first and random
// probes soon, replays again later.
func (p *Prober) probes(first []byte) (soon, later []probe, err error) {
	for _, c := range probeReplayChanges {
		payload, ok, err := changeBytes(p.rand(), first, c.offsets)
		if err != nil {
			return nil, nil, err
		}
		if !ok {
			continue
		}
		soon = append(soon, probe{c.name, payload})
		if p.later() > 0 {
			later = append(later, probe{c.name + "-later", payload})
		}
	}
	for _, n := range probeRandomLengths {
		payload := make([]byte, n)
		if _, err := io.ReadFull(p.rand(), payload); err != nil {
			return nil, nil, fmt.Errorf("read random probe: %w", err)
		}
		soon = append(soon, probe{fmt.Sprintf("random-%d", n), payload})
	}
	return soon, later, nil
}

// changeBytes returns first with the bytes at offsets replaced by
// different random ones. Offsets past the end are skipped; ok is false if
// first is empty or no offset is inside it.
func changeBytes(r io.Reader, first []byte, offsets []int) (out []byte, ok bool, err error) {
	if len(first) == 0 {
		return nil, false, nil
	}
	out = append([]byte(nil), first...)
	if offsets == nil {
		return out, true, nil
	}
	var x [1]byte
	for _, off := range offsets {
		if off >= len(out) {
			continue
		}
		if _, err := io.ReadFull(r, x[:]); err != nil {
			return nil, false, fmt.Errorf("read random byte: %w", err)
		}
		if x[0] == 0 {
			x[0] = 0xff
		}
		out[off] ^= x[0]
		ok = true
	}
	return out, ok, nil
}

// Probe probes the TCP server at addr. first is a real first packet a
// client sent to it, the material of the replays; if empty, only random
// probes are sent. After Soon it sends the replays and random probes, at
// most Concurrency at a time; at Later after the start, the replays again.
// Probe returns when every probe has ended, which takes about Later plus
// a few ReadTimeouts at most. It fails only if ctx ends first or Rand
// fails; a server that cannot be reached shows in the reactions.
func (p *Prober) Probe(ctx context.Context, addr string, first []byte) (*Report, error) {
	start := p.now()
	soon, later, err := p.probes(first)
	if err != nil {
		return nil, fmt.Errorf("probe %s: %w", addr, err)
	}
	rep := &Report{Addr: addr}
	if err := p.sleep(ctx, p.soon()); err != nil {
		return nil, fmt.Errorf("probe %s: %w", addr, err)
	}
	rs, err := p.round(ctx, addr, soon)
	if err != nil {
		return nil, fmt.Errorf("probe %s: %w", addr, err)
	}
	rep.Reactions = append(rep.Reactions, rs...)
	if len(later) > 0 {
		if err := p.sleep(ctx, p.later()-p.now().Sub(start)); err != nil {
			return nil, fmt.Errorf("probe %s: %w", addr, err)
		}
		rs, err := p.round(ctx, addr, later)
		if err != nil {
			return nil, fmt.Errorf("probe %s: %w", addr, err)
		}
		rep.Reactions = append(rep.Reactions, rs...)
	}
	return rep, nil
}

// round sends probes, at most Concurrency at a time, and returns their
// reactions in the order of probes. It waits for every probe it started.
func (p *Prober) round(ctx context.Context, addr string, probes []probe) ([]Reaction, error) {
	out := make([]Reaction, len(probes))
	sem := make(chan struct{}, p.concurrency())
	var wg sync.WaitGroup
	for i, pr := range probes {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		wg.Go(func() {
			defer func() { <-sem }()
			out[i] = p.react(ctx, addr, pr)
		})
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return out, nil
}

// react sends one probe and records the server's reaction.
func (p *Prober) react(ctx context.Context, addr string, pr probe) (r Reaction) {
	r.Probe = pr.name
	start := p.now()
	defer func() {
		r.After = p.now().Sub(start)
		if p.Logger != nil {
			p.Logger.Debug("probe reaction", "addr", addr, "probe", r.Probe, "sent", r.Sent,
				"received", r.Received, "close", r.Close, "after", r.After)
		}
	}()
	conn, err := p.dial(ctx, addr)
	if err != nil {
		r.Close = classifyDial(err)
		return r
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	start = p.now()
	if err := conn.SetDeadline(time.Now().Add(p.readTimeout())); err != nil {
		r.Close = CloseError
		return r
	}
	n, err := conn.Write(pr.payload)
	r.Sent = n
	if err != nil {
		r.Close = classifyEnd(err)
		return r
	}
	buf := make([]byte, 4096)
	for {
		n, err := conn.Read(buf)
		if len(r.Head) < headLen {
			r.Head = append(r.Head, buf[:min(n, headLen-len(r.Head))]...)
		}
		r.Received += n
		if err != nil {
			r.Close = classifyEnd(err)
			return r
		}
		if r.Received >= p.maxRead() {
			r.Close = CloseOpen
			return r
		}
	}
}

// classifyEnd names how a connection ended from the error of a read or
// write on it.
func classifyEnd(err error) string {
	var ne net.Error
	switch {
	case errors.Is(err, io.EOF):
		return CloseFIN
	case isReset(err):
		return CloseRST
	case errors.Is(err, os.ErrDeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return CloseOpen
	}
	return CloseError
}

// classifyDial names why a dial failed.
func classifyDial(err error) string {
	var ne net.Error
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return CloseRefused
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, os.ErrDeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return CloseTimeout
	}
	return CloseError
}

// ReadLimit measures how many bytes the server at addr reads before it
// closes a connection on which it got nothing it understands: the
// smallest n <= limit such that n random bytes make it close (FIN or RST)
// within ReadTimeout, found by binary search over fresh connections, as
// Frolov et al. (NDSS 2020) measured proxies' thresholds. It assumes that
// a server that closes after n bytes also closes after more, which holds
// for a proxy's read limit but not for a parser that gives up at a chance
// byte (an HTTP server answers 400 at the first random newline). It returns
// -1 if limit bytes do not make the server close. It takes about
// log2(limit) probes, each up to ReadTimeout.
func (p *Prober) ReadLimit(ctx context.Context, addr string, limit int) (int, error) {
	closes := func(n int) (bool, error) {
		payload := make([]byte, n)
		if _, err := io.ReadFull(p.rand(), payload); err != nil {
			return false, fmt.Errorf("read random probe: %w", err)
		}
		r := p.react(ctx, addr, probe{fmt.Sprintf("random-%d", n), payload})
		if err := ctx.Err(); err != nil {
			return false, err
		}
		switch r.Close {
		case CloseFIN, CloseRST:
			return true, nil
		case CloseOpen:
			return false, nil
		}
		return false, fmt.Errorf("probe of %d bytes: connection %s", n, r.Close)
	}
	if limit < 1 {
		return 0, fmt.Errorf("measure read limit of %s: limit %d is not positive", addr, limit)
	}
	ok, err := closes(limit)
	if err != nil {
		return 0, fmt.Errorf("measure read limit of %s: %w", addr, err)
	}
	if !ok {
		return -1, nil
	}
	lo, hi := 0, limit // lo bytes keep it open (none, trivially); hi bytes close it
	for hi-lo > 1 {
		mid := lo + (hi-lo)/2
		ok, err := closes(mid)
		if err != nil {
			return 0, fmt.Errorf("measure read limit of %s: %w", addr, err)
		}
		if ok {
			hi = mid
		} else {
			lo = mid
		}
	}
	return hi, nil
}

// Differ lists the differences between two servers' reports, one line per
// probe that tells them apart: by how the connection ended; by the bytes
// the server sent back (none against some, or sizes more than 4 times
// apart: two web servers answer with pages of different sizes); by the
// bytes it accepted; or by the time to close (times within 1 s or 50% of
// each other are the same: a loaded machine delays a close by hundreds of
// milliseconds, and the reactions that gave servers away differ by
// seconds). Empty means the prober could not tell the
// servers apart. Probes in one report only are listed too.
//
// Compare reports made with the same probes: give both Probers the same
// Rand stream (for example math/rand/v2's ChaCha8 with one seed).
func Differ(a, b *Report) []string {
	var diffs []string
	bi := make(map[string]Reaction, len(b.Reactions))
	for _, r := range b.Reactions {
		bi[r.Probe] = r
	}
	seen := make(map[string]bool, len(a.Reactions))
	for _, ra := range a.Reactions {
		seen[ra.Probe] = true
		rb, ok := bi[ra.Probe]
		if !ok {
			diffs = append(diffs, fmt.Sprintf("%s: only in the report on %s", ra.Probe, a.Addr))
			continue
		}
		switch {
		case ra.Close != rb.Close:
			diffs = append(diffs, fmt.Sprintf("%s: ended %s vs %s", ra.Probe, ra.Close, rb.Close))
		case !sameSize(ra.Received, rb.Received):
			diffs = append(diffs, fmt.Sprintf("%s: received %d vs %d bytes", ra.Probe, ra.Received, rb.Received))
		case ra.Sent != rb.Sent:
			diffs = append(diffs, fmt.Sprintf("%s: accepted %d vs %d bytes", ra.Probe, ra.Sent, rb.Sent))
		case (ra.Close == CloseFIN || ra.Close == CloseRST) && !sameTime(ra.After, rb.After):
			diffs = append(diffs, fmt.Sprintf("%s: %s after %v vs %v", ra.Probe, ra.Close,
				ra.After.Round(time.Millisecond), rb.After.Round(time.Millisecond)))
		}
	}
	for _, rb := range b.Reactions {
		if !seen[rb.Probe] {
			diffs = append(diffs, fmt.Sprintf("%s: only in the report on %s", rb.Probe, b.Addr))
		}
	}
	return diffs
}

// sameSize reports whether two servers' replies are alike in size: both
// empty, or both not and at most 4 times apart.
func sameSize(a, b int) bool {
	lo, hi := min(a, b), max(a, b)
	if lo == 0 {
		return hi == 0
	}
	return hi <= 4*lo
}

// sameTime reports whether two times to close are within Differ's
// tolerance: 1 s apart, or the longer at most 1.5 times the shorter.
func sameTime(a, b time.Duration) bool {
	lo, hi := min(a, b), max(a, b)
	return hi-lo <= time.Second || hi <= lo+lo/2
}
