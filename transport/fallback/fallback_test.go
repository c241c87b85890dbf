package fallback_test

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ferry-im/ferry/link"
	"github.com/ferry-im/ferry/transport/fallback"
)

// fakeConn is what a fake attempt makes.
type fakeConn struct {
	ep     link.Endpoint
	closed atomic.Bool
}

func (c *fakeConn) Close() error { c.closed.Store(true); return nil }

// behaviour says how the attempt to one transport goes: after delay it
// succeeds, or fails if fail; it watches its context.
type behaviour struct {
	delay time.Duration
	fail  bool
}

type fakeNet struct {
	mu      sync.Mutex
	by      map[string]behaviour
	started []string
	at      map[string]time.Duration
	made    []*fakeConn
	t0      time.Time
}

func newFake(by map[string]behaviour) *fakeNet {
	return &fakeNet{by: by, at: map[string]time.Duration{}, t0: time.Now()}
}

func (f *fakeNet) connect(ctx context.Context, ep link.Endpoint) (*fakeConn, error) {
	f.mu.Lock()
	f.started = append(f.started, ep.Transport)
	f.at[ep.Transport] = time.Since(f.t0)
	b := f.by[ep.Transport]
	f.mu.Unlock()
	select {
	case <-time.After(b.delay):
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	if b.fail {
		return nil, errors.New(ep.Transport + " blocked")
	}
	c := &fakeConn{ep: ep}
	f.mu.Lock()
	f.made = append(f.made, c)
	f.mu.Unlock()
	return c, nil
}

func eps(names ...string) []link.Endpoint {
	var out []link.Endpoint
	for _, n := range names {
		out = append(out, link.Endpoint{Transport: n, Addr: "relay.example:443"})
	}
	return out
}

func newDialer(stagger time.Duration) *fallback.Dialer {
	return fallback.New(fallback.Config{Stagger: stagger, Network: func() string { return "net-a" }})
}

// TestFirstSuccessWinsOthersCancelled: obfs, started after the stagger,
// succeeds at once, so https is never started. The stagger is 200 ms: it
// is the time a loaded machine has to schedule obfs's success.
func TestFirstSuccessWinsOthersCancelled(t *testing.T) {
	f := newFake(map[string]behaviour{"tcp": {delay: time.Hour}, "obfs": {}, "https": {delay: time.Hour}})
	d := newDialer(200 * time.Millisecond)
	c, ep, err := fallback.Race(context.Background(), d, eps("tcp", "obfs", "https"), f.connect)
	if err != nil || ep.Transport != "obfs" || c.ep.Transport != "obfs" {
		t.Fatalf("Race = %v, %v; want obfs", ep, err)
	}
	d.Close() // waits for tcp's cancelled attempt
	f.mu.Lock()
	defer f.mu.Unlock()
	if !slices.Equal(f.started, []string{"tcp", "obfs"}) {
		t.Fatalf("started %v, want [tcp obfs] (https not needed)", f.started)
	}
	if at := f.at["obfs"]; at < 190*time.Millisecond {
		t.Fatalf("second attempt started after %v, want the stagger (200ms)", at)
	}
}

func TestFailureStartsNextAtOnce(t *testing.T) {
	f := newFake(map[string]behaviour{"tcp": {delay: time.Millisecond, fail: true}, "obfs": {delay: time.Millisecond}})
	d := newDialer(time.Hour)
	_, ep, err := fallback.Race(context.Background(), d, eps("tcp", "obfs"), f.connect)
	if err != nil || ep.Transport != "obfs" {
		t.Fatalf("Race = %v, %v; want obfs without waiting for the stagger", ep, err)
	}
	d.Close()
}

// TestLateWinnerClosed: an attempt that ignores its cancellation and
// succeeds after another won is closed. The winner waits until the late
// one has started, so the race has two attempts however the machine
// schedules them.
func TestLateWinnerClosed(t *testing.T) {
	d := newDialer(time.Millisecond)
	started := make(chan struct{})
	var mu sync.Mutex // mu protects made
	var made []*fakeConn
	attempt := func(ctx context.Context, ep link.Endpoint) (*fakeConn, error) {
		switch ep.Transport {
		case "tcp": // wins once obfs is under way
			select {
			case <-started:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		case "obfs": // cancelled by tcp's win, succeeds anyway
			close(started)
			<-ctx.Done()
		}
		c := &fakeConn{ep: ep}
		mu.Lock()
		made = append(made, c)
		mu.Unlock()
		return c, nil
	}
	c, ep, err := fallback.Race(context.Background(), d, eps("tcp", "obfs"), attempt)
	if err != nil || ep.Transport != "tcp" {
		t.Fatalf("Race = %v, %v; want tcp", ep, err)
	}
	d.Close() // waits for obfs's late attempt
	mu.Lock()
	defer mu.Unlock()
	if len(made) != 2 || c.closed.Load() {
		t.Fatalf("%d conns made, the winner closed: %v; want 2 made and the winner open", len(made), c.closed.Load())
	}
	for _, m := range made {
		if m != c && !m.closed.Load() {
			t.Fatalf("the late %s conn was left open", m.ep.Transport)
		}
	}
}

func TestAllFail(t *testing.T) {
	f := newFake(map[string]behaviour{"tcp": {fail: true}, "obfs": {fail: true}})
	d := newDialer(time.Millisecond)
	_, _, err := fallback.Race(context.Background(), d, eps("tcp", "obfs"), f.connect)
	if err == nil || !errorsContain(err, "tcp blocked", "obfs blocked") {
		t.Fatalf("Race = %v, want both failures", err)
	}
	if _, _, err := fallback.Race(context.Background(), d, nil, f.connect); !errors.Is(err, fallback.ErrNoEndpoint) {
		t.Fatalf("Race with no endpoints = %v", err)
	}
}

func errorsContain(err error, subs ...string) bool {
	for _, s := range subs {
		if !strings.Contains(err.Error(), s) {
			return false
		}
	}
	return true
}

func TestCancelledContext(t *testing.T) {
	f := newFake(map[string]behaviour{"tcp": {delay: time.Hour}})
	d := newDialer(time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, _, err := fallback.Race(ctx, d, eps("tcp"), f.connect); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Race = %v, want the context's error", err)
	}
	d.Close()
	if _, ok := d.Memory().Lookup("net-a", "tcp"); ok {
		t.Fatal("a cancelled attempt was remembered as a failure")
	}
}

// TestRemembersPerNetwork: on a network where obfs worked, it goes first;
// a transport that failed goes last; another network starts from the
// link's order.
func TestRemembersPerNetwork(t *testing.T) {
	network := "net-a"
	now := time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)
	d := fallback.New(fallback.Config{Stagger: time.Millisecond, Network: func() string { return network }, Now: func() time.Time { return now }})
	f := newFake(map[string]behaviour{"tcp": {fail: true}, "obfs": {delay: time.Millisecond}, "https": {delay: time.Hour}})
	if _, ep, err := fallback.Race(context.Background(), d, eps("tcp", "obfs", "https"), f.connect); err != nil || ep.Transport != "obfs" {
		t.Fatalf("first race: %v, %v", ep, err)
	}
	d.Close()
	order := func() []string {
		var s []string
		for _, e := range d.Order(eps("tcp", "https", "obfs")) {
			s = append(s, e.Transport)
		}
		return s
	}
	if got := order(); !slices.Equal(got, []string{"obfs", "https", "tcp"}) {
		t.Fatalf("order on net-a = %v, want [obfs https tcp]", got)
	}
	d.Failed(link.Endpoint{Transport: "obfs"}, "throughput collapsed")
	if got := order(); !slices.Equal(got, []string{"https", "tcp", "obfs"}) {
		t.Fatalf("order after obfs was stopped = %v, want [https tcp obfs]", got)
	}
	network = "net-b"
	if got := order(); !slices.Equal(got, []string{"tcp", "https", "obfs"}) {
		t.Fatalf("order on a new network = %v, want the link's", got)
	}
	network = "net-a"
	now = now.Add(time.Hour)
	if got := order(); !slices.Equal(got, []string{"tcp", "https", "obfs"}) {
		t.Fatalf("order an hour later = %v, want the link's: old failures are forgotten", got)
	}
	b, err := json.Marshal(d.Memory())
	if err != nil {
		t.Fatal(err)
	}
	var m fallback.Memory
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	r, ok := m.Lookup("net-a", "obfs")
	if !ok || r.Reason != "throughput collapsed" || r.OK.IsZero() {
		t.Fatalf("memory after a JSON round trip: %+v, %v", r, ok)
	}
}

func TestNetworkKeyStable(t *testing.T) {
	a, b := fallback.NetworkKey(), fallback.NetworkKey()
	if a != b || a == "" {
		t.Fatalf("NetworkKey = %q then %q", a, b)
	}
}

func TestPreferWhenMemoryIsEmpty(t *testing.T) {
	d := fallback.New(fallback.Config{Prefer: []string{"https", "obfs"}, Network: func() string { return "n" }})
	var got []string
	for _, e := range d.Order(eps("tcp", "obfs", "quic", "https")) {
		got = append(got, e.Transport)
	}
	if want := []string{"https", "obfs", "tcp", "quic"}; !slices.Equal(got, want) {
		t.Fatalf("order = %v, want %v", got, want)
	}
	d.Failed(link.Endpoint{Transport: "https"}, "reset")
	got = got[:0]
	for _, e := range d.Order(eps("tcp", "obfs", "quic", "https")) {
		got = append(got, e.Transport)
	}
	if want := []string{"obfs", "tcp", "quic", "https"}; !slices.Equal(got, want) {
		t.Fatalf("order after https failed = %v, want %v", got, want)
	}
}
