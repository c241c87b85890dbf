package channel

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"net"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/ferry-im/ferry/wire"
)

// encryptRecords seals record plaintexts as a client would send them.
func encryptRecords(t testing.TB, enc interface {
	Encrypt([]byte, []byte, []byte) ([]byte, error)
}, recs ...[]byte) []byte {
	t.Helper()
	var out []byte
	for _, p := range recs {
		out = binary.BigEndian.AppendUint16(out, uint16(len(p)+tagLen))
		var err error
		if out, err = enc.Encrypt(out, nil, p); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// bigHeader is the envelope header of a frame of MaxPayload bytes
// followed by one payload byte: the start of a frame that stalls.
func bigHeader() []byte {
	h := []byte{byte(wire.TypeSend), 0, 0, 0, 0, 'x'}
	binary.BigEndian.PutUint32(h[1:], wire.MaxPayload)
	return h
}

// TestStalledFramesHoldNoMemory starts the four frames a peer may have in
// transit, each declaring the largest payload and sending one byte of it,
// and checks that the receiver allocated about what arrived, not what was
// declared (docs/protocol.md 5.2). Before the fix the receiver reserved
// 257 KiB per frame as soon as the header came.
func TestStalledFramesHoldNoMemory(t *testing.T) {
	enc, dec, renc := cipherPair(t)
	a, b := net.Pipe()
	defer a.Close()
	c := newConn(b, [32]byte{}, renc, dec, (*Config)(nil).logger())
	defer c.Close()
	var recs [][]byte
	for s := uint32(1); s <= maxPartial; s++ {
		recs = append(recs, rec(s, 0, bigHeader()))
	}
	recs = append(recs, rec(9, flagFin, env(wire.TypePing, 8)))
	stream := encryptRecords(t, enc, recs...)

	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	go a.Write(stream)
	f, err := c.Recv(context.Background())
	runtime.ReadMemStats(&after)
	if err != nil {
		t.Fatal(err)
	}
	if f.Type != wire.TypePing {
		t.Fatalf("got %v, want the Ping after the stalled frames", f.Type)
	}
	if got := len(c.partial); got != maxPartial {
		t.Fatalf("%d frames in transit, want %d", got, maxPartial)
	}
	if grew := after.TotalAlloc - before.TotalAlloc; grew > 128<<10 {
		t.Errorf("receiving %d stalled frame headers allocated %d KiB, want under 128 KiB", maxPartial, grew>>10)
	}
}

// countingBudget is a Budget that records what is held and refuses
// beyond limit (if limit > 0).
type countingBudget struct {
	mu         sync.Mutex
	held, peak int
	limit      int
}

func (b *countingBudget) Reserve(n int) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if n < 0 {
		panic("negative reservation")
	}
	if b.limit > 0 && b.held+n > b.limit {
		return false
	}
	b.held += n
	b.peak = max(b.peak, b.held)
	return true
}

func (b *countingBudget) Release(n int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.held -= n
	if b.held < 0 {
		panic("released more than reserved")
	}
}

func (b *countingBudget) get() (held, peak int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.held, b.peak
}

// budgetPair is pipePair with budget charged on the relay side.
func budgetPair(t *testing.T, budget Budget) (cli, srv *Conn) {
	t.Helper()
	a, b := net.Pipe()
	cliKey, srvKey := mustKey(t), mustKey(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		var err error
		srv, err = (&Config{Budget: budget}).Server(ctx, b, srvKey)
		done <- err
	}()
	cli, err := Client(ctx, a, cliKey, srvKey.Public)
	if serr := <-done; err != nil || serr != nil {
		t.Fatalf("handshake: client %v, server %v", err, serr)
	}
	t.Cleanup(func() { cli.Close(); srv.Close() })
	return cli, srv
}

// TestBudgetChargedWhileInTransit sends a large frame and checks that the
// budget held at most twice the frame while it arrived, nothing once it
// was complete, and that InTransitSince was set only meanwhile.
func TestBudgetChargedWhileInTransit(t *testing.T) {
	t.Parallel()
	var budget countingBudget
	cli, srv := budgetPair(t, &budget)
	if !srv.InTransitSince().IsZero() {
		t.Fatal("InTransitSince set before any frame")
	}
	payload := bytes.Repeat([]byte{7}, 300<<10)
	go cli.Send(context.Background(), wire.Frame{Type: wire.TypeSend, Payload: payload})
	f, err := srv.Recv(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(f.Payload, payload) {
		t.Fatal("payload changed in transit")
	}
	held, peak := budget.get()
	if held != 0 {
		t.Errorf("budget holds %d bytes after the frame completed, want 0", held)
	}
	if peak == 0 || peak > 2*len(payload) {
		t.Errorf("budget peaked at %d bytes for a frame of %d, want 1..%d", peak, len(payload), 2*len(payload))
	}
	if !srv.InTransitSince().IsZero() {
		t.Error("InTransitSince still set after the frame completed")
	}
}

// TestBudgetRefused checks that a refused reservation fails Recv with
// ErrBudget, closes the channel and gives back everything held.
func TestBudgetRefused(t *testing.T) {
	t.Parallel()
	budget := countingBudget{limit: 64 << 10}
	cli, srv := budgetPair(t, &budget)
	go cli.Send(context.Background(), wire.Frame{Type: wire.TypeSend, Payload: make([]byte, 200<<10)})
	_, err := srv.Recv(context.Background())
	if !errors.Is(err, ErrBudget) {
		t.Fatalf("Recv = %v, want ErrBudget", err)
	}
	if held, _ := budget.get(); held != 0 {
		t.Errorf("budget holds %d bytes after the failure, want 0", held)
	}
	if _, err := srv.Recv(context.Background()); !errors.Is(err, ErrBudget) {
		t.Errorf("second Recv = %v, want the same final error", err)
	}
}

// TestInTransitSince checks that a stalled frame shows in InTransitSince
// while complete small frames keep arriving.
func TestInTransitSince(t *testing.T) {
	enc, dec, renc := cipherPair(t)
	a, b := net.Pipe()
	defer a.Close()
	c := newConn(b, [32]byte{}, renc, dec, (*Config)(nil).logger())
	defer c.Close()
	before := time.Now()
	go a.Write(encryptRecords(t, enc, rec(1, 0, bigHeader()), rec(2, flagFin, env(wire.TypePing, 8))))
	if _, err := c.Recv(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := c.InTransitSince(); got.Before(before) || got.After(time.Now()) {
		t.Errorf("InTransitSince = %v, want between %v and now", got, before)
	}
	go a.Write(encryptRecords(t, enc, rec(1, flagAbort), rec(3, flagFin, env(wire.TypePing, 8))))
	if _, err := c.Recv(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := c.InTransitSince(); !got.IsZero() {
		t.Errorf("InTransitSince = %v after the abort, want zero", got)
	}
}

// TestStalledRecordCharged sends the first bytes of a full-size record and
// stalls: the receiver holds a read buffer for the rest of it, which must
// be charged to the budget (a relay holding one per stalled connection
// would otherwise hold 64 KiB each, uncounted), and given back once the
// channel ends.
func TestStalledRecordCharged(t *testing.T) {
	enc, dec, renc := cipherPair(t)
	a, b := net.Pipe()
	var budget countingBudget
	c := newConn(b, [32]byte{}, renc, dec, (*Config)(nil).logger())
	c.budget = &budget
	full := encryptRecords(t, enc, rec(1, flagFin, env(wire.TypeSend, MaxRecordData-wire.HeaderLen)))
	errc := make(chan error, 1)
	go func() {
		_, err := c.Recv(context.Background())
		errc <- err
	}()
	if _, err := a.Write(full[:4000]); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for held, _ := budget.get(); held < MaxRecordData; held, _ = budget.get() {
		if time.Now().After(deadline) {
			t.Fatalf("a half-received record holds a read buffer but the budget holds %d bytes", held)
		}
		time.Sleep(time.Millisecond)
	}
	a.Close()
	<-errc
	if held, _ := budget.get(); held != 0 {
		t.Fatalf("budget holds %d bytes after the channel ended, want 0", held)
	}
}
