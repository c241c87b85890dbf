package censor

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// chanListener hands net/http the connections a test routes to it.
type chanListener struct {
	addr  net.Addr
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
}

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *chanListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *chanListener) Addr() net.Addr { return l.addr }

// flippingServer is a stock web server until flip is set, and from then
// on a server that reads 50 bytes and closes: a server that gives itself
// away only to the later round of probes.
func flippingServer(t *testing.T, flip *atomic.Bool) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cl := &chanListener{addr: ln.Addr(), conns: make(chan net.Conn), done: make(chan struct{})}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, refPage)
	})}
	var wg sync.WaitGroup
	wg.Go(func() { _ = srv.Serve(cl) })
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			if !flip.Load() {
				select {
				case cl.conns <- c:
				case <-cl.done:
					c.Close()
				}
				continue
			}
			wg.Go(func() {
				defer c.Close()
				_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
				_, _ = io.ReadFull(c, make([]byte, 50))
			})
		}
	})
	t.Cleanup(func() {
		ln.Close()
		srv.Close()
		wg.Wait()
	})
	return ln.Addr().String()
}

// TestProbeLaterRound checks the second round of probes, an hour later on
// the engine's clock: a server that passed the first round is blocked
// when it reacts unlike the reference in the second.
func TestProbeLaterRound(t *testing.T) {
	var flip atomic.Bool
	server := flippingServer(t, &flip)
	ref := stockWebServer(t)
	clock := &FakeClock{}
	blocked := make(chan Verdict, 1)
	e := &Engine{
		Policy: mustPolicy(t, `{"name":"p","rules":[{"name":"probe","probe":{"later":"1h","reference":"`+ref+`"}}]}`),
		Rand:   seeded(50),
		Clock:  clock,
		Prober: &Prober{
			ReadTimeout: 500 * time.Millisecond,
			Concurrency: 2,
			Sleep: func(ctx context.Context, d time.Duration) error {
				if d > time.Minute {
					flip.Store(true) // the server changes before the later round
				}
				return clock.Sleep(ctx, d)
			},
		},
		OnBlock: func(_ netip.AddrPort, v Verdict) { blocked <- v },
	}
	defer e.Close()
	sp := netip.MustParseAddrPort(server)
	start := clock.Now()
	if v := inspect(e, clientN(1), sp, suspicious(seeded(51))[:300]); v.Action != Pass {
		t.Fatalf("the triggering flow: %+v, want pass", v)
	}
	select {
	case v := <-blocked:
		if !strings.Contains(v.Evidence, "probe round 2") || v.Action != Drop {
			t.Errorf("block %+v, want a drop after round 2", v)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("no block within 60 s")
	}
	if el := clock.Now().Sub(start); el < time.Hour {
		t.Errorf("blocked after %v on the censor's clock, want the later round (1 h)", el)
	}
	if v := e.Admit(clientN(2).Addr(), sp); v.Action != Drop || v.Rule != "probe" {
		t.Errorf("another client after the block: %+v, want drop by probe", v)
	}
}

// TestProbeIgnoresInnocentFlows checks that only random-looking first
// packets trigger probing.
func TestProbeIgnoresInnocentFlows(t *testing.T) {
	e := &Engine{Policy: mustLoad(t, "probing"), Rand: seeded(52), Clock: &FakeClock{}}
	defer e.Close()
	for i, first := range [][]byte{
		[]byte("GET / HTTP/1.1\r\n\r\n"),
		goClientHello(t, "example.com"),
		[]byte("SSH-2.0-OpenSSH_9.6\r\n"),
		withPopcount(seeded(53), 300, 2),
	} {
		inspect(e, clientN(i), testServer, first)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if ev := e.rules[0].(*probeEval); len(ev.servers) != 0 {
		t.Errorf("probing started for %d servers, want none", len(ev.servers))
	}
}
