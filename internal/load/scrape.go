package load

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Sample is what a relay's /metrics said at one moment.
type Sample struct {
	RSS   float64 // process_resident_memory_bytes
	CPU   float64 // process_cpu_seconds_total
	Conns float64 // ferry_relay_connections
}

// Scrape reads a relay's Prometheus metrics at url (http://ADDR/metrics,
// as ferry-relay --metrics serves them).
func Scrape(ctx context.Context, url string) (Sample, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return Sample{}, fmt.Errorf("scrape %s: %w", url, err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return Sample{}, fmt.Errorf("scrape %s: %w", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return Sample{}, fmt.Errorf("scrape %s: %s", url, resp.Status)
	}
	var s Sample
	want := map[string]*float64{
		"process_resident_memory_bytes": &s.RSS,
		"process_cpu_seconds_total":     &s.CPU,
		"ferry_relay_connections":       &s.Conns,
	}
	lines := bufio.NewScanner(resp.Body)
	for lines.Scan() {
		name, value, ok := strings.Cut(lines.Text(), " ")
		if dst := want[name]; ok && dst != nil {
			if v, err := strconv.ParseFloat(strings.TrimSpace(value), 64); err == nil {
				*dst = v
			}
		}
	}
	if err := lines.Err(); err != nil {
		return Sample{}, fmt.Errorf("scrape %s: %w", url, err)
	}
	return s, nil
}

// ScrapeAll scrapes every url and adds up the samples.
func ScrapeAll(ctx context.Context, urls []string) (Sample, error) {
	var sum Sample
	for _, u := range urls {
		s, err := Scrape(ctx, u)
		if err != nil {
			return sum, err
		}
		sum.RSS += s.RSS
		sum.CPU += s.CPU
		sum.Conns += s.Conns
	}
	return sum, nil
}
