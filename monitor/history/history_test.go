package history

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/ferry-im/ferry/monitor"
)

var cell = monitor.Cell{Vantage: "v", Relay: "r", Feature: monitor.FeatureText, Transport: "tcp"}

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func open(t *testing.T) *DB {
	t.Helper()
	d, err := Open(context.Background(), filepath.Join(t.TempDir(), FileName))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

// feed classifies trials made by ok(i) at 10 s intervals through a
// Runner writing to d, and returns the runner.
func feed(t *testing.T, d *DB, n int, ok func(i int) bool, from time.Time) *monitor.Runner {
	t.Helper()
	r, err := monitor.NewRunner(monitor.Config{Targets: []monitor.Target{{Cell: cell, Probe: nopProbe{}}}, Store: d})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Restore(context.Background()); err != nil {
		t.Fatal(err)
	}
	for i := range n {
		tr := &monitor.Trial{Cell: cell, Endpoint: "tcp=r:1", Outcome: monitor.Outcome{Start: from.Add(time.Duration(i) * 10 * time.Second), Runtime: time.Second, OK: true}}
		if !ok(i) {
			tr.FailWith(monitor.StageHandshake, monitor.FailureConnReset, "reset")
		}
		if _, err := r.Observe(context.Background(), tr); err != nil {
			t.Fatal(err)
		}
	}
	return r
}

type nopProbe struct{}

func (nopProbe) Probe(context.Context) monitor.Trial {
	return monitor.Trial{Outcome: monitor.Outcome{OK: true}}
}

func TestHistoryRoundTrip(t *testing.T) {
	ctx := context.Background()
	d := open(t)
	feed(t, d, 12, func(i int) bool { return i < 6 }, t0)
	cells, err := d.Cells(ctx)
	if err != nil || len(cells) != 1 {
		t.Fatalf("cells: %v, %v", cells, err)
	}
	if a := cells[0]; a.State != monitor.StateBlocked || a.Mechanism != monitor.MechReset || !a.Since.Equal(t0.Add(60*time.Second)) {
		t.Errorf("cell: %+v", a)
	}
	trials, err := d.Trials(ctx, cell, t0, t0.Add(time.Hour), 0)
	if err != nil || len(trials) != 12 || !trials[0].Start.Equal(t0) {
		t.Fatalf("trials: %d, %v", len(trials), err)
	}
	last, err := d.Trials(ctx, monitor.Cell{}, t0, t0.Add(time.Hour), 3)
	if err != nil || len(last) != 3 || !last[2].Start.Equal(t0.Add(110*time.Second)) || last[0].Start.After(last[1].Start) {
		t.Fatalf("last 3 trials: %+v, %v", last, err)
	}
	evs, err := d.Events(ctx, cell, t0, t0.Add(time.Hour))
	if err != nil || len(evs) != 2 {
		t.Fatalf("events: %+v, %v", evs, err)
	}
	for i, want := range []monitor.State{monitor.StateOK, monitor.StateBlocked} {
		if evs[i].State != want {
			t.Errorf("event %d: %s, want %s", i, evs[i].State, want)
		}
	}
	if !evs[0].End.Equal(evs[1].Start) || !evs[1].Open() {
		t.Errorf("events do not join: %+v", evs)
	}
	if inRange, _ := d.Events(ctx, cell, t0.Add(100*time.Second), t0.Add(time.Hour)); len(inRange) != 1 {
		t.Errorf("events overlapping the last 20 minutes: %d, want 1", len(inRange))
	}
}

func TestHistoryRestoreKeepsSince(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), FileName)
	d, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	feed(t, d, 10, func(i int) bool { return i < 4 }, t0)
	d.Close()
	d, err = OpenExisting(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	r := feed(t, d, 2, func(int) bool { return false }, t0.Add(time.Hour))
	if a := r.Assessments()[0]; a.State != monitor.StateBlocked || !a.Since.Equal(t0.Add(40*time.Second)) {
		t.Errorf("after reopening: %s since %v, want blocked since %v", a.State, a.Since, t0.Add(40*time.Second))
	}
	evs, _ := d.Events(ctx, cell, t0, t0.Add(2*time.Hour))
	if len(evs) != 2 || !evs[1].Open() {
		t.Errorf("events after reopening: %+v", evs)
	}
}

func TestOpenExistingMissing(t *testing.T) {
	_, err := OpenExisting(context.Background(), filepath.Join(t.TempDir(), FileName))
	if !errors.Is(err, ErrNoHistory) {
		t.Fatalf("got %v, want ErrNoHistory", err)
	}
}

func TestHistoryFullDisk(t *testing.T) {
	// A history that runs out of room fails its writes with SQLite's
	// "database or disk is full"; the Runner keeps classifying.
	ctx := context.Background()
	d := open(t)
	d.db.SetMaxOpenConns(1)
	var pages int
	if err := d.db.QueryRowContext(ctx, `PRAGMA page_count`).Scan(&pages); err != nil {
		t.Fatal(err)
	}
	if _, err := d.db.ExecContext(ctx, fmt.Sprintf(`PRAGMA max_page_count = %d`, pages+1)); err != nil {
		t.Fatal(err)
	}
	r := feed(t, d, 300, func(i int) bool { return i < 200 }, t0)
	if a := r.Assessments()[0]; a.State != monitor.StateBlocked {
		t.Errorf("state %s with a full history, want blocked", a.State)
	}
	err := d.AddTrial(ctx, &monitor.Trial{Cell: cell, Outcome: monitor.Outcome{Start: t0, Detail: string(make([]byte, 1<<16))}})
	if err == nil {
		t.Fatal("a write to a full history succeeded")
	}
	t.Logf("full history: %v", err)
}
