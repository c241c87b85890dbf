package censor

import (
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

func TestEngineZeroValuePasses(t *testing.T) {
	var e Engine
	defer e.Close()
	if v := e.Admit(clientN(1).Addr(), testServer); v.Action != Pass {
		t.Errorf("Admit = %+v, want pass", v)
	}
	if v := inspect(&e, clientN(1), testServer, randomBytes(seeded(1), 1000)); v.Action != Pass {
		t.Errorf("Inspect = %+v, want pass", v)
	}
	if err := e.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func TestEngineInvalidPolicyFailsClosed(t *testing.T) {
	e := &Engine{Policy: &Policy{Name: "bad", Rules: []RuleSpec{{FET: &FETRule{Probability: 2}}}}}
	if err := e.Check(); err == nil {
		t.Fatal("Check accepted an invalid policy")
	}
	if v := e.Admit(clientN(1).Addr(), testServer); v.Action != Reset || v.Rule != "policy" {
		t.Errorf("Admit under an invalid policy = %+v, want reset by policy", v)
	}
}

func TestEngineBoundedState(t *testing.T) {
	clock := &FakeClock{}
	e := &Engine{Policy: mustPolicy(t, `{"name":"p1","rules":[{"fet":{"probability":1}}]}`), Rand: seeded(30), Clock: clock, MaxEntries: 100}
	r := seeded(31)
	for i := range 1000 {
		inspect(e, clientN(i), testServer, suspicious(r))
		clock.Advance(time.Millisecond)
	}
	if n := e.blocked(); n > 100 {
		t.Errorf("%d blocks held, want at most MaxEntries (100)", n)
	}
	// The newest blocks are kept.
	if v := e.Admit(clientN(999).Addr(), testServer); v.Action != Drop {
		t.Errorf("newest block: %+v, want drop", v)
	}
	if v := e.Admit(clientN(0).Addr(), testServer); v.Action != Pass {
		t.Errorf("oldest block: %+v, want evicted", v)
	}
}

func TestEngineConcurrent(t *testing.T) {
	e := &Engine{Policy: mustLoad(t, "whatsapp-2017-09"), Rand: seeded(32), Clock: &FakeClock{}}
	defer e.Close()
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			r := seeded(uint64(100 + g))
			for i := range 200 {
				c := clientN(g*1000 + i)
				if v := e.Admit(c.Addr(), testServer); v.Action != Pass && v.Action != Drop {
					t.Errorf("Admit = %+v", v)
				}
				v := inspect(e, c, testServer, randomBytes(r, 100))
				e.Disrupt(v)
			}
		})
	}
	wg.Wait()
}

// BenchmarkInspect measures first-packet rule evaluations per second.
func BenchmarkInspect(b *testing.B) {
	for _, bc := range []struct {
		name, policy string
		first        func(b *testing.B) []byte
	}{
		{"fet-2021/random-1000B", "fet-2021", func(*testing.B) []byte { return randomBytes(seeded(40), 1000) }},
		{"whatsapp-2017-09/random-1000B", "whatsapp-2017-09", func(*testing.B) []byte { return randomBytes(seeded(41), 1000) }},
		{"tls-gate/chromium-hello", "tls-gate", func(b *testing.B) []byte { return capturedHello(b) }},
		{"whatsapp-2017-07/chromium-hello", "whatsapp-2017-07", func(b *testing.B) []byte { return capturedHello(b) }},
	} {
		b.Run(bc.name, func(b *testing.B) {
			e := &Engine{Policy: mustLoad(b, bc.policy), Rand: seeded(42), Clock: &FakeClock{}}
			first := bc.first(b)
			b.ReportAllocs()
			b.SetBytes(int64(len(first)))
			i := 0
			for b.Loop() {
				i++
				c := clientN(i % 50000)
				e.Admit(c.Addr(), testServer)
				inspect(e, c, testServer, first)
			}
		})
	}
}

// BenchmarkMiddleboxForward measures bulk throughput through the
// middlebox on loopback, one flow, client to server, under the open
// policy and under fet-2021 (whose verdict on an exempt first packet is
// pass).
func BenchmarkMiddleboxForward(b *testing.B) {
	for _, policy := range []string{"open", "fet-2021"} {
		b.Run(policy, func(b *testing.B) {
			up := startUpstream(b, "", false)
			addr, _ := startMiddlebox(b, &Middlebox{Upstream: up.addr, Policy: mustLoad(b, policy), Log: io.Discard})
			c := dialFrom(b, "127.0.0.20", addr)
			chunk := make([]byte, 1<<20)
			copy(chunk, "GET / HTTP/1.1\r\n\r\n")
			b.SetBytes(int64(len(chunk)))
			for b.Loop() {
				if _, err := c.Write(chunk); err != nil {
					b.Fatal(err)
				}
			}
			_ = c.CloseWrite()
			want := int64(b.N) * int64(len(chunk))
			for up.received.Load() < want {
				time.Sleep(time.Millisecond)
			}
		})
	}
}

// BenchmarkDirectForward is the baseline: the same transfer without the
// middlebox.
func BenchmarkDirectForward(b *testing.B) {
	up := startUpstream(b, "", false)
	c, err := net.Dial("tcp", up.addr)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	chunk := make([]byte, 1<<20)
	b.SetBytes(int64(len(chunk)))
	for b.Loop() {
		if _, err := c.Write(chunk); err != nil {
			b.Fatal(err)
		}
	}
}
