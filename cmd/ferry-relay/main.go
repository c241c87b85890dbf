// Command ferry-relay runs a Ferry relay.
//
// With no arguments it starts on its embedded defaults: state in
// ./ferry-data (the relay's static key, kept with 0600 permissions, and an
// SQLite database), listening on tcp=127.0.0.1:7443, obfs=127.0.0.1:7444
// and https=127.0.0.1:7445 (a self-signed certificate, pinned in the link),
// and prints the relay's link on a line of its own on standard output. Logs
// go to standard error.
//
//	ferry-relay [--data DIR] [--listen TRANSPORT=HOST:PORT]... [--public TRANSPORT=HOST:PORT]...
//	            [--log-level debug|info|warn|error] [--metrics ADDR]
//	            [--store postgres://... [--cluster nats://...] [--node NAME]] [--config FILE]
//	            [--memory-mib N] [--max-conns N] [--disk-mib N] [--disk-free-mib N]
//	            [--disk-reserve-mib N] [--new-database]
//	ferry-relay link [--data DIR] [--wait D] [--store postgres://... | --config FILE]
//	ferry-relay help | --version
//	ferry-relay recover [--data DIR]
//
// "ferry-relay link" prints the link of the relay running with DIR, alone
// on one line (with a cluster's store, every node's endpoints), waiting up
// to --wait (10 s) for it to listen: it reads only what the running relay
// wrote (the endpoints file names its process, which holds a lock on
// DIR/relay.lock), so it never prints an earlier run's link. One relay at
// a time may use a data directory.
//
// --store postgres://... keeps the relay's state in PostgreSQL instead of
// SQLite in DIR, so that several relays (a cluster, docs/operations.md)
// can share it; they must hold the same key (copy relay.key). --cluster
// nats://... links them through NATS, so that a subscriber on one is
// pushed at once what a sender stored through another. Each registers its
// endpoints in the store under --node (default: host name and first
// listening address), and prints the cluster's link: its own endpoints,
// then the others'. --config FILE reads flags from a file, one
// "name = value" per line (# starts a comment); flags on the command line
// win.
//
// --listen may be given once per transport (the list is in transports.go).
// --public TRANSPORT=HOST:PORT sets the address written into the link for a
// transport when clients must use another address than the one listened on
// (a public IP, a port forward, a reverse proxy); by default the link
// carries the listening addresses. --metrics serves
// Prometheus metrics at http://ADDR/metrics; it is off by default. SIGINT
// or SIGTERM shuts the relay down gracefully: it stops accepting, finishes
// the frames in hand, and closes the database.
//
// The https transport (--listen https=HOST:PORT, https.go) serves a website
// to everyone without the link's secret: --https-site DIR, --https-upstream
// URL, or a built-in plain site. Its certificate comes from --acme-domain,
// from --tls-cert and --tls-key, or is self-signed and kept in DIR (then
// pinned in the link); --https-behind-proxy serves a TLS-terminating
// reverse proxy instead (docs/transports.md section 4.6).
//
// Once DIR holds a relay key, the relay refuses to start on a missing,
// empty or damaged database and says what to do: restore a backup, start
// empty with --new-database (the old file is kept aside), or rebuild a
// damaged database with "ferry-relay recover", which keeps the damaged
// file and copies every row it can still read (docs/operations.md, "After
// damage"). --memory-mib, --max-conns, --disk-mib, --disk-free-mib and --disk-reserve-mib set the relay's
// budgets (docs/operations.md, "Budgets and limits"); the memory budget is
// also the Go runtime's soft memory limit unless GOMEMLIMIT is set.
//
// It is a thin layer over package relay, which does the work.
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
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	switch {
	case errors.Is(err, flag.ErrHelp):
		os.Exit(0)
	case err != nil:
		fmt.Fprintln(os.Stderr, "ferry-relay:", err)
		os.Exit(1)
	}
}
