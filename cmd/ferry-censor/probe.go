package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"os"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/ferry-im/ferry/censor"
)

const probeUsage = "usage: ferry-censor probe [--first HEX | --first-file F] [--reference ADDR] [--read-timeout D] [--soon D] [--later D] [--concurrency N] [--read-limit N] [--seed N] [-v] ADDR"

// probeExitDiffer is the exit code of a probe whose target the prober
// told apart from the reference.
const probeExitDiffer = 3

// probeMain is "ferry-censor probe": it probes the server at ADDR as the
// Great Firewall's active prober does (censor.Prober) and prints a table
// of its reactions. With --reference it probes that server too, with the
// same probes, and lists the differences; the exit code is then 3 if
// there are any, 0 if the servers could not be told apart.
func probeMain(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("ferry-censor probe", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(stderr, probeUsage)
		fs.PrintDefaults()
	}
	firstHex := fs.String("first", "", "a real first packet a client sent to the server, in hex: the material of the replays")
	firstFile := fs.String("first-file", "", "file holding that first packet (raw bytes)")
	reference := fs.String("reference", "", "host:port of a reference server to compare with (an ordinary web server)")
	readTimeout := fs.Duration("read-timeout", 10*time.Second, "how long a probe waits for the server to close")
	soon := fs.Duration("soon", 280*time.Millisecond, "delay before the first round of probes")
	later := fs.Duration("later", 0, "delay of the second round of replays (the GFW's come hours later); 0 for none")
	concurrency := fs.Int("concurrency", 4, "probes in flight at once")
	readLimit := fs.Int("read-limit", 0, "also measure how many random bytes the server reads before closing, up to this many (binary search, about log2(N) more probes); 0 for no measure")
	seed := fs.Uint64("seed", 0, "seed of the random probes, for repeatable runs; 0 for crypto/rand")
	verbose := fs.Bool("v", false, "log every reaction to standard error")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() != 1 || (*firstHex != "" && *firstFile != "") || *concurrency < 1 || *readLimit < 0 || *readTimeout <= 0 || *soon < 0 || *later < 0 {
		fs.Usage()
		return 2
	}
	addr := fs.Arg(0)
	var first []byte
	switch {
	case *firstHex != "":
		b, err := hex.DecodeString(strings.Join(strings.Fields(*firstHex), ""))
		if err != nil {
			fmt.Fprintf(stderr, "ferry-censor: --first: %v\n", err)
			return 2
		}
		first = b
	case *firstFile != "":
		b, err := os.ReadFile(*firstFile)
		if err != nil {
			fmt.Fprintf(stderr, "ferry-censor: %v\n", err)
			return 1
		}
		first = b
	}
	s := seedKey(*seed)
	if *seed == 0 {
		if _, err := rand.Read(s[:]); err != nil {
			fmt.Fprintf(stderr, "ferry-censor: %v\n", err)
			return 1
		}
	}
	// Every Prober gets the same random stream, so the target and the
	// reference get the same probes.
	newProber := func() *censor.Prober {
		p := &censor.Prober{
			Rand:        mrand.NewChaCha8(s),
			ReadTimeout: *readTimeout,
			Soon:        max(*soon, time.Nanosecond),
			Later:       -1,
			Concurrency: *concurrency,
			Logger:      newLogger(stderr, *verbose),
		}
		if *later > 0 {
			p.Later = *later
		}
		return p
	}
	targets := []string{addr}
	if *reference != "" {
		targets = append(targets, *reference)
	}
	reports := make([]*censor.Report, len(targets))
	limits := make([]int, len(targets))
	errs := make([]error, len(targets))
	var wg sync.WaitGroup
	for i, a := range targets {
		wg.Go(func() {
			reports[i], errs[i] = newProber().Probe(ctx, a, first)
			if errs[i] == nil && *readLimit > 0 {
				limits[i], errs[i] = newProber().ReadLimit(ctx, a, *readLimit)
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		fmt.Fprintf(stderr, "ferry-censor: %v\n", err)
		return 1
	}
	for i, r := range reports {
		if i > 0 {
			fmt.Fprintln(stdout)
		}
		printReport(stdout, r, i > 0)
		if *readLimit > 0 {
			fmt.Fprintln(stdout, readLimitText(limits[i], *readLimit))
		}
	}
	if *reference == "" {
		return 0
	}
	diffs := censor.Differ(reports[0], reports[1])
	if *readLimit > 0 && limits[0] != limits[1] {
		diffs = append(diffs, fmt.Sprintf("read limit: %d vs %d bytes (-1: none up to %d)", limits[0], limits[1], *readLimit))
	}
	fmt.Fprintln(stdout)
	if len(diffs) == 0 {
		fmt.Fprintf(stdout, "no differences: %s reacts like the reference %s\n", addr, *reference)
		return 0
	}
	fmt.Fprintf(stdout, "%d differences from the reference %s:\n", len(diffs), *reference)
	for _, d := range diffs {
		fmt.Fprintf(stdout, "  %s\n", d)
	}
	return probeExitDiffer
}

// printReport writes a report as a table, one line per probe.
func printReport(w io.Writer, r *censor.Report, reference bool) {
	what := "server"
	if reference {
		what = "reference"
	}
	fmt.Fprintf(w, "%s %s: %d probes\n", what, r.Addr, len(r.Reactions))
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "probe\tsent\treceived\tclose\tafter\tfirst bytes received")
	for _, x := range r.Reactions {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%s\t%v\t%s\n", x.Probe, x.Sent, x.Received, x.Close, x.After.Round(time.Millisecond), headText(x.Head))
	}
	tw.Flush()
}

// readLimitText describes a measured read limit.
func readLimitText(n, limit int) string {
	if n < 0 {
		return fmt.Sprintf("read limit: still open after %d random bytes", limit)
	}
	return fmt.Sprintf("read limit: closes after %d random bytes", n)
}

// headText shows the first bytes a server sent: as text if printable,
// else in hex; at most 16 bytes.
func headText(b []byte) string {
	b = b[:min(len(b), 16)]
	if len(b) == 0 {
		return "-"
	}
	for _, c := range b {
		if c < 0x20 && c != '\r' && c != '\n' || c > 0x7e {
			return hex.EncodeToString(b)
		}
	}
	return strconv.Quote(string(b))
}
