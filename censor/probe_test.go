package censor

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log"
	"math/rand/v2"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ferry-im/ferry/censor/censortest"
)

// startStockServer runs a stock net/http server (over crypto/tls with a
// certificate of its own when useTLS) serving handler.
func startStockServer(t *testing.T, handler http.Handler, useTLS bool) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: handler, ErrorLog: discardLog()}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if useTLS {
			srv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{censortest.ExampleComCert(t)}}
			srv.ServeTLS(ln, "", "")
		} else {
			srv.Serve(ln)
		}
	}()
	t.Cleanup(func() {
		srv.Close()
		<-done
	})
	return ln.Addr().String()
}

// testProber is a Prober whose waits are instant and recorded, whose
// probes are the same for every Prober made with the same seed, and whose
// probes all run at once.
func testProber(seed byte, sleeps *[]time.Duration) *Prober {
	var mu sync.Mutex
	return &Prober{
		Rand:        rand.NewChaCha8([32]byte{seed}),
		ReadTimeout: 3 * time.Second, // generous: under -race on a loaded machine a TLS handshake took over 1 s
		Concurrency: 32,
		Sleep: func(ctx context.Context, d time.Duration) error {
			if sleeps != nil {
				mu.Lock()
				*sleeps = append(*sleeps, d)
				mu.Unlock()
			}
			return ctx.Err()
		},
	}
}

// probeBoth probes two servers at once with the same probes.
func probeBoth(t *testing.T, addrA, addrB string, first []byte) (a, b *Report) {
	t.Helper()
	var errA, errB error
	var wg sync.WaitGroup
	wg.Go(func() { a, errA = testProber(1, nil).Probe(t.Context(), addrA, first) })
	wg.Go(func() { b, errB = testProber(1, nil).Probe(t.Context(), addrB, first) })
	wg.Wait()
	if err := errors.Join(errA, errB); err != nil {
		t.Fatal(err)
	}
	return a, b
}

func reaction(t *testing.T, r *Report, probe string) Reaction {
	t.Helper()
	for _, x := range r.Reactions {
		if x.Probe == probe {
			return x
		}
	}
	t.Fatalf("no reaction to %s in %v", probe, r.Reactions)
	return Reaction{}
}

// TestProberTellsApartReadLimit: a server that closes after reading 50
// bytes (the kind of read limit that gave proxies away) against one that
// reads whatever comes and never closes.
func TestProberTellsApartReadLimit(t *testing.T) {
	t.Parallel()
	closes50 := censortest.Serve(t, func(c net.Conn) {
		io.ReadFull(c, make([]byte, 50))
	})
	neverCloses := censortest.Serve(t, func(c net.Conn) {
		io.Copy(io.Discard, c)
	})
	first := make([]byte, 100)
	rand.NewChaCha8([32]byte{9}).Read(first)
	a, b := probeBoth(t, closes50, neverCloses, first)

	diffs := Differ(a, b)
	t.Logf("differences:\n%s", strings.Join(diffs, "\n"))
	if len(diffs) == 0 {
		t.Fatal("Differ found no difference")
	}
	for _, c := range []struct {
		probe string
		a, b  string
	}{
		{"random-49", CloseOpen, CloseOpen},   // too short: both wait for more
		{"random-50", CloseFIN, CloseOpen},    // exactly read: a clean close
		{"random-221", CloseRST, CloseOpen},   // unread bytes: the kernel resets
		{"replay", CloseRST, CloseOpen},       // 100 bytes
		{"replay-later", CloseRST, CloseOpen}, // and again later
	} {
		if got := reaction(t, a, c.probe).Close; got != c.a {
			t.Errorf("read-limit server, %s: %s, want %s", c.probe, got, c.a)
		}
		if got := reaction(t, b, c.probe).Close; got != c.b {
			t.Errorf("reading server, %s: %s, want %s", c.probe, got, c.b)
		}
	}
	// 4 replays soon and later, and 18 random probes.
	if len(a.Reactions) != 26 || len(diffs) != 4+4+2 {
		t.Errorf("%d reactions and %d differences, want 26 and 10", len(a.Reactions), len(diffs))
	}
}

// TestProberStockWebServers: the prober cannot tell apart two stock web
// servers. "Stock" here means the same server software and configuration
// (Go's net/http, and Go's crypto/tls in front of it) serving different
// sites: different handlers, page sizes and certificates. That is the
// collateral-damage case: a censor that blocks on these differences would
// block ordinary web sites.
func TestProberStockWebServers(t *testing.T) {
	t.Parallel()
	pageA := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, "<!doctype html><title>A</title><p>Welcome to the bakery on the corner.</p>")
	})
	pageB := http.NewServeMux()
	pageB.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		fmt.Fprint(w, "<!doctype html><title>B</title>"+strings.Repeat("<p>Timetables of the ferry to the island.</p>", 4))
	})
	t.Run("http", func(t *testing.T) {
		t.Parallel()
		first := []byte("GET / HTTP/1.1\r\nHost: example.com\r\nUser-Agent: Mozilla/5.0\r\nAccept: */*\r\n\r\n")
		a, b := probeBoth(t, startStockServer(t, pageA, false), startStockServer(t, pageB, false), first)
		if diffs := Differ(a, b); len(diffs) != 0 {
			t.Errorf("stock servers told apart:\n%s", strings.Join(diffs, "\n"))
		}
		// The probes did reach the servers: a replayed request is answered.
		if r := reaction(t, a, "replay"); r.Received == 0 || !strings.HasPrefix(string(r.Head), "HTTP/1.1 200") {
			t.Errorf("replayed request: %+v", r)
		}
	})
	t.Run("https", func(t *testing.T) {
		t.Parallel()
		a, b := probeBoth(t, startStockServer(t, pageA, true), startStockServer(t, pageB, true), chromiumHello(t))
		if diffs := Differ(a, b); len(diffs) != 0 {
			t.Errorf("stock servers told apart:\n%s", strings.Join(diffs, "\n"))
		}
		if r := reaction(t, a, "replay"); r.Received == 0 || r.Head[0] != 0x16 {
			t.Errorf("replayed ClientHello not answered with a handshake: %+v", r)
		}
	})
}

// TestProberSchedule: the replays go out after Soon and again at Later,
// waited through the injected Sleep.
func TestProberSchedule(t *testing.T) {
	t.Parallel()
	addr := censortest.Serve(t, func(c net.Conn) {})
	var sleeps []time.Duration
	p := testProber(2, &sleeps)
	p.Soon, p.Later = 2*time.Second, 3*time.Hour
	rep, err := p.Probe(t.Context(), addr, []byte("0123456789abcdefghij"))
	if err != nil {
		t.Fatal(err)
	}
	if len(sleeps) != 2 || sleeps[0] != 2*time.Second || sleeps[1] < 3*time.Hour-time.Minute || sleeps[1] > 3*time.Hour {
		t.Errorf("slept %v, want 2s then about 3h", sleeps)
	}
	var names []string
	for _, r := range rep.Reactions {
		names = append(names, r.Probe)
	}
	// A 20-byte first packet has no bytes 62-63 but a byte 0-7 to change.
	want := []string{"replay", "replay-b0", "replay-b0-7,62-63", "replay-b16"}
	for _, n := range probeRandomLengths {
		want = append(want, fmt.Sprintf("random-%d", n))
	}
	want = append(want, "replay-later", "replay-b0-later", "replay-b0-7,62-63-later", "replay-b16-later")
	if !slices.Equal(names, want) {
		t.Errorf("probes %q, want %q", names, want)
	}

	// Later < 0: no second round; no first packet: no replays.
	sleeps = nil
	p = testProber(2, &sleeps)
	p.Later = -1
	rep, err = p.Probe(t.Context(), addr, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Reactions) != len(probeRandomLengths) || len(sleeps) != 1 {
		t.Errorf("%d reactions after %d sleeps, want %d after 1", len(rep.Reactions), len(sleeps), len(probeRandomLengths))
	}
}

func TestChangeBytes(t *testing.T) {
	first := make([]byte, 70)
	for _, c := range probeReplayChanges {
		got, ok, err := changeBytes(rand.NewChaCha8([32]byte{}), first, c.offsets)
		if err != nil || !ok {
			t.Fatalf("%s: %v %v", c.name, ok, err)
		}
		var changed []int
		for i := range got {
			if got[i] != first[i] {
				changed = append(changed, i)
			}
		}
		if !slices.Equal(changed, c.offsets) {
			t.Errorf("%s: changed %v, want %v", c.name, changed, c.offsets)
		}
	}
	if _, ok, _ := changeBytes(rand.NewChaCha8([32]byte{}), first[:16], []int{16}); ok {
		t.Error("changed byte 16 of a 16-byte packet")
	}
}

// TestProberCloseKinds: FIN, RST, open, refused, and what the server sent.
func TestProberCloseKinds(t *testing.T) {
	t.Parallel()
	fin := censortest.Serve(t, func(c net.Conn) {
		io.ReadFull(c, make([]byte, 7))
		c.Write([]byte("bye"))
	})
	rst := censortest.Serve(t, func(c net.Conn) {
		io.ReadFull(c, make([]byte, 7))
		c.(*net.TCPConn).SetLinger(0)
	})
	open := censortest.Serve(t, func(c net.Conn) { io.Copy(io.Discard, c) })
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refused := ln.Addr().String()
	ln.Close()
	for _, c := range []struct {
		addr, want string
		received   int
	}{
		{fin, CloseFIN, 3},
		{rst, CloseRST, 0},
		{open, CloseOpen, 0},
		{refused, CloseRefused, 0},
	} {
		p := testProber(3, nil)
		p.ReadTimeout = time.Second
		rep, err := p.Probe(t.Context(), c.addr, nil)
		if err != nil {
			t.Fatal(err)
		}
		r := reaction(t, rep, "random-7")
		if r.Close != c.want || r.Received != c.received {
			t.Errorf("%s: %+v, want %s with %d bytes", c.want, r, c.want, c.received)
		}
		if c.want == CloseOpen && r.After < p.ReadTimeout {
			t.Errorf("open after %v, want at least ReadTimeout %v", r.After, p.ReadTimeout)
		}
	}
}

// TestProberCancel: cancelling the context ends Probe promptly, every
// connection closed and every goroutine done.
func TestProberCancel(t *testing.T) {
	t.Parallel()
	addr := censortest.Serve(t, func(c net.Conn) { io.Copy(io.Discard, c) })
	p := testProber(4, nil)
	p.ReadTimeout = time.Minute
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := p.Probe(ctx, addr, []byte("first"))
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("got %v, want the context's error", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Probe returned %v after the cancel", d)
	}
}

func TestDiffer(t *testing.T) {
	base := Reaction{Probe: "random-7", Sent: 7, Received: 100, Close: CloseFIN, After: time.Second}
	with := func(f func(*Reaction)) *Report {
		r := base
		f(&r)
		return &Report{Addr: "b", Reactions: []Reaction{r}}
	}
	a := &Report{Addr: "a", Reactions: []Reaction{base}}
	tests := []struct {
		name string
		b    *Report
		want string // "" for no difference
	}{
		{"same", with(func(r *Reaction) {}), ""},
		{"close", with(func(r *Reaction) { r.Close = CloseRST }), "random-7: ended FIN vs RST"},
		{"nothing-back", with(func(r *Reaction) { r.Received = 0 }), "random-7: received 100 vs 0 bytes"},
		{"other-page-size", with(func(r *Reaction) { r.Received = 350 }), ""},
		{"much-larger", with(func(r *Reaction) { r.Received = 401 }), "random-7: received 100 vs 401 bytes"},
		{"sent", with(func(r *Reaction) { r.Sent = 3 }), "random-7: accepted 7 vs 3 bytes"},
		{"time-close", with(func(r *Reaction) { r.After = 1900 * time.Millisecond }), ""},
		{"time-ratio", with(func(r *Reaction) { r.After = 3 * time.Millisecond }), ""},
		{"time-far", with(func(r *Reaction) { r.After = 2500 * time.Millisecond }), "random-7: FIN after 1s vs 2.5s"},
		{"time-far-long", with(func(r *Reaction) { r.After = time.Minute }), "random-7: FIN after 1s vs 1m0s"},
		{"time-open", with(func(r *Reaction) { r.Close, r.After = CloseOpen, time.Hour }), "random-7: ended FIN vs open"},
		{"missing", &Report{Addr: "b"}, "random-7: only in the report on a"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := strings.Join(Differ(a, tt.b), "\n")
			if got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
	if got := Differ(&Report{Addr: "a"}, &Report{Addr: "b", Reactions: []Reaction{base}}); !slices.Equal(got, []string{"random-7: only in the report on b"}) {
		t.Errorf("got %q", got)
	}
}

// discardLog keeps the servers' expected complaints about probes out of
// the test output.
func discardLog() *log.Logger { return log.New(io.Discard, "", 0) }

// TestProberReadLimit: the binary search finds a server's read threshold.
func TestProberReadLimit(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name  string
		limit int // the server's; 0 for none
		want  int
	}{
		{"closes-after-50", 50, 50},
		{"closes-after-1", 1, 1},
		{"closes-after-200", 200, 200},
		{"never-closes", 0, -1},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			addr := censortest.Serve(t, func(conn net.Conn) {
				if c.limit == 0 {
					io.Copy(io.Discard, conn)
					return
				}
				io.ReadFull(conn, make([]byte, c.limit))
			})
			p := testProber(5, nil)
			p.ReadTimeout = time.Second
			got, err := p.ReadLimit(t.Context(), addr, 256)
			if err != nil {
				t.Fatal(err)
			}
			if got != c.want {
				t.Errorf("ReadLimit = %d, want %d", got, c.want)
			}
		})
	}
	if _, err := testProber(5, nil).ReadLimit(t.Context(), "127.0.0.1:1", 0); err == nil {
		t.Error("limit 0: no error")
	}
}
