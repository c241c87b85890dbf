package relay

import (
	"net"
	"testing"
	"time"
)

func TestLimiter(t *testing.T) {
	t.Parallel()
	now := time.Unix(1000, 0)
	l := newLimiter(2, 3, func() time.Time { return now })
	for i := range 3 {
		if !l.allow("a") {
			t.Fatalf("request %d within the burst refused", i)
		}
	}
	if l.allow("a") {
		t.Fatal("request past the burst allowed")
	}
	if !l.allow("b") {
		t.Fatal("another key shares a's bucket")
	}
	now = now.Add(500 * time.Millisecond) // one token back at 2/s
	if !l.allow("a") {
		t.Fatal("refill after 0.5s at 2/s gave no token")
	}
	if l.allow("a") {
		t.Fatal("refill gave more than one token")
	}
	now = now.Add(time.Hour)
	for i := range 3 {
		if !l.allow("a") {
			t.Fatalf("after an hour, request %d refused: the bucket holds more than burst?", i)
		}
	}
	if l.allow("a") {
		t.Fatal("a long idle time filled the bucket past its burst")
	}
}

func TestLimiterSweep(t *testing.T) {
	t.Parallel()
	now := time.Unix(1000, 0)
	l := newLimiter(1, 2, func() time.Time { return now })
	l.allow("busy")
	l.allow("busy")
	l.allow("idle")
	now = now.Add(1500 * time.Millisecond) // idle is full again, busy is not
	l.sweep()
	if got := l.size(); got != 1 {
		t.Fatalf("after sweep %d buckets remain, want 1 (busy)", got)
	}
	// busy has 1.5 tokens: one more request, not two.
	first := l.allow("busy")
	second := l.allow("busy")
	if !first || second {
		t.Fatalf("busy after sweep allowed %v then %v, want true then false", first, second)
	}
}

func TestLimiterDisabled(t *testing.T) {
	t.Parallel()
	l := newLimiter(0, 0, time.Now)
	for range 100 {
		if !l.allow("x") {
			t.Fatal("a limiter with rate 0 refused a request")
		}
	}
	if l.size() != 0 {
		t.Fatal("a disabled limiter keeps buckets")
	}
}

type strAddr string

func (a strAddr) Network() string { return "pipe" }
func (a strAddr) String() string  { return string(a) }

func TestAddrKey(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		addr net.Addr
		want string
	}{
		{"ipv4", &net.TCPAddr{IP: net.ParseIP("192.0.2.9"), Port: 5}, "192.0.2.9"},
		{"ipv4 port ignored", &net.TCPAddr{IP: net.ParseIP("192.0.2.9"), Port: 6}, "192.0.2.9"},
		{"ipv4-mapped", &net.TCPAddr{IP: net.ParseIP("::ffff:192.0.2.9"), Port: 5}, "192.0.2.9"},
		{"ipv6 /64", &net.TCPAddr{IP: net.ParseIP("2001:db8:a:b:c:d:e:f"), Port: 5}, "2001:db8:a:b::/64"},
		{"not ip", strAddr("pipe"), "pipe:pipe"},
		{"nil", nil, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := addrKey(tt.addr); got != tt.want {
				t.Errorf("addrKey(%v) = %q, want %q", tt.addr, got, tt.want)
			}
		})
	}
}

func TestLimiterAllowN(t *testing.T) {
	t.Parallel()
	now := time.Unix(1000, 0)
	l := newLimiter(10, 10, func() time.Time { return now })
	if !l.allowN("a", 6) || l.allowN("a", 6) {
		t.Fatal("two costs of 6 from a burst of 10: want the first only")
	}
	if !l.allowN("a", 4) {
		t.Fatal("cost 4 with 4 tokens left refused")
	}
	now = now.Add(time.Second)
	if !l.allowN("a", 100) {
		t.Fatal("a cost over the burst must be charged as the burst once the bucket is full")
	}
}
