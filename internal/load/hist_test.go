package load

import (
	"testing"
	"time"
)

func TestHistBuckets(t *testing.T) {
	for _, d := range []time.Duration{0, time.Microsecond, 31 * time.Microsecond, 32 * time.Microsecond,
		33 * time.Microsecond, time.Millisecond, 1234567 * time.Microsecond, 10 * time.Second} {
		b := bucketOf(d)
		lo, hi := lowOf(b), lowOf(b+1)
		if d < lo || d >= hi && d >= time.Microsecond {
			t.Errorf("%v in bucket %d = [%v, %v)", d, b, lo, hi)
		}
		if d >= 32*time.Microsecond && float64(hi-lo) > 0.035*float64(lo) {
			t.Errorf("bucket %d = [%v, %v) is wider than 3.5%%", b, lo, hi)
		}
	}
}

func TestHistQuantile(t *testing.T) {
	var a, b Hist
	for i := 1; i <= 900; i++ {
		a.Add(time.Millisecond)
	}
	for i := 1; i <= 100; i++ {
		b.Add(100 * time.Millisecond)
	}
	a.Merge(b)
	if a.N != 1000 {
		t.Fatalf("N = %d, want 1000", a.N)
	}
	near := func(got, want time.Duration) bool { return got <= want && float64(got) >= 0.96*float64(want) }
	if got := a.Quantile(0.5); !near(got, time.Millisecond) {
		t.Errorf("p50 = %v, want about 1ms", got)
	}
	if got := a.Quantile(0.99); !near(got, 100*time.Millisecond) {
		t.Errorf("p99 = %v, want about 100ms", got)
	}
	var empty Hist
	if got := empty.Quantile(0.5); got != 0 {
		t.Errorf("p50 of nothing = %v", got)
	}
}
