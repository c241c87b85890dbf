package https

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/ferry-im/ferry/censor"
	"github.com/ferry-im/ferry/transport/transporttest"
)

// recordTap is a TCP proxy that records the TLS records of both
// directions, as the censor's middlebox sees them.
type recordTap struct {
	start time.Time
	mu    sync.Mutex // mu protects recs
	recs  []censor.TLSRecord
}

func startTap(t *testing.T, upstream string) (string, *recordTap) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tap := &recordTap{start: time.Now()}
	var wg sync.WaitGroup
	wg.Go(func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		u, err := net.Dial("tcp", upstream)
		if err != nil {
			c.Close()
			return
		}
		wg.Go(func() { tap.copy(u, c, censor.Up); u.Close() })
		tap.copy(c, u, censor.Down)
		c.Close()
	})
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	return ln.Addr().String(), tap
}

func (tap *recordTap) copy(dst, src net.Conn, dir censor.Direction) {
	var sc censor.RecordScanner
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			tap.mu.Lock()
			tap.recs, _ = sc.Scan(tap.recs, buf[:n], dir, time.Since(tap.start))
			tap.mu.Unlock()
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func (tap *recordTap) records() []censor.TLSRecord {
	tap.mu.Lock()
	defer tap.mu.Unlock()
	return append([]censor.TLSRecord(nil), tap.recs...)
}

// channelExchange plays the channel's opening over a tunnel: Noise IK's
// 98-byte first message, the relay's 50-byte answer, the client's 18-byte
// first record, then a few small frames each way.
func channelExchange(t *testing.T, c, s net.Conn) {
	t.Helper()
	steps := []struct {
		from, to net.Conn
		n        int
	}{{c, s, 98}, {s, c, 50}, {c, s, 18}, {c, s, 60}, {s, c, 40}, {c, s, 33}, {s, c, 120}}
	for _, st := range steps {
		st.from.SetDeadline(time.Now().Add(10 * time.Second))
		st.to.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := st.from.Write(make([]byte, st.n)); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(st.to, make([]byte, st.n)); err != nil {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond) // round trips, as over a network
	}
}

// tunnelRecords opens an https tunnel through a recording tap, plays the
// channel's opening and returns the TLS records the censor saw.
func tunnelRecords(t *testing.T, unshaped bool) []censor.TLSRecord {
	t.Helper()
	s, _ := testServer(t, ServerConfig{})
	s.unshaped = unshaped
	ln, ep := transporttest.Serve(t, s)
	addr, tap := startTap(t, ep.Addr)
	ep.Addr = addr
	d := New(Config{})
	d.unshaped = unshaped
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	c, err := d.DialContext(ctx, ep)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	channelExchange(t, c, srv)
	c.Close()
	srv.Close()
	return tap.records()
}

// tlsTunnelRecords plays the same opening over plain crypto/tls: a naive
// TLS tunnel, which the classifier must flag.
func tlsTunnelRecords(t *testing.T) []censor.TLSRecord {
	t.Helper()
	_, cert := testServer(t, ServerConfig{})
	ln := tls.NewListener(mustListen(t), &tls.Config{Certificates: []tls.Certificate{cert}})
	addr, tap := startTap(t, ln.Addr().String())
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err == nil && c.(*tls.Conn).Handshake() == nil {
			accepted <- c
		}
		close(accepted)
	}()
	c, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	srv := <-accepted
	if srv == nil {
		t.Fatal("accept failed")
	}
	channelExchange(t, c, srv)
	c.Close()
	srv.Close()
	ln.Close()
	return tap.records()
}

func mustListen(t *testing.T) net.Listener {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// appSizes lists the sizes of the first n application-data records in
// direction dir after the outer handshake: after the client's Finished
// (its first encrypted record) and, for the relay, after the session
// tickets it sends before the client's next record.
func appSizes(recs []censor.TLSRecord, dir censor.Direction, n int) []int {
	var out []int
	clientRecs := 0
	for _, r := range recs {
		if r.Type != 23 {
			continue
		}
		if r.Dir == censor.Up {
			clientRecs++
		}
		if clientRecs < 1 || (r.Dir == censor.Up && clientRecs == 1) || (r.Dir == censor.Down && clientRecs < 2) {
			continue
		}
		if r.Dir == dir && len(out) < n {
			out = append(out, r.Len)
		}
	}
	return out
}

// The record sizes of the channel's fixed first messages inside an
// unshaped tunnel: Noise message 1 (98 bytes) and the relay's answer (50),
// each in a DATA frame (9 bytes) in a TLS 1.3 record (17 bytes).
const (
	fixedClientRecord = 98 + 9 + 17
	fixedRelayRecord  = 50 + 9 + 17
)

// TestTLSInTLS: the censor's TLS-in-TLS classifier (Xue et al. 2024, as
// censor.TLSInTLS plays it) flags the channel's opening carried in a plain
// TLS tunnel but not in the https transport; and the records of the
// channel's fixed-size handshake messages, there in every unshaped tunnel,
// are never among the first ten records each way of a shaped one.
func TestTLSInTLS(t *testing.T) {
	if ev, flagged := censor.TLSInTLS(tlsTunnelRecords(t)); !flagged {
		t.Fatalf("the classifier does not flag a plain TLS tunnel (%s): this test cannot fail", ev)
	}
	for i := range 3 {
		recs := tunnelRecords(t, false)
		if ev, flagged := censor.TLSInTLS(recs); flagged {
			t.Errorf("the classifier flags the https transport: %s", ev)
		}
		up, down := appSizes(recs, censor.Up, 10), appSizes(recs, censor.Down, 10)
		if slices.Contains(up, fixedClientRecord) || slices.Contains(down, fixedRelayRecord) {
			t.Errorf("shaped tunnel %d shows the channel's fixed sizes: client %v, relay %v", i, up, down)
		}
		uup, udown := appSizes(tunnelRecords(t, true), censor.Up, 10), appSizes(tunnelRecords(t, true), censor.Down, 10)
		if !slices.Contains(uup, fixedClientRecord) || !slices.Contains(udown, fixedRelayRecord) {
			t.Errorf("unshaped, the fixed sizes do not show (client %v, relay %v): the comparison shows nothing", uup, udown)
		}
		t.Logf("first records: shaped client %v relay %v; unshaped client %v relay %v", up, down, uup, udown)
	}
}
