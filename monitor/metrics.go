package monitor

import (
	"context"
	"math"
	"net/http"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metrics is a Sink that exports the monitor's state to Prometheus, on its
// own registry (never the global one). Every series carries the cell's
// labels: vantage, relay, feature, transport.
type Metrics struct {
	reg         *prometheus.Registry
	trials      *prometheus.CounterVec   // cell, result, stage, failure
	controls    *prometheus.CounterVec   // cell, result
	state       *prometheus.GaugeVec     // cell, state: 1 for the current state, 0 for the others
	mechanism   *prometheus.GaugeVec     // cell, mechanism: 1 for the current one
	confidence  *prometheus.GaugeVec     // cell
	since       *prometheus.GaugeVec     // cell
	successRate *prometheus.GaugeVec     // cell
	runtime     *prometheus.HistogramVec // cell
	throughput  *prometheus.GaugeVec     // cell
	events      *prometheus.CounterVec   // cell, state
	storeErrors prometheus.Counter
}

var (
	_ Sink = (*Metrics)(nil)

	cellLabels = []string{"vantage", "relay", "feature", "transport"}
)

// NewMetrics returns the monitor's collectors on a new registry.
func NewMetrics() *Metrics {
	with := func(extra ...string) []string { return append(append([]string{}, cellLabels...), extra...) }
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		trials: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ferry_monitor_trials_total",
			Help: "Trials by result (ok, failed), failed stage and OONI failure (unknown failures as \"unknown_failure\").",
		}, with("result", "stage", "failure")),
		controls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ferry_monitor_controls_total",
			Help: "Controls (reference site through the same path) by result.",
		}, with("result")),
		state: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "ferry_monitor_state",
			Help: "1 for the cell's current state, 0 for the others.",
		}, with("state")),
		mechanism: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "ferry_monitor_mechanism",
			Help: "1 for the mechanism of the cell's current state (\"none\" when it has none).",
		}, with("mechanism")),
		confidence: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "ferry_monitor_confidence",
			Help: "Confidence in the cell's current state, 0 to 1.",
		}, cellLabels),
		since: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "ferry_monitor_state_since_seconds",
			Help: "Unix time at which the cell's current state began.",
		}, cellLabels),
		successRate: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "ferry_monitor_success_ratio",
			Help: "Share of the cell's recent trials that succeeded.",
		}, cellLabels),
		runtime: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "ferry_monitor_trial_seconds",
			Help:    "Runtime of trials, successful or not.",
			Buckets: prometheus.ExponentialBuckets(0.05, 2, 12),
		}, cellLabels),
		throughput: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "ferry_monitor_throughput_bits_per_second",
			Help: "Sustained rate of the cell's latest measured transfer.",
		}, cellLabels),
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ferry_monitor_state_changes_total",
			Help: "Changes of state, by the state entered.",
		}, with("state")),
		storeErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ferry_monitor_store_errors_total",
			Help: "Writes to the history that failed (a full disk, for one).",
		}),
	}
	m.reg.MustRegister(m.trials, m.controls, m.state, m.mechanism, m.confidence, m.since,
		m.successRate, m.runtime, m.throughput, m.events, m.storeErrors)
	return m
}

// Registry returns the registry the collectors are on.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Handler serves the metrics in Prometheus's text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}

func labels(c Cell, extra ...string) []string {
	return append([]string{c.Vantage, c.Relay, c.Feature, c.Transport}, extra...)
}

// Trial counts the trial and sets the cell's gauges.
func (m *Metrics) Trial(_ context.Context, t *Trial, a Assessment) {
	result, failure := "ok", ""
	if !t.OK {
		result, failure = "failed", t.Failure
		if strings.HasPrefix(failure, FailureUnknownPrefix) {
			failure = "unknown_failure"
		}
	}
	m.trials.WithLabelValues(labels(t.Cell, result, string(t.Stage), failure)...).Inc()
	for _, c := range []*Control{t.Pre, t.Post} {
		if c != nil {
			r := "ok"
			if !c.OK {
				r = "failed"
			}
			m.controls.WithLabelValues(labels(t.Cell, r)...).Inc()
		}
	}
	m.runtime.WithLabelValues(labels(t.Cell)...).Observe(t.Runtime.Seconds())
	if r := t.Transfer.Rate(); r > 0 && !math.IsInf(r, 1) {
		m.throughput.WithLabelValues(labels(t.Cell)...).Set(8 * r)
	}
	m.SetAssessment(a)
}

// SetAssessment sets the gauges of a's cell: its state, mechanism,
// confidence, success ratio and since when.
func (m *Metrics) SetAssessment(a Assessment) {
	for _, s := range States {
		v := 0.0
		if s == a.State {
			v = 1
		}
		m.state.WithLabelValues(labels(a.Cell, string(s))...).Set(v)
	}
	for _, mech := range []Mechanism{MechNone, MechReset, MechDrop, MechClose, MechTLS, MechThrottle} {
		v := 0.0
		if mech == a.Mechanism {
			v = 1
		}
		name := string(mech)
		if mech == MechNone {
			name = "none"
		}
		m.mechanism.WithLabelValues(labels(a.Cell, name)...).Set(v)
	}
	m.confidence.WithLabelValues(labels(a.Cell)...).Set(a.Confidence)
	m.successRate.WithLabelValues(labels(a.Cell)...).Set(a.SuccessRate)
	if !a.Since.IsZero() {
		m.since.WithLabelValues(labels(a.Cell)...).Set(float64(a.Since.UnixNano()) / 1e9)
	}
}

// Change counts the change.
func (m *Metrics) Change(_ context.Context, _ *Event, started Event) {
	m.events.WithLabelValues(labels(started.Cell, string(started.State))...).Inc()
}

// StoreError counts a failed write to the history.
func (m *Metrics) StoreError(error) { m.storeErrors.Inc() }
