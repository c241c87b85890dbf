package channel

import (
	"bytes"
	"context"
	"errors"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/ferry-im/ferry/wire"
)

// countingConn counts Writes once counting is set, and, while gate is not
// nil, holds the next Write until gate is closed.
type countingConn struct {
	net.Conn
	mu       sync.Mutex
	counting bool
	writes   int
	gate     chan struct{}
	blocked  chan struct{} // closed when a Write waits at the gate
}

func (c *countingConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	if c.counting {
		c.writes++
	}
	gate, blocked := c.gate, c.blocked
	c.gate, c.blocked = nil, nil
	c.mu.Unlock()
	if gate != nil {
		close(blocked)
		<-gate
	}
	return c.Conn.Write(p)
}

// count starts counting Writes from zero.
func (c *countingConn) count() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.counting, c.writes = true, 0
}

func (c *countingConn) n() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.writes
}

// recvN receives n frames on srv in the background.
func recvN(t *testing.T, srv *Conn, n int) <-chan []wire.Frame {
	t.Helper()
	out := make(chan []wire.Frame, 1)
	go func() {
		var got []wire.Frame
		for range n {
			f, err := srv.Recv(context.Background())
			if err != nil {
				t.Error(err)
				break
			}
			got = append(got, f)
		}
		out <- got
	}()
	return out
}

// frameTypes returns the types of fs, in order.
func frameTypes(fs []wire.Frame) []wire.Type {
	ts := make([]wire.Type, len(fs))
	for i, f := range fs {
		ts[i] = f.Type
	}
	return ts
}

func smallFrames(n int) []wire.Frame {
	fs := make([]wire.Frame, n)
	for i := range fs {
		fs[i] = wire.Frame{Type: wire.Type(i%200 + 1), Payload: bytes.Repeat([]byte{byte(i)}, 40+i%50)}
	}
	return fs
}

func checkFrames(t *testing.T, got, want []wire.Frame) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("got %d frames, want %d", len(got), len(want))
	}
	for i := range want {
		if got[i].Type != want[i].Type || !bytes.Equal(got[i].Payload, want[i].Payload) {
			t.Fatalf("frame %d: got type %v, %d bytes, want type %v, %d bytes", i, got[i].Type, len(got[i].Payload), want[i].Type, len(want[i].Payload))
		}
	}
}

// TestSendBatchOneWrite checks that a batch of small frames costs one
// Write, and arrives in order.
func TestSendBatchOneWrite(t *testing.T) {
	t.Parallel()
	a, b := net.Pipe()
	ca := &countingConn{Conn: a}
	cli, srv, _, _ := pairOver(t, ca, b)
	const n = 100
	frames := smallFrames(n)
	got := recvN(t, srv, n)
	ca.count()
	if err := cli.SendBatch(context.Background(), frames); err != nil {
		t.Fatal(err)
	}
	if w := ca.n(); w != 1 {
		t.Errorf("SendBatch of %d small frames made %d Writes, want 1", n, w)
	}
	checkFrames(t, <-got, frames)
}

// TestConcurrentSendsCoalesce holds the first sender's Write, queues n-1
// more small frames from other goroutines, and checks that they all go out
// in one more Write rather than one each.
func TestConcurrentSendsCoalesce(t *testing.T) {
	t.Parallel()
	a, b := net.Pipe()
	ca := &countingConn{Conn: a}
	cli, srv, _, _ := pairOver(t, ca, b)
	const n = 50
	frames := smallFrames(n)
	got := recvN(t, srv, n)
	ca.count()
	gate, blocked := make(chan struct{}), make(chan struct{})
	ca.mu.Lock()
	ca.gate, ca.blocked = gate, blocked
	ca.mu.Unlock()

	var wg sync.WaitGroup
	send := func(f wire.Frame) {
		defer wg.Done()
		if err := cli.Send(context.Background(), f); err != nil {
			t.Error(err)
		}
	}
	wg.Add(n)
	go send(frames[0])
	<-blocked // the first sender is the writer, held in Write
	for _, f := range frames[1:] {
		go send(f)
	}
	// Wait until every other frame is queued behind the writer.
	for deadline := time.Now().Add(10 * time.Second); ; {
		cli.wmu.Lock()
		q := len(cli.queue)
		cli.wmu.Unlock()
		if q == n {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d frames queued, want %d", q, n)
		}
		time.Sleep(time.Millisecond)
	}
	close(gate)
	wg.Wait()
	if w := ca.n(); w != 2 {
		t.Errorf("%d concurrent small Sends made %d Writes, want 2 (the held one, then one for the rest)", n, w)
	}
	// Concurrent frames may arrive in any order; each must arrive once.
	recv := <-got
	seen := map[string]bool{}
	for _, f := range recv {
		seen[string(append([]byte{byte(f.Type)}, f.Payload...))] = true
	}
	for i, f := range frames {
		if !seen[string(append([]byte{byte(f.Type)}, f.Payload...))] {
			t.Errorf("frame %d did not arrive", i)
		}
	}
}

// TestSendBatchOrder sends batches mixing large and small frames while
// other goroutines send, and checks each batch arrives intact and in order.
func TestSendBatchOrder(t *testing.T) {
	t.Parallel()
	cli, srv, _, _ := pipePair(t)
	const senders, batches, per = 4, 5, 6
	var wg sync.WaitGroup
	for s := range senders {
		wg.Go(func() {
			for i := range batches {
				var fs []wire.Frame
				for j := range per {
					n := []int{30, 3 * MaxRecordData, 100, 70 << 10, 5, MaxRecordData}[(s+i+j)%per]
					p := bytes.Repeat([]byte{byte(j)}, n)
					p[0], p[1], p[2] = byte(s), byte(i), byte(j)
					fs = append(fs, wire.Frame{Type: 1, Payload: p})
				}
				if err := cli.SendBatch(context.Background(), fs); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	next := make([]int, senders) // per sender: index of the next frame, over all its batches
	for range senders * batches * per {
		f, err := srv.Recv(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		s := int(f.Payload[0])
		i, j := next[s]/per, next[s]%per
		if int(f.Payload[1]) != i || int(f.Payload[2]) != j {
			t.Fatalf("sender %d: got batch %d frame %d, want batch %d frame %d", s, f.Payload[1], f.Payload[2], i, j)
		}
		for _, c := range f.Payload[3:] {
			if c != byte(j) {
				t.Fatalf("sender %d batch %d frame %d: corrupted", s, i, j)
			}
		}
		next[s]++
	}
	wg.Wait()
}

// TestSendBatchSmallNotDelayed checks that a small Send is not held up
// behind a large frame of a batch.
func TestSendBatchSmallNotDelayed(t *testing.T) {
	t.Parallel()
	a, b := net.Pipe()
	progress := make(chan struct{})
	cli, srv, _, _ := pairOver(t, throttled{Conn: a, rate: 2 << 20, progress: progress, written: new(int)}, b)
	ctx := context.Background()
	batch := []wire.Frame{
		{Type: 1, Payload: bytes.Repeat([]byte{1}, wire.MaxPayload)},
		{Type: 3, Payload: []byte("after the large one")},
	}
	got := recvN(t, srv, 3)
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := cli.SendBatch(ctx, batch); err != nil {
			t.Error(err)
		}
	})
	wg.Go(func() {
		<-progress
		if err := cli.Send(ctx, wire.Frame{Type: 2, Payload: []byte("hello")}); err != nil {
			t.Error(err)
		}
	})
	wg.Wait()
	if order := frameTypes(<-got); !slices.Equal(order, []wire.Type{2, 1, 3}) {
		t.Fatalf("frames arrived as %v, want [2 1 3] (the small Send first, the batch in its order)", order)
	}
}

// TestSendBatchCancelStress sends batches whose contexts end at random
// times over a slow link, interleaved with plain Sends: of every batch a
// prefix arrives, in order; all of it when SendBatch returned nil.
func TestSendBatchCancelStress(t *testing.T) {
	t.Parallel()
	a, b := net.Pipe()
	cli, srv, _, _ := pairOver(t, throttled{Conn: a, rate: 16 << 20}, b)
	const senders, batches, per = 4, 10, 5
	var mu sync.Mutex
	complete := map[[2]byte]bool{} // batches whose SendBatch returned nil
	var wg sync.WaitGroup
	for s := range senders {
		wg.Go(func() {
			for i := range batches {
				var fs []wire.Frame
				for j := range per {
					n := []int{10, 5000, 40000, 200000, 20}[(s+i+j)%per]
					p := bytes.Repeat([]byte{byte(s) ^ byte(i) ^ byte(j)}, n)
					p[0], p[1], p[2] = byte(s), byte(i), byte(j)
					fs = append(fs, wire.Frame{Type: 1, Payload: p})
				}
				ctx, cancel := context.WithTimeout(context.Background(), time.Duration((s*7+i*3)%10)*time.Millisecond)
				var err error
				if i%3 == 2 {
					err = cli.Send(ctx, fs[0]) // a batch of one
				} else {
					err = cli.SendBatch(ctx, fs)
				}
				cancel()
				if err == nil {
					mu.Lock()
					complete[[2]byte{byte(s), byte(i)}] = true
					mu.Unlock()
				} else if !errors.Is(err, context.DeadlineExceeded) {
					t.Errorf("SendBatch: %v", err)
				}
			}
		})
	}
	got := map[[2]byte]int{} // frames of each batch received
	recvDone := make(chan struct{})
	go func() {
		defer close(recvDone)
		for {
			f, err := srv.Recv(context.Background())
			if err != nil {
				return
			}
			if f.Type != 1 {
				continue
			}
			k := [2]byte{f.Payload[0], f.Payload[1]}
			if int(f.Payload[2]) != got[k] {
				t.Errorf("batch %v: got frame %d, want %d", k, f.Payload[2], got[k])
			}
			got[k]++
			for _, c := range f.Payload[3:] {
				if c != k[0]^k[1]^f.Payload[2] {
					t.Errorf("batch %v frame %d corrupted", k, f.Payload[2])
					break
				}
			}
		}
	}()
	wg.Wait()
	if err := cli.Send(context.Background(), wire.Frame{Type: 2, Payload: []byte("flush")}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond)
	cli.Close()
	<-recvDone
	for k := range complete {
		want := per
		if k[1]%3 == 2 {
			want = 1
		}
		if got[k] != want {
			t.Errorf("batch %v: SendBatch returned nil but %d of %d frames arrived", k, got[k], want)
		}
	}
	if testing.Verbose() || len(complete) == 0 || len(complete) == senders*batches {
		t.Logf("%d of %d batches completed (the test is weaker when none or all are cancelled)", len(complete), senders*batches)
	}
}

// TestSendBatchEmpty checks that an empty batch is a no-op.
func TestSendBatchEmpty(t *testing.T) {
	t.Parallel()
	cli, _, _, _ := pipePair(t)
	if err := cli.SendBatch(context.Background(), nil); err != nil {
		t.Fatalf("SendBatch(nil) = %v, want nil", err)
	}
}

// TestRecvContextReuse receives with one context many times (its wake-up
// stays registered between calls), lets it end between calls, then
// receives with other contexts: the deadline it left must not fail them,
// and a context ending during a blocked Recv still wakes it.
func TestRecvContextReuse(t *testing.T) {
	t.Parallel()
	cli, srv, _, _ := pipePair(t)
	bg := context.Background()
	send := func(b byte) {
		go func() {
			if err := cli.Send(bg, wire.Frame{Type: 1, Payload: []byte{b}}); err != nil {
				t.Error(err)
			}
		}()
	}
	a, cancelA := context.WithCancel(bg)
	for i := range 20 {
		send(byte(i))
		f, err := srv.Recv(a)
		if err != nil || f.Payload[0] != byte(i) {
			t.Fatalf("Recv %d = %v, %v", i, f.Payload, err)
		}
	}
	cancelA() // while no Recv runs: the read deadline moves into the past
	if _, err := srv.Recv(a); !errors.Is(err, context.Canceled) {
		t.Fatalf("Recv with the ended context = %v, want context.Canceled", err)
	}
	send(100)
	if f, err := srv.Recv(bg); err != nil || f.Payload[0] != 100 {
		t.Fatalf("Recv with a fresh context after another ended = %v, %v; want [100], nil", f.Payload, err)
	}
	b, cancelB := context.WithCancel(bg)
	send(101)
	if f, err := srv.Recv(b); err != nil || f.Payload[0] != 101 {
		t.Fatalf("Recv = %v, %v; want [101], nil", f.Payload, err)
	}
	time.AfterFunc(20*time.Millisecond, cancelB)
	if _, err := srv.Recv(b); !errors.Is(err, context.Canceled) {
		t.Fatalf("blocked Recv whose context ends = %v, want context.Canceled", err)
	}
	send(102)
	if f, err := srv.Recv(bg); err != nil || f.Payload[0] != 102 {
		t.Fatalf("Recv after a cancelled one = %v, %v; want [102], nil", f.Payload, err)
	}
	c, cancelC := context.WithCancel(bg)
	defer cancelC()
	send(103)
	if _, err := srv.Recv(c); err != nil {
		t.Fatal(err)
	}
	srv.Close()
	srv.rwatch.mu.Lock()
	registered := srv.rwatch.stop != nil
	srv.rwatch.mu.Unlock()
	if registered {
		t.Error("the wake-up of Recv's context is still registered after Close")
	}
}

// readCounter counts Reads once counting is set.
type readCounter struct {
	net.Conn
	mu       sync.Mutex
	counting bool
	reads    int
}

func (c *readCounter) Read(p []byte) (int, error) {
	c.mu.Lock()
	if c.counting {
		c.reads++
	}
	c.mu.Unlock()
	return c.Conn.Read(p)
}

// TestSmallRecordOneRead checks that a small record arriving on an idle
// channel is read with one Read (not its length, then the rest), and that
// records larger than the Conn's small array still arrive intact.
func TestSmallRecordOneRead(t *testing.T) {
	t.Parallel()
	a, b := net.Pipe()
	rb := &readCounter{Conn: b}
	cli, srv, _, _ := pairOver(t, a, rb)
	ctx := context.Background()
	rb.mu.Lock()
	rb.counting = true
	rb.mu.Unlock()
	const n = 10
	for i := range n {
		want := wire.Frame{Type: 1, Payload: bytes.Repeat([]byte{byte(i)}, 100)}
		go cli.Send(ctx, want)
		got, err := srv.Recv(ctx)
		if err != nil || !bytes.Equal(got.Payload, want.Payload) {
			t.Fatalf("frame %d: got %d bytes, %v", i, len(got.Payload), err)
		}
	}
	rb.mu.Lock()
	reads := rb.reads
	rb.mu.Unlock()
	if reads != n {
		t.Errorf("%d small records took %d Reads, want %d", n, reads, n)
	}
	for _, size := range []int{smallReadLen - 40, smallReadLen, 3000, MaxRecordData, 100 << 10} {
		want := wire.Frame{Type: 2, Payload: bytes.Repeat([]byte{byte(size)}, size)}
		go cli.SendBatch(ctx, []wire.Frame{want, {Type: 3, Payload: []byte("next")}})
		for _, w := range []wire.Frame{want, {Type: 3, Payload: []byte("next")}} {
			got, err := srv.Recv(ctx)
			if err != nil || got.Type != w.Type || !bytes.Equal(got.Payload, w.Payload) {
				t.Fatalf("frame of %d bytes: got type %v, %d bytes, %v", len(w.Payload), got.Type, len(got.Payload), err)
			}
		}
	}
}
