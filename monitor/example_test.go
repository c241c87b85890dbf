package monitor_test

import (
	"fmt"
	"time"

	"github.com/ferry-im/ferry/monitor"
)

// A cell's trials go through a classifier one by one: two successes make
// it ok; a run of resets with passing controls, spanning 30 seconds, makes
// it blocked by resets, since the first of them.
func ExampleClassifier() {
	cell := monitor.Cell{Vantage: "home-isp", Relay: "relay.example:443", Feature: monitor.FeatureText, Transport: "tcp"}
	c := monitor.NewClassifier(cell, monitor.Thresholds{})
	start := time.Date(2026, 12, 1, 8, 0, 0, 0, time.UTC)
	control := &monitor.Control{Target: "https://www.example.com/", Outcome: monitor.Outcome{OK: true}}
	for i, ok := range []bool{true, true, false, false, false, false} {
		t := &monitor.Trial{Cell: cell, Outcome: monitor.Outcome{Start: start.Add(time.Duration(i) * 10 * time.Second), OK: true}, Pre: control, Post: control}
		if !ok {
			t.FailWith(monitor.StageHandshake, monitor.FailureConnReset, "connection reset by peer")
		}
		a, changed := c.Observe(t)
		if changed {
			fmt.Printf("%s: %s %s since %s\n", t.Start.Format("15:04:05"), a.State, a.Mechanism, a.Since.Format("15:04:05"))
		}
	}
	// Output:
	// 08:00:10: ok  since 08:00:00
	// 08:00:50: blocked reset since 08:00:20
}
