package monitor

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"sync"
	"time"
)

// OONI's base data format (github.com/ooni/spec, data-formats/df-000-base.md,
// data_format_version 0.2.0): what the monitor writes, one measurement per
// trial, as JSON lines. docs/monitor.md lists the mapping field by field.
const (
	ooniDataFormatVersion = "0.2.0"
	ooniTestName          = "ferry_reachability"
	ooniTestVersion       = "0.1.0"
	ooniSoftwareName      = "ferry-monitor"
	ooniTimeLayout        = "2006-01-02 15:04:05" // UTC, OONI's layout
)

// OONIMeta is what a measurement says of the vantage point and the
// software. Zero fields take OONI's values for "not known": probe_asn
// "AS0", probe_cc "ZZ", probe_ip "127.0.0.1" (OONI never publishes it).
type OONIMeta struct {
	ProbeASN         string // "AS12345"
	ProbeCC          string // two-letter country code
	ProbeNetworkName string
	SoftwareVersion  string
	// ReportID groups the measurements of one run; OONIWriter makes one
	// from the first measurement's time when empty.
	ReportID string
}

// OONIMeasurement is one trial in OONI's base data format.
type OONIMeasurement struct {
	Annotations          map[string]string `json:"annotations"`
	DataFormatVersion    string            `json:"data_format_version"`
	Input                string            `json:"input"`
	MeasurementStartTime string            `json:"measurement_start_time"`
	ProbeASN             string            `json:"probe_asn"`
	ProbeCC              string            `json:"probe_cc"`
	ProbeIP              string            `json:"probe_ip"`
	ProbeNetworkName     string            `json:"probe_network_name"`
	ReportID             string            `json:"report_id"`
	SoftwareName         string            `json:"software_name"`
	SoftwareVersion      string            `json:"software_version"`
	TestKeys             OONITestKeys      `json:"test_keys"`
	TestName             string            `json:"test_name"`
	TestRuntime          float64           `json:"test_runtime"`
	TestStartTime        string            `json:"test_start_time"`
	TestVersion          string            `json:"test_version"`
}

// OONITestKeys are the trial's own results (OONI's test_keys), with the
// monitor's conclusion about the cell after it.
type OONITestKeys struct {
	Vantage         string         `json:"vantage"`
	Relay           string         `json:"relay"`
	Feature         string         `json:"feature"`
	Transport       string         `json:"transport"`
	Success         bool           `json:"success"`
	Failure         *string        `json:"failure"`
	FailedOperation *string        `json:"failed_operation"`
	Stage           string         `json:"stage,omitempty"`
	Steps           []Step         `json:"steps,omitempty"`
	TransferBytes   int64          `json:"transfer_bytes,omitempty"`
	ThroughputBPS   *float64       `json:"throughput_bps"`
	Controls        []OONIControl  `json:"controls"`
	Siblings        []Sibling      `json:"siblings,omitempty"`
	Verdict         OONICellStatus `json:"cell"`
}

// OONIControl is one control of a trial.
type OONIControl struct {
	When          string   `json:"when"` // "pre" or "post"
	Target        string   `json:"target"`
	Failure       *string  `json:"failure"`
	Stage         string   `json:"stage,omitempty"`
	Runtime       float64  `json:"runtime"`
	ThroughputBPS *float64 `json:"throughput_bps"`
}

// OONICellStatus is the cell's state after the trial.
type OONICellStatus struct {
	State      State     `json:"state"`
	Mechanism  Mechanism `json:"mechanism"`
	Since      string    `json:"since"`
	Confidence float64   `json:"confidence"`
}

// failedOperation maps a stage to the operation name OONI's probes write
// in failed_operation (Ferry's own stages keep their names).
var failedOperation = map[Stage]string{
	StageDNS:     "resolve",
	StageConnect: "connect",
	StageTLS:     "tls_handshake",
	StageHTTP:    "http_round_trip",
}

// NewOONIMeasurement returns t, with a the assessment it led to, in
// OONI's base data format.
func NewOONIMeasurement(t *Trial, a Assessment, meta OONIMeta) OONIMeasurement {
	m := OONIMeasurement{
		Annotations:          map[string]string{"ferry_cell": t.Cell.String(), "ferry_endpoint": t.Endpoint},
		DataFormatVersion:    ooniDataFormatVersion,
		Input:                t.Endpoint,
		MeasurementStartTime: t.Start.UTC().Format(ooniTimeLayout),
		ProbeASN:             orString(meta.ProbeASN, "AS0"),
		ProbeCC:              orString(meta.ProbeCC, "ZZ"),
		ProbeIP:              "127.0.0.1",
		ProbeNetworkName:     meta.ProbeNetworkName,
		ReportID:             meta.ReportID,
		SoftwareName:         ooniSoftwareName,
		SoftwareVersion:      orString(meta.SoftwareVersion, "dev"),
		TestName:             ooniTestName,
		TestRuntime:          t.Runtime.Seconds(),
		TestStartTime:        t.Start.UTC().Format(ooniTimeLayout),
		TestVersion:          ooniTestVersion,
	}
	k := OONITestKeys{
		Vantage: t.Vantage, Relay: t.Relay, Feature: t.Feature, Transport: t.Transport,
		Success: t.OK, Steps: t.Steps, TransferBytes: t.Transfer.Bytes,
		ThroughputBPS: finiteRate(t.Transfer), Controls: []OONIControl{}, Siblings: t.Siblings,
		Verdict: OONICellStatus{State: a.State, Mechanism: a.Mechanism, Confidence: a.Confidence},
	}
	if !a.Since.IsZero() {
		k.Verdict.Since = a.Since.UTC().Format(time.RFC3339Nano)
	}
	if !t.OK {
		k.Failure, k.Stage = &t.Failure, string(t.Stage)
		op := string(t.Stage)
		if o, ok := failedOperation[t.Stage]; ok {
			op = o
		}
		k.FailedOperation = &op
	}
	for _, c := range []struct {
		when string
		c    *Control
	}{{"pre", t.Pre}, {"post", t.Post}} {
		if c.c == nil {
			continue
		}
		oc := OONIControl{When: c.when, Target: c.c.Target, Runtime: c.c.Runtime.Seconds(), ThroughputBPS: finiteRate(c.c.Transfer)}
		if !c.c.OK {
			oc.Failure, oc.Stage = &c.c.Failure, string(c.c.Stage)
		}
		k.Controls = append(k.Controls, oc)
	}
	m.TestKeys = k
	return m
}

// finiteRate returns the transfer's rate in bits per second, or nil when
// it was not measured or took no measurable time.
func finiteRate(t Transfer) *float64 {
	r := t.Rate()
	if r == 0 || math.IsInf(r, 1) {
		return nil
	}
	bps := r * 8
	return &bps
}

func orString(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// OONIWriter is a Sink that writes each trial to W as one line of JSON in
// OONI's base data format. It is safe for concurrent use.
type OONIWriter struct {
	W    io.Writer
	Meta OONIMeta

	mu  sync.Mutex // mu protects the fields below and writes to W
	err error
}

var _ Sink = (*OONIWriter)(nil)

// Trial writes the trial's measurement.
func (w *OONIWriter) Trial(_ context.Context, t *Trial, a Assessment) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.Meta.ReportID == "" {
		w.Meta.ReportID = fmt.Sprintf("%s_%s_ferry", t.Start.UTC().Format("20060102T150405Z"), orString(w.Meta.ProbeASN, "AS0"))
	}
	b, err := json.Marshal(NewOONIMeasurement(t, a, w.Meta))
	if err == nil {
		_, err = w.W.Write(append(b, '\n'))
	}
	if err != nil && w.err == nil {
		w.err = fmt.Errorf("write measurement: %w", err)
	}
}

// Change does nothing: changes are in the measurements' "cell" keys.
func (w *OONIWriter) Change(context.Context, *Event, Event) {}

// Err returns the first write error, if any.
func (w *OONIWriter) Err() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.err
}
