package channel

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ferry-im/ferry/wire"
)

// throttled slows writes to about rate bytes per second,
// like a slow link, in 8 KiB steps.
type throttled struct {
	net.Conn
	rate int
	// If progress is not nil, it is closed once after 64 KiB were written.
	progress chan struct{}
	written  *int
}

func (c throttled) Write(p []byte) (int, error) {
	n := 0
	for len(p) > 0 {
		k := min(len(p), 8<<10)
		time.Sleep(time.Duration(k) * time.Second / time.Duration(c.rate))
		m, err := c.Conn.Write(p[:k])
		n += m
		if c.progress != nil {
			*c.written += m
			if *c.written >= 64<<10 && *c.written-m < 64<<10 {
				close(c.progress)
			}
		}
		if err != nil {
			return n, err
		}
		p = p[k:]
	}
	return n, nil
}

// TestSmallFrameNotDelayed starts a 1 MiB send over a slow link, then a
// small one, and checks the small frame arrives before the large one is
// complete.
func TestSmallFrameNotDelayed(t *testing.T) {
	t.Parallel()
	a, b := net.Pipe()
	progress := make(chan struct{})
	// 1 MiB takes about 500 ms; writes are serialised by the channel, so
	// the written counter needs no lock.
	cli, srv, _, _ := pairOver(t, throttled{Conn: a, rate: 2 << 20, progress: progress, written: new(int)}, b)
	ctx := context.Background()
	large := wire.Frame{Type: 1, Payload: bytes.Repeat([]byte{1}, wire.MaxPayload)}
	small := wire.Frame{Type: 2, Payload: []byte("hello")}

	got := recvN(t, srv, 2)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		if err := cli.Send(ctx, large); err != nil {
			t.Error(err)
		}
	}()
	go func() {
		defer wg.Done()
		<-progress // the large frame is under way
		if err := cli.Send(ctx, small); err != nil {
			t.Error(err)
		}
	}()
	wg.Wait()
	if order := frameTypes(<-got); !slices.Equal(order, []wire.Type{2, 1}) {
		t.Fatalf("frames arrived as %v, want the small (2) before the large (1)", order)
	}
}

// TestConcurrentSends sends frames of mixed sizes from many goroutines and
// checks each arrives intact, and that each goroutine's frames keep their
// order.
func TestConcurrentSends(t *testing.T) {
	t.Parallel()
	cli, srv, _, _ := pipePair(t)
	ctx := context.Background()
	const senders, each = 8, 20
	var wg sync.WaitGroup
	for s := range senders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				n := (s*7919 + i*104729) % (3 * MaxRecordData)
				if i%5 == 0 {
					n = 200 << 10
				}
				p := bytes.Repeat([]byte{byte(i)}, n)
				if n >= 2 {
					p[0], p[1] = byte(s), byte(i)
				}
				if err := cli.Send(ctx, wire.Frame{Type: wire.Type(s + 1), Payload: p}); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	next := make([]int, senders)
	for range senders * each {
		f, err := srv.Recv(ctx)
		if err != nil {
			t.Fatal(err)
		}
		s := int(f.Type) - 1
		i := next[s]
		next[s]++
		if len(f.Payload) >= 2 && (f.Payload[0] != byte(s) || f.Payload[1] != byte(i)) {
			t.Fatalf("sender %d: got frame %d, want %d", s, f.Payload[1], i)
		}
		for _, c := range f.Payload[2:] {
			if c != byte(i) {
				t.Fatalf("sender %d frame %d: corrupted payload", s, i)
			}
		}
	}
	wg.Wait()
}

func TestCloseUnblocks(t *testing.T) {
	t.Parallel()
	_, srv, _, _ := pipePair(t)
	ctx := context.Background()
	recvErr := make(chan error, 1)
	go func() {
		_, err := srv.Recv(ctx)
		recvErr <- err
	}()
	sendErr := make(chan error, 2)
	for range 2 { // nobody reads on the client side, so these block
		go func() {
			sendErr <- srv.Send(ctx, wire.Frame{Type: 1, Payload: make([]byte, 100<<10)})
		}()
	}
	time.Sleep(20 * time.Millisecond)
	srv.Close()
	if err := srv.Close(); err != nil {
		t.Errorf("second Close: got %v, want nil", err)
	}
	if err := <-recvErr; !errors.Is(err, net.ErrClosed) {
		t.Errorf("Recv after Close: got %v, want net.ErrClosed", err)
	}
	for range 2 {
		if err := <-sendErr; err == nil {
			t.Error("Send unblocked by Close: got nil error")
		}
	}
	if err := srv.Send(ctx, wire.Frame{Type: 1}); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Send after Close: got %v, want net.ErrClosed", err)
	}
}

func TestRecvContext(t *testing.T) {
	t.Parallel()
	cli, srv, _, _ := pipePair(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer cancel()
	if _, err := srv.Recv(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Recv with expiring ctx: got %v, want context.DeadlineExceeded", err)
	}
	// The channel still works after a cancelled Recv, including when the
	// cancellation cut a record in half.
	want := wire.Frame{Type: 9, Payload: bytes.Repeat([]byte{9}, 300<<10)}
	go cli.Send(context.Background(), want)
	for i := 0; ; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), time.Millisecond)
		got, err := srv.Recv(ctx)
		cancel()
		if errors.Is(err, context.DeadlineExceeded) && i < 10000 {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if got.Type != want.Type || !bytes.Equal(got.Payload, want.Payload) {
			t.Fatalf("got type %v len %d, want type %v len %d", got.Type, len(got.Payload), want.Type, len(want.Payload))
		}
		break
	}
}

// TestSendContextAbort cancels a large send part-way and checks the receiver
// drops it and still receives what follows.
func TestSendContextAbort(t *testing.T) {
	t.Parallel()
	a, b := net.Pipe()
	cli, srv, _, _ := pairOver(t, throttled{Conn: a, rate: 2 << 20}, b)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Millisecond)
	defer cancel()
	got := make(chan wire.Frame, 4)
	go func() {
		for {
			f, err := srv.Recv(context.Background())
			if err != nil {
				close(got)
				return
			}
			got <- f
		}
	}()
	err := cli.Send(ctx, wire.Frame{Type: 1, Payload: make([]byte, wire.MaxPayload)})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Send with expiring ctx: got %v, want context.DeadlineExceeded", err)
	}
	if err := cli.Send(context.Background(), wire.Frame{Type: 2, Payload: []byte("after")}); err != nil {
		t.Fatal(err)
	}
	f := <-got
	if f.Type != 2 || string(f.Payload) != "after" {
		t.Fatalf("got frame %v %q, want 2 \"after\" (the aborted frame must be dropped)", f.Type, f.Payload)
	}
}

func TestWrongRelayKey(t *testing.T) {
	t.Parallel()
	a, b := net.Pipe()
	relay, other, cliKey := mustKey(t), mustKey(t), mustKey(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	serr := make(chan error, 1)
	go func() {
		_, err := Server(ctx, b, relay)
		serr <- err
	}()
	if _, err := Client(ctx, a, cliKey, other.Public); err == nil || !strings.Contains(err.Error(), "wrong relay key") {
		t.Errorf("client handshake with the wrong relay key: got %v, want an error that suggests a wrong relay key", err)
	}
	if err := <-serr; !errors.Is(err, ErrHandshake) {
		t.Errorf("server: got %v, want ErrHandshake", err)
	}
}

// TestServerGarbage checks that a relay given garbage closes the conn
// without writing a byte.
func TestServerGarbage(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		input []byte
	}{
		{"http", []byte("GET / HTTP/1.1\r\nHost: example.com\r\n\r\n")},
		{"zero length", []byte{0, 0}},
		{"short message 1", append([]byte{0, 96}, make([]byte, 96)...)},
		{"tls hello", append([]byte{0x16, 0x03, 0x01, 0x02, 0x00}, make([]byte, 512)...)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			a, b := net.Pipe()
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			serr := make(chan error, 1)
			go func() {
				_, err := Server(ctx, b, mustKey(t))
				serr <- err
			}()
			go a.Write(tc.input)
			n, err := io.Copy(io.Discard, a) // ends when the server closes
			if n != 0 || err != nil {
				t.Errorf("server wrote %d bytes (err %v), want 0 and a close", n, err)
			}
			if err := <-serr; !errors.Is(err, ErrHandshake) && !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Errorf("Server: got %v, want ErrHandshake", err)
			}
		})
	}
}

// TestReplayedFirstMessage replays a genuine client's first message to a new
// server: the server answers but never accepts the connection.
func TestReplayedFirstMessage(t *testing.T) {
	t.Parallel()
	relay, cliKey := mustKey(t), mustKey(t)
	a, b := net.Pipe()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	go Client(ctx, a, cliKey, relay.Public)
	msg1, err := readHandshake(b, maxHandshakeMsg1)
	if err != nil {
		t.Fatal(err)
	}
	b.Close()

	x, y := net.Pipe()
	serr := make(chan error, 1)
	go func() {
		_, err := Server(ctx, y, relay)
		serr <- err
	}()
	replay := append([]byte{0, byte(len(msg1))}, msg1...)
	if _, err := x.Write(replay); err != nil {
		t.Fatal(err)
	}
	if _, err := readHandshake(x, maxHandshakeMsg2); err != nil {
		t.Fatal(err)
	}
	// The attacker cannot make the confirmation record.
	x.Write(append([]byte{0, tagLen}, make([]byte, tagLen)...))
	if err := <-serr; !errors.Is(err, ErrHandshake) {
		t.Fatalf("Server on a replayed message 1: got %v, want ErrHandshake", err)
	}
}

func TestHandshakeDeadline(t *testing.T) {
	t.Parallel()
	_, b := net.Pipe()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	_, err := Server(ctx, b, mustKey(t))
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Server with silent peer: got %v, want context.DeadlineExceeded", err)
	}
}

func TestSendTooLarge(t *testing.T) {
	t.Parallel()
	cli, _, _, _ := pipePair(t)
	err := cli.Send(context.Background(), wire.Frame{Type: 1, Payload: make([]byte, wire.MaxPayload+1)})
	if !errors.Is(err, wire.ErrTooLarge) {
		t.Fatalf("got %v, want wire.ErrTooLarge", err)
	}
}

func TestMailboxID(t *testing.T) {
	t.Parallel()
	var k [32]byte
	k[0] = 1
	if MailboxID(k) != wire.MailboxID(k) {
		t.Fatal("channel.MailboxID differs from wire.MailboxID")
	}
	if got := fmt.Sprintf("%x", MailboxID([32]byte{})); len(got) != 32 {
		t.Fatalf("mailbox id %s is not 16 bytes", got)
	}
}

// TestSendCancelStress runs many senders whose contexts end at random times
// over a slow link: every frame whose Send returned nil must arrive intact
// and exactly once, every frame that arrives must be intact, and nothing
// hangs.
func TestSendCancelStress(t *testing.T) {
	t.Parallel()
	a, b := net.Pipe()
	cli, srv, _, _ := pairOver(t, throttled{Conn: a, rate: 16 << 20}, b)
	const senders, each = 6, 15
	type key struct{ s, i byte }
	var mu sync.Mutex
	sent := map[key]bool{}
	var wg sync.WaitGroup
	for s := range senders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				n := []int{10, 5000, 40000, 200000}[(s+i)%4]
				p := bytes.Repeat([]byte{byte(s) ^ byte(i)}, n)
				p[0], p[1] = byte(s), byte(i)
				ctx, cancel := context.WithTimeout(context.Background(), time.Duration((s*7+i*3)%10)*time.Millisecond)
				err := cli.Send(ctx, wire.Frame{Type: 1, Payload: p})
				cancel()
				if err == nil {
					mu.Lock()
					sent[key{byte(s), byte(i)}] = true
					mu.Unlock()
				} else if !errors.Is(err, context.DeadlineExceeded) {
					t.Errorf("Send: %v", err)
				}
			}
		}()
	}
	got := map[key]bool{}
	recvDone := make(chan struct{})
	go func() {
		defer close(recvDone)
		for {
			f, err := srv.Recv(context.Background())
			if err != nil {
				return
			}
			k := key{f.Payload[0], f.Payload[1]}
			if got[k] {
				t.Errorf("frame %v arrived twice", k)
			}
			got[k] = true
			for _, c := range f.Payload[2:] {
				if c != k.s^k.i {
					t.Errorf("frame %v corrupted", k)
					break
				}
			}
		}
	}()
	wg.Wait()
	// Flush: one last frame on a fresh context, then hang up.
	if err := cli.Send(context.Background(), wire.Frame{Type: 2, Payload: []byte{0xff, 0xff}}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond)
	cli.Close()
	<-recvDone
	for k := range sent {
		if !got[k] {
			t.Errorf("frame %v: Send returned nil but it never arrived", k)
		}
	}
	if testing.Verbose() || len(sent) == 0 || len(sent) == senders*each {
		t.Logf("%d of %d sends completed (the test is weaker when none or all are cancelled)", len(sent), senders*each)
	}
}

// TestLogsNoKeys checks that a failed handshake is logged at debug level
// and that no key appears in the log in any common encoding.
func TestLogsNoKeys(t *testing.T) {
	t.Parallel()
	var logBuf bytes.Buffer
	var mu sync.Mutex
	log := slog.New(slog.NewTextHandler(&lockedWriter{w: &logBuf, mu: &mu}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	a, b := net.Pipe()
	relay, other, cliKey := mustKey(t), mustKey(t), mustKey(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	done := make(chan struct{})
	go func() {
		defer close(done)
		(&Config{Logger: log}).Server(ctx, b, relay)
	}()
	(&Config{Logger: log}).Client(ctx, a, cliKey, other.Public)
	<-done
	mu.Lock()
	out := logBuf.String()
	mu.Unlock()
	if !strings.Contains(out, "channel handshake failed") {
		t.Fatalf("log %q has no handshake failure", out)
	}
	for _, k := range [][32]byte{relay.Private, relay.Public, other.Public, cliKey.Private, cliKey.Public} {
		for _, enc := range []string{hex.EncodeToString(k[:]), base64.RawURLEncoding.EncodeToString(k[:]), base64.StdEncoding.EncodeToString(k[:]), fmt.Sprint(k[:])} {
			if strings.Contains(out, enc) {
				t.Fatalf("log contains a key: %q", out)
			}
		}
	}
}

type lockedWriter struct {
	w  io.Writer
	mu *sync.Mutex
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// recordingConn records the size and first bytes of each Write.
type recordingConn struct {
	net.Conn
	mu     sync.Mutex
	writes [][]byte
}

func (c *recordingConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	c.writes = append(c.writes, append([]byte(nil), p...))
	c.mu.Unlock()
	return c.Conn.Write(p)
}

// TestHandshakeSizes pins what docs/transports.md says a censor sees of
// the handshake: 98 bytes starting 00 60, 50 bytes starting 00 30, then 18
// bytes starting 00 10.
func TestHandshakeSizes(t *testing.T) {
	t.Parallel()
	a, b := net.Pipe()
	ra, rb := &recordingConn{Conn: a}, &recordingConn{Conn: b}
	pairOver(t, ra, rb)
	ra.mu.Lock()
	rb.mu.Lock()
	defer ra.mu.Unlock()
	defer rb.mu.Unlock()
	check := func(who string, w []byte, n int, prefix []byte) {
		t.Helper()
		if len(w) != n || !bytes.HasPrefix(w, prefix) {
			t.Errorf("%s wrote %d bytes starting %x, want %d starting %x", who, len(w), w[:min(2, len(w))], n, prefix)
		}
	}
	if len(ra.writes) != 2 || len(rb.writes) != 1 {
		t.Fatalf("client made %d writes and relay %d, want 2 and 1", len(ra.writes), len(rb.writes))
	}
	check("client", ra.writes[0], 98, []byte{0x00, 0x60})
	check("relay", rb.writes[0], 50, []byte{0x00, 0x30})
	check("client", ra.writes[1], 18, []byte{0x00, 0x10})
}
