package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestPlot(t *testing.T) {
	csv := filepath.Join(t.TempDir(), "d.csv")
	os.WriteFile(csv, []byte("conns,before,after\n1000,37,36\n5000,113,\n19000,387,273\n"), 0o644)
	var out, errs bytes.Buffer
	if err := run([]string{"--title", "RSS", "--x", "connections", "--y", "MB", csv}, &out, &errs); err != nil {
		t.Fatalf("run: %v (%s)", err, errs.String())
	}
	svg := out.String()
	if !strings.HasPrefix(svg, "<svg") || strings.Count(svg, "<polyline") != 2 || strings.Count(svg, "<circle") != 5 {
		t.Fatalf("want an SVG with two lines and five points, got:\n%s", svg)
	}
}

func TestBadInput(t *testing.T) {
	dir := t.TempDir()
	for name, text := range map[string]string{"empty": "", "one column": "x\n1\n", "not a number": "x,a\n1,b\n"} {
		path := filepath.Join(dir, strings.ReplaceAll(name, " ", "_")+".csv")
		os.WriteFile(path, []byte(text), 0o644)
		if err := run([]string{path}, &bytes.Buffer{}, &bytes.Buffer{}); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}
