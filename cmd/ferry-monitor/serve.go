package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/ferry-im/ferry/monitor"
	"github.com/ferry-im/ferry/monitor/dashboard"
	"github.com/ferry-im/ferry/monitor/history"
)

func serveMain(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs, data := newFlags("serve", "--data DIR [--listen ADDR]", stderr)
	listen := fs.String("listen", "127.0.0.1:9290", "address to serve the dashboard, its JSON and /metrics at")
	return withHistory(ctx, fs, data, args, stderr, func(db *history.DB) int { return serve(ctx, db, *listen, stdout, stderr) })
}

func serve(ctx context.Context, db *history.DB, listen string, stdout, stderr io.Writer) int {
	l, err := net.Listen("tcp", listen)
	if err != nil {
		return fail(stderr, "cannot listen on %s (%v): choose another --listen address", listen, err)
	}
	srv := &http.Server{Handler: dashboard.Handler(dashboard.Config{Source: db, Metrics: stateMetrics(db)}), ReadHeaderTimeout: 10 * time.Second}
	fmt.Fprintf(stdout, "http://%s/\n", l.Addr())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(l) }()
	select {
	case err := <-done:
		return fail(stderr, "the dashboard stopped: %v", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	srv.Shutdown(sctx)
	if err := <-done; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fail(stderr, "the dashboard stopped: %v", err)
	}
	return exitOK
}

// stateMetrics serves the state gauges of every cell as the history has
// them (a process that only reads the history has no trial counters: the
// running monitor's --listen has those).
func stateMetrics(db *history.DB) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		cells, err := db.Cells(r.Context())
		if err != nil {
			http.Error(w, "the monitor's history could not be read: "+err.Error(), http.StatusInternalServerError)
			return
		}
		m := monitor.NewMetrics()
		for _, a := range cells {
			m.SetAssessment(a)
		}
		m.Handler().ServeHTTP(w, r)
	})
}

func reportMain(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs, data := newFlags("report", "--data DIR [--out PREFIX] [--since D]", stderr)
	out := fs.String("out", "ferry-monitor-report", "write PREFIX.html and PREFIX.csv")
	since := fs.Duration("since", 7*24*time.Hour, "how far back the report goes")
	return withHistory(ctx, fs, data, args, stderr, func(db *history.DB) int { return report(ctx, db, *out, *since, stdout, stderr) })
}

func report(ctx context.Context, db *history.DB, out string, since time.Duration, stdout, stderr io.Writer) int {
	to := time.Now()
	from := to.Add(-since)
	write := func(path string, f func(io.Writer) error) error {
		file, err := os.Create(path)
		if err != nil {
			return err
		}
		if err := f(file); err != nil {
			file.Close()
			return err
		}
		return file.Close()
	}
	err := write(out+".html", func(w io.Writer) error { return dashboard.Report(ctx, w, db, from, to) })
	if err == nil {
		err = write(out+".csv", func(w io.Writer) error { return dashboard.CSV(ctx, w, db, from, to) })
	}
	if err != nil {
		return fail(stderr, "the report could not be written (%v): choose another --out", err)
	}
	fmt.Fprintf(stdout, "%s.html\n%s.csv\n", out, out)
	return exitOK
}
