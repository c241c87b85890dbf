// Command ferry-plot draws the charts of docs/benchmarks.md: it reads a
// CSV file whose first column is x and whose other columns are series
// (the header row names them; an empty cell is a missing point) and
// writes an SVG line chart to standard output.
//
//	ferry-plot --title TITLE --x LABEL --y LABEL FILE.csv > FILE.svg
//
// It is a documentation tool over internal/svgplot.
package main

import (
	"encoding/csv"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"github.com/ferry-im/ferry/internal/svgplot"
)

func main() {
	if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "ferry-plot:", err)
		}
		os.Exit(2)
	}
}

func run(args []string, stdout, stderr io.Writer) error {
	fl := flag.NewFlagSet("ferry-plot", flag.ContinueOnError)
	fl.SetOutput(stderr)
	var c svgplot.Chart
	fl.StringVar(&c.Title, "title", "", "the chart's `TITLE`")
	fl.StringVar(&c.XLabel, "x", "", "the x axis' `LABEL`")
	fl.StringVar(&c.YLabel, "y", "", "the y axis' `LABEL`")
	if err := fl.Parse(args); err != nil {
		return err
	}
	if fl.NArg() != 1 {
		return errors.New("want one CSV file (usage: ferry-plot --title T --x X --y Y FILE.csv)")
	}
	f, err := os.Open(fl.Arg(0))
	if err != nil {
		return err
	}
	defer f.Close()
	if c.Series, err = readSeries(f); err != nil {
		return fmt.Errorf("%s: %w", fl.Arg(0), err)
	}
	return c.Write(stdout)
}

// readSeries reads the CSV described in the package comment.
func readSeries(r io.Reader) ([]svgplot.Series, error) {
	rows, err := csv.NewReader(r).ReadAll()
	if err != nil {
		return nil, err
	}
	if len(rows) < 2 || len(rows[0]) < 2 {
		return nil, errors.New("want a header row and data rows of at least two columns")
	}
	series := make([]svgplot.Series, len(rows[0])-1)
	for i := range series {
		series[i].Name = rows[0][i+1]
	}
	for n, row := range rows[1:] {
		x, err := strconv.ParseFloat(strings.TrimSpace(row[0]), 64)
		if err != nil {
			return nil, fmt.Errorf("row %d: x: %w", n+2, err)
		}
		for i, cell := range row[1:] {
			if strings.TrimSpace(cell) == "" {
				continue
			}
			y, err := strconv.ParseFloat(strings.TrimSpace(cell), 64)
			if err != nil {
				return nil, fmt.Errorf("row %d, %s: %w", n+2, series[i].Name, err)
			}
			series[i].Points = append(series[i].Points, svgplot.Point{X: x, Y: y})
		}
	}
	return series, nil
}
