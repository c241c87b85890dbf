// Package dashboard shows the monitor's history to people: an HTTP
// handler with the matrix of every cell's current state and a time-series
// plot per cell (server-side SVG: no script and no network at run time),
// the same data as JSON, and a report that writes the page as one
// self-contained HTML file and the trials as CSV.
//
// It is not the history: it reads a Source (monitor/history implements
// it) and never writes.
package dashboard

import (
	"context"
	"encoding/json"
	"fmt"
	"html/template"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/ferry-im/ferry/monitor"
)

// Source is what the dashboard reads; *history.DB is one.
type Source interface {
	Cells(ctx context.Context) ([]monitor.Assessment, error)
	Trials(ctx context.Context, c monitor.Cell, from, to time.Time, limit int) ([]monitor.Trial, error)
	Events(ctx context.Context, c monitor.Cell, from, to time.Time) ([]monitor.Event, error)
}

// Config configures the Handler. Source is required.
type Config struct {
	Source Source
	// Metrics, if not nil, is served at /metrics.
	Metrics http.Handler
	// Window is how far back the plots go. Default 24 hours.
	Window time.Duration
	// MaxTrials bounds the trials plotted per cell (the latest). Default
	// 2,000.
	MaxTrials int
	// Refresh is how often the page reloads itself. Default 30 seconds.
	Refresh time.Duration
	// Now returns the current time. If nil, time.Now is used.
	Now func() time.Time
}

func (c *Config) window() time.Duration { return orDuration(c.Window, 24*time.Hour) }
func (c *Config) now() time.Time {
	if c.Now == nil {
		return time.Now()
	}
	return c.Now()
}

func orDuration(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}

// Handler serves:
//
//	GET /              the page: the matrix and a plot per cell
//	GET /api/status    every cell's assessment, as the status command's --json
//	GET /api/trials    the trials of ?cell=vantage/relay/feature/transport (or all) since ?since=RFC3339
//	GET /api/events    likewise, the events
//	GET /metrics       Config.Metrics, when set
func Handler(cfg Config) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		p, err := build(r.Context(), cfg, cfg.now().Add(-cfg.window()), cfg.now())
		if err != nil {
			http.Error(w, "the monitor's history could not be read: "+err.Error(), http.StatusInternalServerError)
			return
		}
		p.Refresh = int(orDuration(cfg.Refresh, 30*time.Second).Seconds())
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; img-src data:")
		if err := pageTemplate.Execute(w, p); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
		}
	})
	mux.HandleFunc("GET /api/status", func(w http.ResponseWriter, r *http.Request) {
		cells, err := cfg.Source.Cells(r.Context())
		writeJSON(w, cells, err)
	})
	mux.HandleFunc("GET /api/trials", func(w http.ResponseWriter, r *http.Request) {
		c, from, err := query(r, cfg)
		if err == nil {
			var ts []monitor.Trial
			ts, err = cfg.Source.Trials(r.Context(), c, from, cfg.now().Add(time.Second), maxTrials(cfg))
			writeJSON(w, ts, err)
			return
		}
		http.Error(w, err.Error(), http.StatusBadRequest)
	})
	mux.HandleFunc("GET /api/events", func(w http.ResponseWriter, r *http.Request) {
		c, from, err := query(r, cfg)
		if err == nil {
			var es []monitor.Event
			es, err = cfg.Source.Events(r.Context(), c, from, cfg.now().Add(time.Second))
			writeJSON(w, es, err)
			return
		}
		http.Error(w, err.Error(), http.StatusBadRequest)
	})
	if cfg.Metrics != nil {
		mux.Handle("GET /metrics", cfg.Metrics)
	}
	return mux
}

func maxTrials(cfg Config) int {
	if cfg.MaxTrials <= 0 {
		return 2000
	}
	return cfg.MaxTrials
}

// query reads ?cell= and ?since=.
func query(r *http.Request, cfg Config) (monitor.Cell, time.Time, error) {
	var c monitor.Cell
	if s := r.URL.Query().Get("cell"); s != "" {
		parts := strings.Split(s, "/")
		if len(parts) != 4 {
			return c, time.Time{}, fmt.Errorf("cell %q: want vantage/relay/feature/transport", s)
		}
		c = monitor.Cell{Vantage: parts[0], Relay: parts[1], Feature: parts[2], Transport: parts[3]}
	}
	from := cfg.now().Add(-cfg.window())
	if s := r.URL.Query().Get("since"); s != "" {
		t, err := time.Parse(time.RFC3339, s)
		if err != nil {
			return c, from, fmt.Errorf("since %q: want an RFC 3339 time", s)
		}
		from = t
	}
	return c, from, nil
}

func writeJSON(w http.ResponseWriter, v any, err error) {
	if err != nil {
		http.Error(w, "the monitor's history could not be read: "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

// page is what the template shows.
type page struct {
	Generated string
	From, To  string
	Refresh   int // seconds; 0 for none (the report)
	Vantages  []vantage
	Cells     []cellView
	States    []monitor.State
	Colors    map[monitor.State]string
}

// vantage is one matrix: rows of relay and feature, columns of transports.
type vantage struct {
	Name       string
	Transports []string
	Rows       []row
}

type row struct {
	Relay, Feature string
	Cells          []*cellView // by transport; nil where there is none
}

// cellView is one cell of the matrix and its plot.
type cellView struct {
	monitor.Assessment
	ID, Color, Since string
	Plot             template.HTML
	Trials           int
}

// build reads the source and lays out the page.
func build(ctx context.Context, cfg Config, from, to time.Time) (*page, error) {
	cells, err := cfg.Source.Cells(ctx)
	if err != nil {
		return nil, err
	}
	p := &page{Generated: to.UTC().Format(time.RFC3339), From: from.UTC().Format(time.RFC3339), To: to.UTC().Format(time.RFC3339), States: monitor.States, Colors: stateColor}
	for _, a := range cells {
		ts, err := cfg.Source.Trials(ctx, a.Cell, from, to.Add(time.Second), maxTrials(cfg))
		if err != nil {
			return nil, err
		}
		es, err := cfg.Source.Events(ctx, a.Cell, from, to.Add(time.Second))
		if err != nil {
			return nil, err
		}
		cv := cellView{Assessment: a, ID: cellID(a.Cell), Color: stateColor[a.State], Trials: len(ts), Plot: plot(ts, es, from, to)}
		if !a.Since.IsZero() {
			cv.Since = a.Since.UTC().Format("2006-01-02 15:04:05")
		}
		p.Cells = append(p.Cells, cv)
	}
	p.Vantages = matrix(p.Cells)
	return p, nil
}

// cellID is a cell's HTML id.
func cellID(c monitor.Cell) string {
	r := strings.NewReplacer("/", "-", ":", "-", ".", "-", " ", "-")
	return "cell-" + r.Replace(c.String())
}

// matrix arranges cells by vantage, (relay, feature) and transport.
func matrix(cells []cellView) []vantage {
	var out []vantage
	for i := range cells {
		c := &cells[i]
		vi := slices.IndexFunc(out, func(v vantage) bool { return v.Name == c.Vantage })
		if vi < 0 {
			out = append(out, vantage{Name: c.Vantage})
			vi = len(out) - 1
		}
		v := &out[vi]
		if !slices.Contains(v.Transports, c.Transport) {
			v.Transports = append(v.Transports, c.Transport)
		}
	}
	for vi := range out {
		v := &out[vi]
		for i := range cells {
			c := &cells[i]
			if c.Vantage != v.Name {
				continue
			}
			ri := slices.IndexFunc(v.Rows, func(r row) bool { return r.Relay == c.Relay && r.Feature == c.Feature })
			if ri < 0 {
				v.Rows = append(v.Rows, row{Relay: c.Relay, Feature: c.Feature, Cells: make([]*cellView, len(v.Transports))})
				ri = len(v.Rows) - 1
			}
			v.Rows[ri].Cells[slices.Index(v.Transports, c.Transport)] = c
		}
	}
	return out
}
