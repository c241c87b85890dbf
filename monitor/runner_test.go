package monitor

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// scripted is a Probe and ControlProbe that plays a script of synth codes,
// one per trial.
type scripted struct {
	mu     sync.Mutex
	script string
	i      int
	rnd    *rand.Rand
}

func (s *scripted) next() *Trial {
	s.mu.Lock()
	defer s.mu.Unlock()
	code := s.script[min(s.i, len(s.script)-1)]
	s.i++
	return synth(code, time.Now(), s.rnd)
}

func (s *scripted) Probe(ctx context.Context) Trial {
	t := s.next()
	return Trial{Outcome: Outcome{OK: t.OK, Stage: t.Stage, Failure: t.Failure, Detail: t.Detail, Transfer: t.Transfer}}
}

// memStore is a Store in memory that can be made to fail.
type memStore struct {
	mu     sync.Mutex
	trials []Trial
	events []Event
	cells  map[Cell]Assessment
	fail   error
}

func (m *memStore) AddTrial(_ context.Context, t *Trial) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.fail != nil {
		return m.fail
	}
	m.trials = append(m.trials, *t)
	return nil
}

func (m *memStore) SaveAssessment(_ context.Context, a Assessment, ended, started *Event) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.fail != nil {
		return m.fail
	}
	if m.cells == nil {
		m.cells = map[Cell]Assessment{}
	}
	m.cells[a.Cell] = a
	switch {
	case ended != nil:
		m.events[len(m.events)-1] = *ended
	case started != nil && len(m.events) > 0 && m.events[len(m.events)-1].Open():
		m.events = m.events[:len(m.events)-1]
	}
	if started != nil {
		m.events = append(m.events, *started)
	}
	return nil
}

func (m *memStore) RecentTrials(_ context.Context, c Cell, n int) ([]Trial, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]Trial(nil), m.trials[max(0, len(m.trials)-n):]...), nil
}

func (m *memStore) OpenEvent(_ context.Context, c Cell) (*Event, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.events) == 0 || !m.events[len(m.events)-1].Open() {
		return nil, nil
	}
	e := m.events[len(m.events)-1]
	return &e, nil
}

func TestRunnerEventsAndSinks(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var hooks []WebhookPayload
		client := &http.Client{Transport: roundTrip(func(r *http.Request) (*http.Response, error) {
			var p WebhookPayload
			if err := json.NewDecoder(r.Body).Decode(&p); err != nil {
				t.Errorf("decode webhook: %v", err)
			}
			hooks = append(hooks, p)
			return &http.Response{StatusCode: 204, Status: "204 No Content", Body: io.NopCloser(strings.NewReader(""))}, nil
		})}
		probe := &scripted{script: "oooooorrrrrr", rnd: rand.New(rand.NewPCG(1, 1))}
		store := &memStore{}
		metrics := NewMetrics()
		var ooni bytes.Buffer
		r, err := NewRunner(Config{
			Targets:  []Target{{Cell: testCell, Endpoint: "tcp=relay:1", Probe: probe, Control: ctlOK{}}},
			Interval: 10 * time.Second, Jitter: -1, Store: store,
			Sinks: []Sink{metrics, &OONIWriter{W: &ooni}, &Webhook{URL: "http://hooks.example/monitor", Client: client}},
		})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(t.Context(), 115*time.Second)
		defer cancel()
		r.Run(ctx)
		if len(store.trials) != 12 {
			t.Fatalf("got %d trials, want 12", len(store.trials))
		}
		var states []string
		for _, e := range store.events {
			states = append(states, string(e.State))
		}
		if got, want := strings.Join(states, ","), "ok,blocked"; got != want {
			t.Fatalf("events %s, want %s", got, want)
		}
		if store.events[0].End != store.events[1].Start || !store.events[1].Open() {
			t.Errorf("events do not follow each other: %+v", store.events)
		}
		if len(hooks) != 3 || hooks[2].Event.State != StateBlocked || hooks[2].Previous.State != StateOK || hooks[1].Previous != nil {
			t.Errorf("webhooks: %+v", hooks)
		}
		if got := metricValue(t, metrics.state.WithLabelValues(labels(testCell, "blocked")...)); got != 1 {
			t.Errorf("blocked gauge %v, want 1", got)
		}
		if got := metricValue(t, metrics.trials.WithLabelValues(labels(testCell, "failed", "handshake", FailureConnReset)...)); got != 6 {
			t.Errorf("failed trials counter %v, want 6", got)
		}
		checkOONILines(t, ooni.String(), 12)
	})
}

type ctlOK struct{}

func (ctlOK) Control(context.Context, bool) Control {
	return Control{Target: "ref", Outcome: Outcome{OK: true, Transfer: Transfer{Bytes: 5e6, Time: time.Second}}}
}

func checkOONILines(t *testing.T, s string, n int) {
	t.Helper()
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) != n {
		t.Fatalf("got %d OONI lines, want %d", len(lines), n)
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(lines[n-1]), &m); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"data_format_version", "measurement_start_time", "probe_asn", "probe_cc", "report_id", "software_name", "test_keys", "test_name", "test_runtime", "test_start_time", "input"} {
		if _, ok := m[k]; !ok {
			t.Errorf("measurement lacks %q", k)
		}
	}
	tk := m["test_keys"].(map[string]any)
	if tk["failure"] != FailureConnReset || tk["failed_operation"] != "handshake" || tk["success"] != false {
		t.Errorf("test_keys %v", tk)
	}
	if cell := tk["cell"].(map[string]any); cell["state"] != "blocked" || cell["mechanism"] != "reset" {
		t.Errorf("cell status %v", cell)
	}
}

func TestRunnerSurvivesFullDisk(t *testing.T) {
	// A history that cannot be written (a full disk) leaves the monitor
	// running, classifying and counting the errors.
	synctest.Test(t, func(t *testing.T) {
		probe := &scripted{script: "oooooorrrrrr", rnd: rand.New(rand.NewPCG(1, 1))}
		store := &memStore{fail: errors.New("database or disk is full (13)")}
		metrics := NewMetrics()
		var logs bytes.Buffer
		r, err := NewRunner(Config{
			Targets:  []Target{{Cell: testCell, Probe: probe}},
			Interval: 10 * time.Second, Jitter: -1, Store: store, Sinks: []Sink{metrics},
			Logger: slogTo(&logs),
		})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(t.Context(), 115*time.Second)
		defer cancel()
		r.Run(ctx)
		if a := r.Assessments()[0]; a.State != StateBlocked {
			t.Errorf("state %s, want blocked", a.State)
		}
		if got := metricValue(t, metrics.storeErrors); got != 24 {
			t.Errorf("store errors %v, want 24 (a trial and an assessment per trial)", got)
		}
		if !strings.Contains(logs.String(), "disk is full") {
			t.Errorf("the error was not logged: %s", logs.String())
		}
	})
}

func TestRunnerRestore(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		store := &memStore{}
		run := func(script string, d time.Duration) *Runner {
			probe := &scripted{script: script, rnd: rand.New(rand.NewPCG(1, 1))}
			r, err := NewRunner(Config{Targets: []Target{{Cell: testCell, Probe: probe}}, Interval: 10 * time.Second, Jitter: -1, Store: store})
			if err != nil {
				t.Fatal(err)
			}
			if err := r.Restore(t.Context()); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(t.Context(), d)
			defer cancel()
			r.Run(ctx)
			return r
		}
		first := run("oorrrrr", 65*time.Second)
		blockedSince := first.Assessments()[0].Since
		second := run("r", 25*time.Second)
		a := second.Assessments()[0]
		if a.State != StateBlocked || !a.Since.Equal(blockedSince) {
			t.Errorf("after restart: %s since %v, want blocked since %v", a.State, a.Since, blockedSince)
		}
		if n := len(store.events); n != 2 {
			t.Errorf("%d events after a restart in the same state, want 2", n)
		}
	})
}

func slogTo(w io.Writer) *slog.Logger { return slog.New(slog.NewTextHandler(w, nil)) }

// metricValue returns the value of a counter or gauge.
func metricValue(t *testing.T, m prometheus.Metric) float64 {
	t.Helper()
	var d dto.Metric
	if err := m.Write(&d); err != nil {
		t.Fatal(err)
	}
	switch {
	case d.Counter != nil:
		return d.Counter.GetValue()
	case d.Gauge != nil:
		return d.Gauge.GetValue()
	}
	t.Fatalf("metric %v is neither a counter nor a gauge", m.Desc())
	return 0
}

// roundTrip is an in-process http.RoundTripper (no socket may be used
// inside a synctest bubble).
type roundTrip func(*http.Request) (*http.Response, error)

func (f roundTrip) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// ctlUnreachable is a control whose site cannot be reached.
type ctlUnreachable struct{}

func (ctlUnreachable) Control(context.Context, bool) Control {
	var c Control
	c.Target = "https://www.example.com/"
	c.FailWith(StageDNS, FailureDNSNXDomain, "lookup www.example.com: no such host")
	return c
}

func TestRunnerSiblingEvidence(t *testing.T) {
	// With the control unreachable, tcp failing every time reads blocked
	// (drop) while https to the same relay works, and unknown, with the
	// control's failure, when nothing else reaches the relay.
	synctest.Test(t, func(t *testing.T) {
		cell := func(tr string) Cell { return Cell{Vantage: "v", Relay: "r", Feature: FeatureText, Transport: tr} }
		tcp := Target{Cell: cell("tcp"), Endpoint: "tcp=r:1", Probe: &scripted{script: "d", rnd: rand.New(rand.NewPCG(1, 1))}, Control: ctlUnreachable{}}
		https := Target{Cell: cell("https"), Endpoint: "https=r:443", Probe: &scripted{script: "o", rnd: rand.New(rand.NewPCG(1, 2))}, Control: ctlUnreachable{}}
		for _, tc := range []struct {
			name    string
			targets []Target
			want    string
			says    []string
		}{
			{"https works", []Target{tcp, https}, "blocked(drop)", []string{"control unreachable: dns dns_nxdomain_error", "https to the same relay worked"}},
			{"alone", []Target{tcp}, "unknown()", []string{"control unreachable: dns dns_nxdomain_error"}},
		} {
			store := &memStore{}
			r, err := NewRunner(Config{Targets: tc.targets, Interval: 5 * time.Minute, Store: store, Rand: rand.NewChaCha8([32]byte{2})})
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(t.Context(), 100*time.Minute)
			r.Run(ctx)
			cancel()
			a := r.Assessments()[0]
			if got := fmt.Sprintf("%s(%s)", a.State, a.Mechanism); got != tc.want {
				t.Errorf("%s: tcp reads %s, want %s (%s)", tc.name, got, tc.want, a.Evidence)
			}
			for _, s := range tc.says {
				if !strings.Contains(a.Evidence, s) {
					t.Errorf("%s: evidence %q does not say %q", tc.name, a.Evidence, s)
				}
			}
			for _, e := range store.events {
				if e.Cell.Transport == "tcp" && e.State == StateIntermittent {
					t.Errorf("%s: tcp read intermittent: %s", tc.name, e.Evidence)
				}
			}
		}
	})
}

func TestMetricsMediaCells(t *testing.T) {
	// Media cells are exported like text's: their trials by stage and
	// failure, their throughput and their state.
	m := NewMetrics()
	put := Cell{Vantage: "v", Relay: "r", Feature: FeatureMediaPut, Transport: "tcp"}
	get := Cell{Vantage: "v", Relay: "r", Feature: FeatureMediaGet, Transport: "obfs"}
	ok := &Trial{Cell: put, Outcome: Outcome{OK: true, Runtime: 6 * time.Second, Transfer: Transfer{Bytes: 100_000, Time: 5714 * time.Millisecond}}}
	failed := &Trial{Cell: get}
	failed.FailWith(StageMediaGet, FailureTimeout, "no answer to BlobGet within 30s")
	m.Trial(t.Context(), ok, Assessment{Cell: put, State: StateThrottled, Mechanism: MechThrottle})
	m.Trial(t.Context(), failed, Assessment{Cell: get, State: StateUnknown})
	if got := metricValue(t, m.throughput.WithLabelValues(labels(put)...)); math.Abs(got-140000) > 1000 {
		t.Errorf("media_put throughput %v bit/s, want 140000", got)
	}
	if got := metricValue(t, m.state.WithLabelValues(labels(put, "throttled")...)); got != 1 {
		t.Errorf("media_put throttled gauge %v, want 1", got)
	}
	if got := metricValue(t, m.trials.WithLabelValues(labels(get, "failed", "media_get", FailureTimeout)...)); got != 1 {
		t.Errorf("media_get failed trials %v, want 1", got)
	}
}
