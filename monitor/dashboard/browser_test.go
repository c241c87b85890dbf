package dashboard

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"image/png"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/ferry-im/ferry/censor/censortest"
	"github.com/ferry-im/ferry/monitor"
)

var updateScreenshot = flag.Bool("screenshot-update", false, "write the dashboard screenshot to docs/monitor-dashboard.png")

// TestDashboardInChromium loads the dashboard in headless Chromium and
// checks that the matrix it renders shows, for every cell, the state and
// mechanism /api/status reports, in the state's colour, with a plot per
// cell; it takes a screenshot of the page (written to
// docs/monitor-dashboard.png with -screenshot-update).
func TestDashboardInChromium(t *testing.T) {
	chromium := censortest.ChromiumPath(t)
	db := newHistory(t)
	srv := httptest.NewServer(testHandler(t, db))
	defer srv.Close()

	alloc, cancel := chromedp.NewExecAllocator(t.Context(),
		chromedp.ExecPath(chromium),
		chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(filepath.Join(t.TempDir(), "profile")),
		chromedp.WindowSize(1100, 900),
	)
	defer cancel()
	ctx, cancel := chromedp.NewContext(alloc)
	defer cancel()
	ctx, cancel = context.WithTimeout(ctx, 60*time.Second)
	defer cancel()

	type shown struct {
		Cell, State, Mechanism, Color string
	}
	err := chromedp.Do(ctx, chromedp.Navigate(srv.URL+"/"), chromedp.WaitVisible(chromedp.CSS("table.matrix")))
	if err != nil {
		t.Fatalf("chromium (%s): %v", censortest.ChromiumVersion(chromium), err)
	}
	cells, err := chromedp.Run(ctx, chromedp.Evaluate[[]shown](`Array.from(document.querySelectorAll("td.cell")).map(td => ({
		Cell: td.dataset.cell, State: td.dataset.state, Mechanism: td.dataset.mechanism,
		Color: getComputedStyle(td).backgroundColor}))`))
	if err != nil {
		t.Fatal(err)
	}
	plots, err := chromedp.Run(ctx, chromedp.Evaluate[int](`Array.from(document.querySelectorAll("svg.plot")).filter(s => s.querySelector("circle, path.fail")).length`))
	if err != nil {
		t.Fatal(err)
	}
	shot, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatal(err)
	}

	resp, err := http.Get(srv.URL + "/api/status")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var api []monitor.Assessment
	if err := json.NewDecoder(resp.Body).Decode(&api); err != nil {
		t.Fatal(err)
	}
	if len(cells) != len(api) {
		t.Fatalf("the matrix shows %d cells, the API reports %d", len(cells), len(api))
	}
	for _, a := range api {
		i := slices.IndexFunc(cells, func(s shown) bool { return s.Cell == a.Cell.String() })
		if i < 0 {
			t.Errorf("the matrix does not show %s", a.Cell)
			continue
		}
		s := cells[i]
		if s.State != string(a.State) || s.Mechanism != string(a.Mechanism) {
			t.Errorf("%s: the matrix shows %s(%s), the API %s(%s)", a.Cell, s.State, s.Mechanism, a.State, a.Mechanism)
		}
		if want := rgb(stateColor[a.State]); s.Color != want {
			t.Errorf("%s: shown in %s, want %s (the colour of %s)", a.Cell, s.Color, want, a.State)
		}
	}
	if plots != len(api) {
		t.Errorf("%d plots with marks, want %d", plots, len(api))
	}
	img, err := png.Decode(bytes.NewReader(shot))
	if err != nil || img.Bounds().Dx() < 800 || img.Bounds().Dy() < 600 {
		t.Fatalf("screenshot: %v, %v", img.Bounds(), err)
	}
	if *updateScreenshot {
		if err := os.WriteFile("../../docs/monitor-dashboard.png", shot, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// rgb turns #rrggbb into the rgb(r, g, b) getComputedStyle returns.
func rgb(hex string) string {
	var r, g, b int
	for i, p := range []*int{&r, &g, &b} {
		for _, c := range hex[1+2*i : 3+2*i] {
			*p *= 16
			switch {
			case c >= '0' && c <= '9':
				*p += int(c - '0')
			case c >= 'a' && c <= 'f':
				*p += int(c-'a') + 10
			}
		}
	}
	return fmt.Sprintf("rgb(%d, %d, %d)", r, g, b)
}
