package dashboard

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ferry-im/ferry/monitor"
	"github.com/ferry-im/ferry/monitor/history"
)

var t0 = time.Date(2026, 12, 1, 8, 0, 0, 0, time.UTC)

// scenario is one cell's trials, a code per trial every 5 minutes:
// o success at the control's rate, t a transfer held at 140 kbit/s, r a
// reset at the handshake, d a timeout at the handshake, x a reset while
// the controls failed too.
type scenario struct {
	cell   monitor.Cell
	script string
}

var scenarios = []scenario{
	{monitor.Cell{Vantage: "home-isp", Relay: "relay.example:443", Feature: "text", Transport: "tcp"}, "oooooooooooottttttttttttddddddddddddrrrrrrrrrrrr"},
	{monitor.Cell{Vantage: "home-isp", Relay: "relay.example:443", Feature: "text", Transport: "https"}, "oooooooooooooooooooooooooooooooooooooooooooxxxo"},
	{monitor.Cell{Vantage: "home-isp", Relay: "relay.example:443", Feature: "text", Transport: "obfs"}, "ooooooooooootttttttttttoooooooooooorrrrrrrrrrrrr"},
	{monitor.Cell{Vantage: "home-isp", Relay: "relay.example:443", Feature: "media_put", Transport: "tcp"}, "oooooooooooottttttttttttddddddddddddrrrrrrrrrrrr"},
	{monitor.Cell{Vantage: "home-isp", Relay: "relay.example:443", Feature: "media_put", Transport: "https"}, "oooooooooooooooooooooooooooooooooooooooooooooooo"},
	{monitor.Cell{Vantage: "home-isp", Relay: "relay.example:443", Feature: "media_get", Transport: "tcp"}, "oooooooooooottttttttttttttttttttttttrrrrrrrrrrrr"},
	{monitor.Cell{Vantage: "home-isp", Relay: "relay.example:443", Feature: "media_get", Transport: "https"}, "oooooooooooooooooooooooooooooooooooooooooooooooo"},
	{monitor.Cell{Vantage: "outside", Relay: "relay.example:443", Feature: "text", Transport: "tcp"}, "oooooooooooooooooooooooooooooooooooooooooooooooo"},
}

func synthTrial(c monitor.Cell, code byte, at time.Time) *monitor.Trial {
	ctl := &monitor.Control{Target: "https://www.example.com/", Outcome: monitor.Outcome{Start: at, OK: true, Transfer: monitor.Transfer{Bytes: 128 << 10, Time: 50 * time.Millisecond}}}
	t := &monitor.Trial{Cell: c, Endpoint: c.Transport + "=relay.example:443", Outcome: monitor.Outcome{Start: at, Runtime: 800 * time.Millisecond, OK: true}, Pre: ctl, Post: ctl}
	switch code {
	case 'o':
		t.Transfer = monitor.Transfer{Bytes: 30000, Time: 12 * time.Millisecond}
	case 't':
		t.Transfer = monitor.Transfer{Bytes: 30000, Time: 1714 * time.Millisecond}
		t.Runtime = 5 * time.Second
	case 'r':
		t.FailWith(monitor.StageHandshake, monitor.FailureConnReset, "read: connection reset by peer")
	case 'd':
		t.FailWith(monitor.StageHandshake, monitor.FailureTimeout, "i/o timeout")
	case 'x':
		t.FailWith(monitor.StageTLS, monitor.FailureConnReset, "connection reset by peer")
		failed := *ctl
		failed.OK, failed.Stage, failed.Failure, failed.Transfer = false, monitor.StageTLS, monitor.FailureConnReset, monitor.Transfer{}
		t.Pre, t.Post = &failed, &failed
	}
	return t
}

// history returns a history holding the scenarios' trials, classified.
func newHistory(t testing.TB) *history.DB {
	t.Helper()
	db, err := history.Open(context.Background(), filepath.Join(t.TempDir(), history.FileName))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	var targets []monitor.Target
	for _, s := range scenarios {
		targets = append(targets, monitor.Target{Cell: s.cell, Probe: nopProbe{}})
	}
	r, err := monitor.NewRunner(monitor.Config{Targets: targets, Store: db})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range scenarios {
		for i := range len(s.script) {
			if _, err := r.Observe(context.Background(), synthTrial(s.cell, s.script[i], t0.Add(time.Duration(i)*5*time.Minute))); err != nil {
				t.Fatal(err)
			}
		}
	}
	return db
}

type nopProbe struct{}

func (nopProbe) Probe(context.Context) monitor.Trial {
	return monitor.Trial{Outcome: monitor.Outcome{OK: true}}
}

func testHandler(t testing.TB, db *history.DB) http.Handler {
	return Handler(Config{Source: db, Now: func() time.Time { return t0.Add(4 * time.Hour) }, Window: 5 * time.Hour})
}

func get(t *testing.T, h http.Handler, url string) (int, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", url, nil))
	return rec.Code, rec.Body.String()
}

func TestStatusAPI(t *testing.T) {
	db := newHistory(t)
	code, body := get(t, testHandler(t, db), "/api/status")
	if code != 200 {
		t.Fatalf("status %d: %s", code, body)
	}
	var got []monitor.Assessment
	if err := json.Unmarshal([]byte(body), &got); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"home-isp/relay.example:443/text/tcp":        "blocked(reset)",
		"home-isp/relay.example:443/text/https":      "intermittent(reset)",
		"home-isp/relay.example:443/text/obfs":       "blocked(reset)",
		"outside/relay.example:443/text/tcp":         "ok()",
		"home-isp/relay.example:443/media_put/tcp":   "blocked(reset)",
		"home-isp/relay.example:443/media_put/https": "ok()",
		"home-isp/relay.example:443/media_get/tcp":   "blocked(reset)",
		"home-isp/relay.example:443/media_get/https": "ok()",
	}
	if len(got) != len(want) {
		t.Fatalf("%d cells, want %d", len(got), len(want))
	}
	for _, a := range got {
		if s := string(a.State) + "(" + string(a.Mechanism) + ")"; s != want[a.Cell.String()] {
			t.Errorf("%s: %s, want %s", a.Cell, s, want[a.Cell.String()])
		}
	}
}

func TestPageShowsEveryCell(t *testing.T) {
	db := newHistory(t)
	code, body := get(t, testHandler(t, db), "/")
	if code != 200 {
		t.Fatalf("status %d", code)
	}
	for _, s := range scenarios {
		if !strings.Contains(body, `data-cell="`+s.cell.String()+`"`) {
			t.Errorf("the matrix lacks %s", s.cell)
		}
	}
	if n := strings.Count(body, `<svg class="plot"`); n != len(scenarios) {
		t.Errorf("%d plots, want %d", n, len(scenarios))
	}
	if strings.Contains(body, "<script") {
		t.Error("the page has a script")
	}
}

func TestTrialsAPI(t *testing.T) {
	db := newHistory(t)
	h := testHandler(t, db)
	code, body := get(t, h, "/api/trials?cell=home-isp/relay.example:443/text/tcp&since="+t0.Format(time.RFC3339))
	var ts []monitor.Trial
	if code != 200 || json.Unmarshal([]byte(body), &ts) != nil || len(ts) != len(scenarios[0].script) {
		t.Fatalf("status %d, %d trials, want %d", code, len(ts), len(scenarios[0].script))
	}
	if code, _ := get(t, h, "/api/trials?cell=nonsense"); code != 400 {
		t.Errorf("a malformed cell: status %d, want 400", code)
	}
	if code, _ := get(t, h, "/api/events?since=yesterday"); code != 400 {
		t.Errorf("a malformed since: status %d, want 400", code)
	}
}

func TestReportIsSelfContained(t *testing.T) {
	db := newHistory(t)
	var html, table bytes.Buffer
	if err := Report(context.Background(), &html, db, t0, t0.Add(5*time.Hour)); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{"<script", " src=", "<link", "http-equiv=\"refresh\"", "url("} {
		if strings.Contains(html.String(), bad) {
			t.Errorf("the report contains %q: it must stand alone", bad)
		}
	}
	if err := CSV(context.Background(), &table, db, t0, t0.Add(5*time.Hour)); err != nil {
		t.Fatal(err)
	}
	rows, err := csv.NewReader(&table).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, s := range scenarios {
		n += len(s.script)
	}
	if len(rows) != n+1 || strings.Join(rows[0], ",") != strings.Join(CSVHeader, ",") {
		t.Fatalf("%d CSV rows, want %d with the header", len(rows), n+1)
	}
	last := rows[len(rows)-1] // the outside tcp cell's last trial
	if last[4] != "tcp" || last[6] != "true" || last[15] != "ok" {
		t.Errorf("last row %v", last)
	}
}

func TestEmptyHistory(t *testing.T) {
	db, err := history.Open(context.Background(), filepath.Join(t.TempDir(), history.FileName))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	code, body := get(t, testHandler(t, db), "/")
	if code != 200 || !strings.Contains(body, `id="empty"`) {
		t.Fatalf("status %d; the empty page does not say there are no trials", code)
	}
	if code, body := get(t, testHandler(t, db), "/api/status"); code != 200 || strings.TrimSpace(body) != "null" && strings.TrimSpace(body) != "[]" {
		t.Fatalf("status %d, body %q", code, body)
	}
}
