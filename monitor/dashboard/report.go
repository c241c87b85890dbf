package dashboard

import (
	"context"
	"encoding/csv"
	"fmt"
	"io"
	"math"
	"strconv"
	"time"

	"github.com/ferry-im/ferry/monitor"
)

// Report writes the dashboard page for [from, to) as one self-contained
// HTML file (no script, no reload, no link out).
func Report(ctx context.Context, w io.Writer, src Source, from, to time.Time) error {
	p, err := build(ctx, Config{Source: src, MaxTrials: math.MaxInt32}, from, to)
	if err != nil {
		return fmt.Errorf("write report: %w", err)
	}
	if err := pageTemplate.Execute(w, p); err != nil {
		return fmt.Errorf("write report: %w", err)
	}
	return nil
}

// CSVHeader is the first line of CSV: one column per field of a trial.
var CSVHeader = []string{
	"start", "vantage", "relay", "feature", "transport", "endpoint", "ok", "stage", "failure",
	"runtime_s", "transfer_bytes", "throughput_bps", "pre_control_ok", "post_control_ok",
	"control_throughput_bps", "state", "mechanism",
}

// CSV writes every trial of [from, to), oldest first, with the state its
// cell was in when it started.
func CSV(ctx context.Context, w io.Writer, src Source, from, to time.Time) error {
	cw := csv.NewWriter(w)
	cw.Write(CSVHeader)
	cells, err := src.Cells(ctx)
	if err != nil {
		return fmt.Errorf("write csv: %w", err)
	}
	for _, a := range cells {
		ts, err := src.Trials(ctx, a.Cell, from, to, 0)
		if err != nil {
			return fmt.Errorf("write csv: %w", err)
		}
		es, err := src.Events(ctx, a.Cell, from, to)
		if err != nil {
			return fmt.Errorf("write csv: %w", err)
		}
		for _, t := range ts {
			cw.Write(csvRow(t, stateAt(es, t.Start)))
		}
	}
	cw.Flush()
	if err := cw.Error(); err != nil {
		return fmt.Errorf("write csv: %w", err)
	}
	return nil
}

// stateAt returns the event in effect at t (after the trial that started
// at t, since a trial can start an event), or a zero event.
func stateAt(es []monitor.Event, t time.Time) monitor.Event {
	var cur monitor.Event
	for _, e := range es {
		if !e.Start.After(t) {
			cur = e
		}
	}
	return cur
}

func csvRow(t monitor.Trial, e monitor.Event) []string {
	ctl := func(c *monitor.Control) string {
		if c == nil {
			return ""
		}
		return strconv.FormatBool(c.OK)
	}
	ctlRate := ""
	for _, c := range []*monitor.Control{t.Pre, t.Post} {
		if c != nil && c.Transfer.Measured() {
			ctlRate = rate(c.Transfer)
		}
	}
	return []string{
		t.Start.UTC().Format(time.RFC3339Nano), t.Vantage, t.Relay, t.Feature, t.Transport, t.Endpoint,
		strconv.FormatBool(t.OK), string(t.Stage), t.Failure,
		strconv.FormatFloat(t.Runtime.Seconds(), 'f', 3, 64), strconv.FormatInt(t.Transfer.Bytes, 10), rate(t.Transfer),
		ctl(t.Pre), ctl(t.Post), ctlRate, string(e.State), string(e.Mechanism),
	}
}

// rate formats a transfer's rate in bits per second: empty when not
// measured, "inf" when it took no measurable time.
func rate(t monitor.Transfer) string {
	r := t.Rate()
	switch {
	case r == 0:
		return ""
	case math.IsInf(r, 1):
		return "inf"
	}
	return strconv.FormatFloat(8*r, 'f', 0, 64)
}
