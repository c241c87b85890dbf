package probe

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/ferry-im/ferry/monitor"
)

// testSizes keep the media trials small in tests.
var testSizes = []int64{20_000, 100_000}

// mediaProbe returns a MediaProbe of the testbed's relay over one
// transport, uploading (get false) or downloading.
func (tb *testbed) mediaProbe(t *testing.T, name string, get bool, budget ...time.Duration) *MediaProbe {
	tr, _ := transportByName(name)
	cfg := MediaConfig{Dir: t.TempDir(), Relay: tb.link1(name), Transport: tr, NetDialer: tb, Get: get, Sizes: testSizes}
	if len(budget) > 0 {
		cfg.Budget = budget[0]
	}
	p, err := NewMediaProbe(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func stepNames(tr monitor.Trial) string {
	var names []string
	for _, s := range tr.Steps {
		names = append(names, s.Name)
	}
	return strings.Join(names, ",")
}

func TestMediaProbeOpen(t *testing.T) {
	for _, name := range []string{"tcp", "https", "obfs"} {
		t.Run(name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				tb := newTestbed(t)
				defer tb.close()
				put := tb.mediaProbe(t, name, false)
				for range 2 {
					tr := put.Probe(t.Context())
					if !tr.OK || !tr.Transfer.Measured() {
						t.Fatalf("put: %s (%s), transfer %+v", tr.Summary(), tr.Detail, tr.Transfer)
					}
					if got := stepNames(tr); !strings.HasSuffix(got, "connect,put 20KB,put 100KB") {
						t.Errorf("put steps %s", got)
					}
				}
				get := tb.mediaProbe(t, name, true)
				tr := get.Probe(t.Context())
				if got, want := stepNames(tr), "register,connect,upload 20KB,get 20KB,upload 100KB,get 100KB"; !tr.OK || got != want {
					t.Fatalf("first get: %s (%s), steps %s, want %s", tr.Summary(), tr.Detail, got, want)
				}
				tr = get.Probe(t.Context())
				if got, want := stepNames(tr), "connect,get 20KB,get 100KB"; !tr.OK || got != want || !tr.Transfer.Measured() {
					t.Fatalf("second get: %s (%s), steps %s, want %s (the blobs kept)", tr.Summary(), tr.Detail, got, want)
				}
			})
		})
	}
}

func TestMediaProbeThrottled(t *testing.T) {
	// Under a 140 kbit/s throttle each way, both directions measure it.
	for _, get := range []bool{false, true} {
		synctest.Test(t, func(t *testing.T) {
			tb := newTestbed(t)
			defer tb.close()
			p := tb.mediaProbe(t, "tcp", get)
			if tr := p.Probe(t.Context()); !tr.OK {
				t.Fatalf("under open: %s (%s)", tr.Summary(), tr.Detail)
			}
			tb.setPolicy("throttle", 1)
			tr := p.Probe(t.Context())
			if !tr.OK {
				t.Fatalf("get=%v under throttle: %s (%s)", get, tr.Summary(), tr.Detail)
			}
			if r := tr.Transfer.Rate(); r < 140000/8*0.8 || r > 140000/8*1.25 {
				t.Fatalf("get=%v: rate %s under a 140 kbit/s throttle", get, monitor.FormatRate(r))
			}
		})
	}
}

func TestMediaProbeBudget(t *testing.T) {
	// Under a 140 kbit/s throttle, a size that cannot finish within the
	// budget at the rate the first measured is skipped; one that the
	// budget stops anyway leaves the rate to the sizes before it.
	tests := []struct {
		name   string
		budget time.Duration
		sizes  []int64
		steps  string
		detail string
	}{
		{"skipped", 8 * time.Second, []int64{100_000, 200_000}, "put 100KB", "200KB and larger skipped"},
		// 20 KB fit in the burst allowance: their rate promises 100 KB
		// within the budget, which the throttle then stops.
		{"cut", 3 * time.Second, []int64{20_000, 100_000}, "put 20KB,put 100KB (cut by budget)", "put 100KB stopped"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				tb := newTestbed(t)
				defer tb.close()
				tb.setPolicy("throttle", 1)
				tr, _ := transportByName("tcp")
				p, err := NewMediaProbe(MediaConfig{Dir: t.TempDir(), Relay: tb.link1("tcp"), Transport: tr, NetDialer: tb, Sizes: tt.sizes, Budget: tt.budget})
				if err != nil {
					t.Fatal(err)
				}
				trial := p.Probe(t.Context())
				if !trial.OK || !strings.Contains(trial.Detail, tt.detail) || !strings.HasSuffix(stepNames(trial), tt.steps) {
					t.Fatalf("trial %s (%s), steps %s; want ok, %q, steps ...%s", trial.Summary(), trial.Detail, stepNames(trial), tt.detail, tt.steps)
				}
				if r := trial.Transfer.Rate(); tt.name == "skipped" && (r < 140000/8*0.8 || r > 140000/8*1.3) || !trial.Transfer.Measured() {
					t.Fatalf("rate %s under a 140 kbit/s throttle", monitor.FormatRate(r))
				}
			})
		})
	}
}

func TestMediaProbeFailures(t *testing.T) {
	t.Run("blocked", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			tb := newTestbed(t)
			defer tb.close()
			tb.setPolicy("tls-gate", 1)
			tr := tb.mediaProbe(t, "tcp", false).Probe(t.Context())
			if tr.OK || tr.Stage != monitor.StageHandshake || tr.Failure != monitor.FailureConnReset {
				t.Fatalf("under tls-gate: %s (%s)", tr.Summary(), tr.Detail)
			}
		})
	})
	t.Run("too slow for the budget", func(t *testing.T) {
		// The first size stopped by the budget leaves no rate: the
		// trial fails at the transfer's stage.
		synctest.Test(t, func(t *testing.T) {
			tb := newTestbed(t)
			defer tb.close()
			tb.setPolicy("throttle", 1)
			tr, _ := transportByName("tcp")
			p, err := NewMediaProbe(MediaConfig{Dir: t.TempDir(), Relay: tb.link1("tcp"), Transport: tr, NetDialer: tb, Sizes: []int64{100_000}, Budget: 2 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			trial := p.Probe(t.Context())
			if trial.OK || trial.Stage != monitor.StageMediaPut || trial.Failure != monitor.FailureTimeout {
				t.Fatalf("trial %s (%s), want a timeout at media_put", trial.Summary(), trial.Detail)
			}
		})
	})
	t.Run("no blob store", func(t *testing.T) {
		// A relay that keeps no attachments refuses them: a failure a
		// censor does not cause, which the monitor reads as unknown.
		synctest.Test(t, func(t *testing.T) {
			tb := newTestbed(t)
			defer tb.close()
			tb.noBlobs = true
			tb.startRelay()
			for _, get := range []bool{false, true} {
				p := tb.mediaProbe(t, "tcp", get)
				cls := monitor.NewClassifier(monitor.Cell{Feature: monitor.FeatureMediaPut, Transport: "tcp"}, monitor.Thresholds{})
				var a monitor.Assessment
				for range 3 {
					tr := p.Probe(t.Context())
					if tr.OK || tr.Stage != monitor.StageMediaPut || tr.Failure != monitor.FailureRelay {
						t.Fatalf("get=%v: %s (%s), want ferry_relay_error at media_put", get, tr.Summary(), tr.Detail)
					}
					a, _ = cls.Observe(&tr)
				}
				if a.State != monitor.StateUnknown || !strings.Contains(a.Evidence, "blob store") {
					t.Errorf("get=%v: %s (%s), want unknown", get, a.State, a.Evidence)
				}
			}
		})
	})
	t.Run("lost blob", func(t *testing.T) {
		// A download of a blob the relay no longer has uploads it again.
		synctest.Test(t, func(t *testing.T) {
			tb := newTestbed(t)
			defer tb.close()
			p := tb.mediaProbe(t, "tcp", true)
			if tr := p.Probe(t.Context()); !tr.OK {
				t.Fatalf("first: %s (%s)", tr.Summary(), tr.Detail)
			}
			path := filepath.Join(p.cfg.Dir, "media.json")
			b, _ := os.ReadFile(path)
			var st mediaState
			if err := json.Unmarshal(b, &st); err != nil {
				t.Fatal(err)
			}
			bl := st.Blobs["20KB"]
			bl.Key[0] ^= 1 // a blob the relay never had
			st.Blobs["20KB"] = bl
			b, _ = json.Marshal(st)
			os.WriteFile(path, b, 0o600)
			tr := p.Probe(t.Context())
			if got, want := stepNames(tr), "connect,get 20KB,upload 20KB,get 20KB,get 100KB"; !tr.OK || got != want {
				t.Fatalf("trial %s (%s), steps %s, want %s", tr.Summary(), tr.Detail, got, want)
			}
		})
	})
}

func TestParseSize(t *testing.T) {
	tests := []struct {
		in   string
		want int64
	}{
		{"100KB", 100_000}, {"1MB", 1_000_000}, {"10mb", 10_000_000}, {"64KiB", 65536}, {"1500", 1500},
		{"0", 0}, {"-1MB", 0}, {"ten", 0}, {"", 0},
	}
	for _, tt := range tests {
		got, err := ParseSize(tt.in)
		if tt.want == 0 {
			if err == nil {
				t.Errorf("%q: got %d, want an error", tt.in, got)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("%q: got %d, %v, want %d", tt.in, got, err, tt.want)
		}
		if back, _ := ParseSize(FormatSize(got)); back != got {
			t.Errorf("%q: FormatSize %s does not parse back", tt.in, FormatSize(got))
		}
	}
}
