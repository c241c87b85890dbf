// Command ferry-load drives load at Ferry relays and reports what they
// sustain, for docs/benchmarks.md and for operators sizing a relay.
//
//	ferry-load --relay LINK [--relay LINK]... --conns N --messages M [--rate R] [--json]
//	           [--procs P] [--senders S] [--window W] [--size BYTES] [--sources K]
//	           [--hold DURATION] [--timeout DURATION] [--metrics URL]... [--parallel K] [--log-level LEVEL]
//
// It opens N authenticated connections (N users, each with a mailbox),
// subscribes them all, then has S users per process send M messages in all
// to random others, at R messages per second (or, without --rate, each
// sender as fast as its W Sends in flight are acknowledged), and waits
// until every message is delivered (or nothing arrives for 10 seconds). It
// reports the throughput (messages delivered per second, from the first
// Send to the last delivery), the delivery latency's p50, p99 and p999,
// errors, and, with --metrics (each relay's http://ADDR/metrics, as
// ferry-relay --metrics serves it), the relays' total RSS and CPU time.
// --hold keeps the connections open, idle, for that long after the
// messages (with --messages 0: an idle-connection run), and the RSS is
// taken then. It stops by itself after --timeout (default 10 minutes) plus
// --hold.
//
// --procs P splits the users over P processes (this binary run again), so
// that no process needs more open files than the system allows; each
// process dials from --sources K loopback addresses of its own
// (127.(10+p).x.y; default one per 64 users), so that the relays' limits
// per source address and the kernel's ports per address do not bind.
// Several --relay links (one key) add up their endpoints: user i dials
// endpoint i modulo their number.
//
// With --json it prints one JSON object; its fields are in report.go.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	switch {
	case errors.Is(err, flag.ErrHelp):
		os.Exit(0)
	case err != nil:
		fmt.Fprintln(os.Stderr, "ferry-load:", err)
		os.Exit(1)
	}
}
