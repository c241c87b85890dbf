package svgplot

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden files")

func TestGolden(t *testing.T) {
	c := Chart{
		Title: "throughput <& p99>", XLabel: "offered msgs/s", YLabel: "msgs/s",
		Series: []Series{
			{Name: "delivered", Points: []Point{{1000, 1000}, {5000, 4990}, {20000, 18000}}},
			{Name: "p99 ms", Points: []Point{{1000, 3}, {5000, 4}, {20000, 45}}},
		},
	}
	var b bytes.Buffer
	if err := c.Write(&b); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join("testdata", "chart.svg")
	if *update {
		if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(b.Bytes(), want) {
		t.Fatalf("SVG differs from %s (run with -update if the change is meant)", path)
	}
	if !strings.Contains(b.String(), "throughput &lt;&amp; p99&gt;") {
		t.Fatal("the title is not escaped")
	}
}

func TestTicks(t *testing.T) {
	for _, tt := range []struct {
		lo, hi float64
		want   []float64
	}{
		{0, 10, []float64{0, 2, 4, 6, 8, 10}},
		{0, 47, []float64{0, 10, 20, 30, 40, 50}},
		{1000, 20000, []float64{0, 5000, 10000, 15000, 20000}},
		{0, 0.3, []float64{0, 0.1, 0.2, 0.3}},
	} {
		if got := ticks(tt.lo, tt.hi); !slices.Equal(got, tt.want) {
			t.Errorf("ticks(%v, %v) = %v, want %v", tt.lo, tt.hi, got, tt.want)
		}
	}
}

func TestLabel(t *testing.T) {
	for v, want := range map[float64]string{0: "0", 2.5: "2.5", 1500: "1.5k", 20000: "20k", 3e6: "3M", 0.1: "0.1"} {
		if got := label(v); got != want {
			t.Errorf("label(%v) = %q, want %q", v, got, want)
		}
	}
}

func TestNoPoints(t *testing.T) {
	if err := (Chart{}).Write(&bytes.Buffer{}); err == nil {
		t.Fatal("a chart without points was drawn")
	}
}
