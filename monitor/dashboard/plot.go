package dashboard

import (
	"fmt"
	"html/template"
	"math"
	"strings"
	"time"

	"github.com/ferry-im/ferry/monitor"
)

// Colours of the states, shared by the matrix and the plots.
var stateColor = map[monitor.State]string{
	monitor.StateOK:           "#2e9d4e",
	monitor.StateDegraded:     "#b5a631",
	monitor.StateThrottled:    "#e08a1e",
	monitor.StateIntermittent: "#c463c9",
	monitor.StateBlocked:      "#d23c3c",
	monitor.StateUnknown:      "#8c8c8c",
}

// Plot geometry, in SVG user units.
const (
	plotW, plotH     = 720.0, 170.0
	marginL, marginR = 64.0, 12.0
	bandY, bandH     = 6.0, 14.0
	areaY, areaH     = 28.0, 112.0
	axisY            = areaY + areaH
	// The throughput axis is log10 of kbit/s, from 1 kbit/s to 10 Gbit/s.
	logMin, logMax = 0.0, 7.0
)

// plot renders one cell's trials and events over [from, to) as an SVG
// time series: a band of the states on top; below, each successful
// trial at its sustained rate (log scale; at the top when it was not
// measurable) and each failed trial as a cross on the axis, with its
// stage and failure in its tooltip.
func plot(trials []monitor.Trial, events []monitor.Event, from, to time.Time) template.HTML {
	var b strings.Builder
	fmt.Fprintf(&b, `<svg class="plot" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 %.0f %.0f" width="%.0f" height="%.0f" role="img">`, plotW, plotH, plotW, plotH)
	span := to.Sub(from)
	if span <= 0 {
		span = time.Second
	}
	x := func(t time.Time) float64 {
		f := float64(t.Sub(from)) / float64(span)
		return marginL + math.Max(0, math.Min(1, f))*(plotW-marginL-marginR)
	}
	for _, e := range events {
		end := e.End
		if end.IsZero() || end.After(to) {
			end = to
		}
		x0, x1 := x(e.Start), x(end)
		fmt.Fprintf(&b, `<rect x="%.1f" y="%.0f" width="%.1f" height="%.0f" fill="%s"><title>%s</title></rect>`,
			x0, bandY, math.Max(1, x1-x0), bandH, stateColor[e.State], template.HTMLEscapeString(eventTitle(e)))
	}
	axes(&b, from, to, x)
	for _, t := range trials {
		trialMark(&b, t, x(t.Start))
	}
	b.WriteString(`</svg>`)
	return template.HTML(b.String())
}

func eventTitle(e monitor.Event) string {
	s := string(e.State)
	if e.Mechanism != monitor.MechNone {
		s += " (" + string(e.Mechanism) + ")"
	}
	s += " from " + e.Start.UTC().Format(time.RFC3339)
	if !e.End.IsZero() {
		s += " to " + e.End.UTC().Format(time.RFC3339)
	}
	return s + ": " + e.Evidence
}

// rateY maps a rate in bytes per second to the plot's y.
func rateY(r float64) float64 {
	kbps := r * 8 / 1000
	l := (math.Log10(math.Max(kbps, 1)) - logMin) / (logMax - logMin)
	return axisY - math.Max(0, math.Min(1, l))*areaH
}

func axes(b *strings.Builder, from, to time.Time, x func(time.Time) float64) {
	fmt.Fprintf(b, `<line x1="%.0f" y1="%.0f" x2="%.0f" y2="%.0f" stroke="#444"/>`, marginL, axisY, plotW-marginR, axisY)
	for _, tick := range []struct {
		kbps  float64
		label string
	}{{1, "1k"}, {100, "100k"}, {10000, "10M"}, {1000000, "1G"}} {
		y := rateY(tick.kbps * 1000 / 8)
		fmt.Fprintf(b, `<line x1="%.0f" y1="%.1f" x2="%.0f" y2="%.1f" stroke="#ddd"/><text x="%.0f" y="%.1f" font-size="10" text-anchor="end">%s</text>`,
			marginL, y, plotW-marginR, y, marginL-4, y+3, tick.label)
	}
	fmt.Fprintf(b, `<text x="4" y="%.0f" font-size="10">bit/s</text>`, areaY+8)
	span := to.Sub(from)
	for i := 0; i <= 4; i++ {
		t := from.Add(span * time.Duration(i) / 4)
		layout := "15:04"
		if span > 48*time.Hour {
			layout = "01-02 15:04"
		}
		fmt.Fprintf(b, `<text x="%.1f" y="%.0f" font-size="10" text-anchor="middle">%s</text>`, x(t), axisY+14, t.UTC().Format(layout))
	}
}

func trialMark(b *strings.Builder, t monitor.Trial, x float64) {
	title := template.HTMLEscapeString(t.Start.UTC().Format(time.RFC3339) + " " + t.Summary())
	if !t.OK {
		y := axisY + 22
		fmt.Fprintf(b, `<path class="fail" d="M%.1f %.1fl6 6m0 -6l-6 6" stroke="%s" stroke-width="1.5"><title>%s</title></path>`, x-3, y-3, stateColor[monitor.StateBlocked], title)
		return
	}
	y := areaY + 2
	if r := t.Transfer.Rate(); r > 0 && !math.IsInf(r, 1) {
		y = rateY(r)
	}
	fmt.Fprintf(b, `<circle class="ok" cx="%.1f" cy="%.1f" r="2.5" fill="%s"><title>%s</title></circle>`, x, y, stateColor[monitor.StateOK], title)
}
