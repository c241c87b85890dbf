package obfs_test

import (
	"context"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/ferry-im/ferry/censor"
	"github.com/ferry-im/ferry/transport/obfs"
	"github.com/ferry-im/ferry/transport/transporttest"
)

// recordingDialer dials TCP and keeps the first bytes written on the
// last conn: a real client's first packet, the material of replays.
type recordingDialer struct {
	mu    sync.Mutex
	first []byte
}

func (d *recordingDialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	return &recordingConn{Conn: c, d: d}, nil
}

type recordingConn struct {
	net.Conn
	d    *recordingDialer
	once sync.Once
}

func (c *recordingConn) Write(p []byte) (int, error) {
	c.once.Do(func() {
		c.d.mu.Lock()
		c.d.first = append([]byte(nil), p...)
		c.d.mu.Unlock()
	})
	return c.Conn.Write(p)
}

// TestProbeReactions sends the prober's replays (soon and later, as is and
// with bytes changed) and random probes of every published length to an
// obfs listener: every one must meet the same reaction, no bytes back and
// a FIN at the relay's hold time, whatever its length.
func TestProbeReactions(t *testing.T) {
	const hold = 1500 * time.Millisecond
	l, ep := transporttest.Serve(t, newServer(t, hold))
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(io.Discard, c); c.Close() }()
		}
	}()
	rec := &recordingDialer{}
	c, err := obfs.New(obfs.Config{NetDialer: rec}).DialContext(context.Background(), ep)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	p := &censor.Prober{ReadTimeout: 10 * time.Second, Soon: time.Millisecond, Later: 2 * time.Second, Concurrency: 64}
	rep, err := p.Probe(context.Background(), ep.Addr, rec.first)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Reactions) < 20 {
		t.Fatalf("only %d reactions", len(rep.Reactions))
	}
	for _, r := range rep.Reactions {
		// The hold runs from the relay's accept; jitter adds up to 75 ms
		// (hold/20) and a loaded machine some more.
		if r.Received != 0 || r.Close != censor.CloseFIN || r.After < hold-50*time.Millisecond || r.After > hold+time.Second {
			t.Errorf("probe %s (%d bytes sent): %d bytes back, %s after %v; want none, FIN after %v-%v",
				r.Probe, r.Sent, r.Received, r.Close, r.After, hold, hold+75*time.Millisecond)
		}
	}
	// One class: the prober's own comparison finds no difference between
	// any two reactions (each probe was accepted whole, so Sent, which is
	// the probe's length, is left out).
	first := censor.Report{Reactions: rep.Reactions[:1]}
	for _, r := range rep.Reactions[1:] {
		r.Probe, r.Sent = rep.Reactions[0].Probe, rep.Reactions[0].Sent
		if d := censor.Differ(&first, &censor.Report{Reactions: []censor.Reaction{r}}); len(d) > 0 {
			t.Errorf("reactions differ: %v", d)
		}
	}
}
