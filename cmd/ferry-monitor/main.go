// Command ferry-monitor is Ferry's reachability monitor: it probes relays
// as users would (a message and its receipt, over every transport of the
// relays' links, beside a neutral reference site reached through the same
// path), says which cell is ok, degraded, throttled, intermittent, blocked
// (and how) or unknown, since when and why, and keeps the history in an
// SQLite database in its data directory.
//
//	ferry-monitor run    --data DIR --link LINK [--link LINK]... [--interval D] [--for D] [flags]
//	ferry-monitor status --data DIR [--json]
//	ferry-monitor serve  --data DIR [--listen ADDR]
//	ferry-monitor report --data DIR [--out PREFIX] [--since D]
//	ferry-monitor ranking-key --relay-data DIR --out FILE [--valid D]
//
// run probes until SIGINT or SIGTERM, or for --for; with --listen it also
// serves the dashboard and Prometheus /metrics. status prints every cell's
// state; serve serves the dashboard of a history another process writes;
// report writes PREFIX.html (self-contained) and PREFIX.csv. ranking-key,
// run on the relay's machine, makes the key a monitor signs its transport
// rankings with (run --ranking-key publishes them to the relay).
// docs/monitor.md explains the states, the OONI output and how to run a
// monitor inside a censored network (a vantage) and outside it (a
// control).
//
// It is a thin layer over packages monitor, monitor/probe,
// monitor/history and monitor/dashboard.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/ferry-im/ferry/monitor"
	"github.com/ferry-im/ferry/monitor/history"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// Exit statuses.
const (
	exitOK    = 0
	exitError = 1 // one sentence on standard error says what to do
	exitUsage = 2
)

var subcommands = map[string]func(ctx context.Context, args []string, stdout, stderr io.Writer) int{
	"run":         runMain,
	"status":      statusMain,
	"serve":       serveMain,
	"report":      reportMain,
	"ranking-key": rankingKeyMain,
}

const usage = `usage: ferry-monitor run    --data DIR --link LINK [--link LINK]... [--interval D] [--for D] [flags]
       ferry-monitor status --data DIR [--json]
       ferry-monitor serve  --data DIR [--listen ADDR]
       ferry-monitor report --data DIR [--out PREFIX] [--since D]
       ferry-monitor ranking-key --relay-data DIR --out FILE
(ferry-monitor COMMAND -h lists a command's flags)`

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprintln(stderr, usage)
		return exitUsage
	}
	if args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		fmt.Fprintln(stdout, usage)
		return exitOK
	}
	sub, ok := subcommands[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "ferry-monitor: unknown command %q\n%s\n", args[0], usage)
		return exitUsage
	}
	return sub(ctx, args[1:], stdout, stderr)
}

// newFlags returns a flag set for a command, with --data.
func newFlags(name, synopsis string, stderr io.Writer) (*flag.FlagSet, *string) {
	fs := flag.NewFlagSet("ferry-monitor "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: ferry-monitor %s %s\n", name, synopsis)
		fs.PrintDefaults()
	}
	data := fs.String("data", "ferry-monitor-data", "the monitor's data directory: its history (monitor.db), probe accounts and measurements")
	return fs, data
}

// parse parses args and returns the exit status to return, or -1 to go
// on.
func parse(fs *flag.FlagSet, args []string) int {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(fs.Output(), "ferry-monitor: unexpected argument %q\n", fs.Arg(0))
		fs.Usage()
		return exitUsage
	}
	return -1
}

// fail prints one sentence and returns exitError.
func fail(stderr io.Writer, format string, args ...any) int {
	fmt.Fprintf(stderr, "ferry-monitor: "+format+"\n", args...)
	return exitError
}

// withHistory parses args and runs f with the history of --data, which
// must exist, and returns f's exit status.
func withHistory(ctx context.Context, fs *flag.FlagSet, data *string, args []string, stderr io.Writer, f func(db *history.DB) int) int {
	if code := parse(fs, args); code >= 0 {
		return code
	}
	db, err := history.OpenExisting(ctx, filepath.Join(*data, history.FileName))
	if errors.Is(err, history.ErrNoHistory) {
		return fail(stderr, "there is no monitor history in %s: run 'ferry-monitor run --data %s --link LINK' first", *data, *data)
	}
	if err != nil {
		return fail(stderr, "the history cannot be opened (%v): check %s", err, *data)
	}
	defer db.Close()
	return f(db)
}

func statusMain(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs, data := newFlags("status", "--data DIR [--json]", stderr)
	asJSON := fs.Bool("json", false, "print a JSON array of cells (relay, transport, feature, state, mechanism, since, confidence, evidence, ...)")
	return withHistory(ctx, fs, data, args, stderr, func(db *history.DB) int { return status(ctx, db, *data, *asJSON, stdout, stderr) })
}

func status(ctx context.Context, db *history.DB, data string, asJSON bool, stdout, stderr io.Writer) int {
	cells, err := db.Cells(ctx)
	if err != nil {
		return fail(stderr, "the history could not be read (%v): check %s", err, data)
	}
	if asJSON {
		if cells == nil {
			cells = []monitor.Assessment{}
		}
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		enc.Encode(cells)
		return exitOK
	}
	printStatus(stdout, cells)
	return exitOK
}

// printStatus prints one line per cell, its evidence last.
func printStatus(w io.Writer, cells []monitor.Assessment) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "VANTAGE\tRELAY\tFEATURE\tTRANSPORT\tSTATE\tSINCE (UTC)\tCONFIDENCE\tEVIDENCE")
	for _, a := range cells {
		state := string(a.State)
		if a.Mechanism != monitor.MechNone {
			state += "(" + string(a.Mechanism) + ")"
		}
		since := "-"
		if !a.Since.IsZero() {
			since = a.Since.UTC().Format(time.DateTime)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%.0f%%\t%s\n", a.Vantage, a.Relay, a.Feature, a.Transport, state, since, 100*a.Confidence, strings.ReplaceAll(a.Evidence, "\t", " "))
	}
	tw.Flush()
	if len(cells) == 0 {
		fmt.Fprintln(w, "no cells yet: the first trials have not finished")
	}
}
