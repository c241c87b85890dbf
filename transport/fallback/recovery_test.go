package fallback_test

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"slices"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/ferry-im/ferry/link"
	"github.com/ferry-im/ferry/transport"
	"github.com/ferry-im/ferry/transport/fallback"
	"github.com/ferry-im/ferry/transport/fallback/fallbacktest"
	"github.com/ferry-im/ferry/transport/obfs"
	"github.com/ferry-im/ferry/transport/tcp"
	"github.com/ferry-im/ferry/transport/transporttest"
)

// rig is a relay stand-in reachable over obfs and tcp, each through a
// Cutter: it takes 8-byte sequence numbers, keeps each once (as the relay
// keeps a Send once per ID) and acknowledges every one it reads.
type rig struct {
	eps     []link.Endpoint
	cutters map[string]*fallbacktest.Cutter
	reg     *transport.Registry

	mu   sync.Mutex // mu protects got
	got  []uint64   // distinct seqs in the order first received
	seen map[uint64]bool
}

func newRig(t testing.TB) *rig {
	osrv := fallbacktest.ObfsServer(t, time.Second)
	r := &rig{cutters: map[string]*fallbacktest.Cutter{}, seen: map[uint64]bool{}}
	for _, srv := range []transport.Server{osrv, tcp.Server{}} {
		l, ep := transporttest.Serve(t, srv)
		go r.serve(l)
		c, err := fallbacktest.NewCutter(ep.Addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		r.cutters[ep.Transport] = c
		ep.Addr = c.Addr()
		r.eps = append(r.eps, ep)
	}
	var err error
	r.reg, err = transport.NewRegistry(
		transport.Entry{Name: obfs.Name, Dialer: obfs.New(obfs.Config{})},
		transport.Entry{Name: tcp.Name, Dialer: tcp.New(tcp.Config{})},
	)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func (r *rig) serve(l net.Listener) {
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			var b [8]byte
			for {
				if _, err := io.ReadFull(c, b[:]); err != nil {
					return
				}
				seq := binary.BigEndian.Uint64(b[:])
				r.mu.Lock()
				if !r.seen[seq] {
					r.seen[seq] = true
					r.got = append(r.got, seq)
				}
				r.mu.Unlock()
				if _, err := c.Write(b[:]); err != nil {
					return
				}
			}
		}()
	}
}

// session is a sender with an outbox: every seq stays queued until
// acknowledged and is sent again on the next connection.
type session struct {
	r      *rig
	d      *fallback.Dialer
	conn   *fallback.Watched
	ep     link.Endpoint
	mu     sync.Mutex // mu protects unacked
	acked  chan uint64
	unack  []uint64
	reader sync.WaitGroup
}

func newSession(r *rig) *session {
	return &session{r: r, acked: make(chan uint64, 1024),
		d: fallback.New(fallback.Config{Transports: r.reg, Prefer: []string{obfs.Name}, Network: func() string { return "rig" }})}
}

// connect races the endpoints and sends the outbox again.
func (s *session) connect(ctx context.Context) error {
	c, ep, err := s.d.Dial(ctx, s.r.eps)
	if err != nil {
		return err
	}
	s.conn, s.ep = fallback.Watch(c, fallback.WatchConfig{}), ep
	s.reader.Go(func() {
		var b [8]byte
		for {
			if _, err := io.ReadFull(s.conn, b[:]); err != nil {
				return
			}
			seq := binary.BigEndian.Uint64(b[:])
			s.conn.Answered()
			s.mu.Lock()
			s.unack = slices.DeleteFunc(s.unack, func(x uint64) bool { return x == seq })
			s.mu.Unlock()
			s.acked <- seq
		}
	})
	s.mu.Lock()
	resend := slices.Clone(s.unack)
	s.mu.Unlock()
	for _, seq := range resend {
		if err := s.write(seq); err != nil {
			return err
		}
	}
	return nil
}

func (s *session) write(seq uint64) error {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], seq)
	s.conn.SetWriteDeadline(time.Now().Add(time.Second))
	s.conn.Awaiting()
	_, err := s.conn.Write(b[:])
	return err
}

func (s *session) send(seq uint64) error {
	s.mu.Lock()
	s.unack = append(s.unack, seq)
	s.mu.Unlock()
	return s.write(seq)
}

// check moves the session to another transport if the one in use
// stalled; it reports whether it moved.
func (s *session) check(ctx context.Context) (bool, error) {
	err := s.conn.Check()
	if err == nil {
		return false, nil
	}
	if !errors.Is(err, fallback.ErrStalled) {
		return false, err
	}
	s.d.Failed(s.ep, err.Error())
	s.close()
	return true, s.connect(ctx)
}

func (s *session) close() {
	s.conn.Close()
	s.reader.Wait()
}

// waitAck waits for an acknowledgement, checking the conn meanwhile.
func (s *session) waitAck(ctx context.Context) (moved bool, err error) {
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-s.acked:
			return moved, nil
		case <-tick.C:
			m, err := s.check(ctx)
			if err != nil {
				return moved, err
			}
			moved = moved || m
		case <-ctx.Done():
			return moved, ctx.Err()
		}
	}
}

// TestMidSessionCut sends 100 messages one at a time; after 30 the censor
// starts dropping everything on the transport in use. Delivery must resume
// over the other transport within 5 s, with every message kept exactly
// once and in order.
func TestMidSessionCut(t *testing.T) {
	r := newRig(t)
	s := newSession(r)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := s.connect(ctx); err != nil {
		t.Fatal(err)
	}
	defer s.close()
	first := s.ep.Transport
	var recovery time.Duration
	for seq := uint64(1); seq <= 100; seq++ {
		var cutAt time.Time
		if seq == 31 {
			r.cutters[first].Cut()
			cutAt = time.Now()
		}
		if err := s.send(seq); err != nil && !isTimeout(err) {
			t.Fatal(err)
		}
		moved, err := s.waitAck(ctx)
		if err != nil {
			t.Fatalf("message %d: %v", seq, err)
		}
		if !cutAt.IsZero() {
			recovery = time.Since(cutAt)
			if !moved {
				t.Fatal("acknowledged after the cut without moving")
			}
		}
	}
	if s.ep.Transport == first {
		t.Fatalf("still on %s after it was cut", first)
	}
	if recovery > 5*time.Second {
		t.Fatalf("delivery resumed %v after the cut, want within 5 s", recovery)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.got) != 100 || !slices.IsSorted(r.got) {
		t.Fatalf("relay kept %d distinct messages (in order: %v), want 100 in order", len(r.got), slices.IsSorted(r.got))
	}
	t.Logf("moved from %s to %s; delivery resumed %v after the cut", first, s.ep.Transport, recovery.Round(time.Millisecond))
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// BenchmarkRecovery cuts the transport in use 50 times (alternating
// between obfs and tcp, lifting each cut once the session has moved) and
// reports the time from the cut to the first acknowledgement over the
// other transport: p50 and p99.
func BenchmarkRecovery(b *testing.B) {
	for b.Loop() {
		r := newRig(b)
		s := newSession(r)
		ctx := context.Background()
		if err := s.connect(ctx); err != nil {
			b.Fatal(err)
		}
		var times []time.Duration
		seq := uint64(0)
		for range 50 {
			seq++
			if err := s.send(seq); err != nil {
				b.Fatal(err)
			}
			if _, err := s.waitAck(ctx); err != nil {
				b.Fatal(err)
			}
			in := s.ep.Transport
			r.cutters[in].Cut()
			start := time.Now()
			seq++
			if err := s.send(seq); err != nil && !isTimeout(err) {
				b.Fatal(err)
			}
			if _, err := s.waitAck(ctx); err != nil {
				b.Fatal(err)
			}
			times = append(times, time.Since(start))
			r.cutters[in].Restore()
		}
		s.close()
		sort.Slice(times, func(i, j int) bool { return times[i] < times[j] })
		b.ReportMetric(times[len(times)/2].Seconds(), "p50-s")
		b.ReportMetric(times[len(times)*99/100].Seconds(), "p99-s")
	}
}
