package relay_test

import (
	"runtime"
	"testing"
	"time"

	"github.com/ferry-im/ferry/channel"
	"github.com/ferry-im/ferry/wire"
)

// TestIdleConnCost checks what an idle, authenticated, subscribed
// connection keeps in the relay: one goroutine, whose stack stays at the
// 4 KiB class (the handshake and the handlers run on goroutines of their
// own, so their deep stacks are not kept), and no timer goroutines. The
// clients here never read, so every goroutine and stack counted is the
// relay's. (Under -race, stacks are larger and only the goroutines are
// checked.)
func TestIdleConnCost(t *testing.T) {
	n := 1000 // enough that other goroutines' stacks coming and going are noise
	if raceEnabled {
		n = 200 // slow, and only the goroutines are checked
	}
	raiseFileLimit(t, uint64(2*n+200))
	r := startBenchRelay(t)
	stacks := func() uint64 {
		for range 3 {
			runtime.GC()
		}
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.StackInuse
	}
	warm := dialTCP(t, r.addr, r.key.Public, mustKey(t))
	defer warm.Close()
	roundTrip(t, warm, wire.SetToken{ReqID: 1, Token: token(1)})
	roundTrip(t, warm, wire.Subscribe{ReqID: 2})
	time.Sleep(50 * time.Millisecond) // handler goroutines leave
	g0, s0 := runtime.NumGoroutine(), stacks()
	conns := make([]*channel.Conn, n)
	for i := range conns {
		conns[i] = dialTCP(t, r.addr, r.key.Public, mustKey(t))
		roundTrip(t, conns[i], wire.SetToken{ReqID: 1, Token: token(1)})
		roundTrip(t, conns[i], wire.Subscribe{ReqID: 2})
	}
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	var goroutines int
	for end := time.Now().Add(5 * time.Second); ; {
		goroutines = runtime.NumGoroutine() - g0
		if goroutines <= n || time.Now().After(end) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if goroutines > n {
		t.Errorf("%d idle connections keep %d goroutines, want at most one each", n, goroutines)
	}
	perConn := float64(stacks()-s0) / float64(n)
	if perConn > 6<<10 && !raceEnabled {
		t.Errorf("an idle connection keeps %.0f bytes of goroutine stack, want the 4 KiB class", perConn)
	}
	t.Logf("%d goroutines and %.0f bytes of stack per idle connection", goroutines/n, perConn)
}
