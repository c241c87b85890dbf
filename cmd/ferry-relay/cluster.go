package main

import (
	"bufio"
	"context"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ferry-im/ferry/channel"
	"github.com/ferry-im/ferry/link"
	"github.com/ferry-im/ferry/relay"
	"github.com/ferry-im/ferry/relay/natsbus"
	"github.com/ferry-im/ferry/relay/postgres"
	"github.com/ferry-im/ferry/relay/sqlite"
)

// storeFlags are the flags that choose the store and the cluster: --store,
// --cluster, --node, and --config, a file of flags.
type storeFlags struct {
	config, store, cluster, node string
}

// addStoreFlags registers the flags on fl.
func addStoreFlags(fl *flag.FlagSet) *storeFlags {
	f := &storeFlags{}
	fl.StringVar(&f.config, "config", "", "read flags from `FILE`: one \"name = value\" per line, # for comments; the command line wins")
	fl.StringVar(&f.store, "store", "", "the store: `URL` postgres://... for a cluster's shared PostgreSQL (default: SQLite in the data directory)")
	fl.StringVar(&f.cluster, "cluster", "", "link to the other relays of a cluster through NATS at `URL` nats://... (needs a postgres --store)")
	fl.StringVar(&f.node, "node", "", "this relay's `NAME` in the cluster (default: the host name and the first listening address)")
	return f
}

// applyConfig sets, from the file named by --config, every flag that the
// command line did not set. A repeatable flag (--listen) may appear on
// several lines.
func (f *storeFlags) applyConfig(fl *flag.FlagSet) error {
	if f.config == "" {
		return nil
	}
	set := map[string]bool{}
	fl.Visit(func(g *flag.Flag) { set[g.Name] = true })
	file, err := os.Open(f.config)
	if err != nil {
		return fmt.Errorf("read config: %w", err)
	}
	defer file.Close()
	lines := bufio.NewScanner(file)
	for n := 1; lines.Scan(); n++ {
		line := strings.TrimSpace(lines.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		name, value, ok := strings.Cut(line, "=")
		name, value = strings.TrimSpace(name), strings.TrimSpace(value)
		if !ok || name == "" {
			return fmt.Errorf("%s:%d: want \"name = value\", e.g. \"store = postgres://...\"", f.config, n)
		}
		name = strings.TrimLeft(name, "-")
		if name == "config" {
			return fmt.Errorf("%s:%d: a config file cannot name another", f.config, n)
		}
		if fl.Lookup(name) == nil {
			return fmt.Errorf("%s:%d: unknown flag %q (see ferry-relay --help)", f.config, n, name)
		}
		if set[name] {
			continue
		}
		if err := fl.Set(name, value); err != nil {
			return fmt.Errorf("%s:%d: %s: %w", f.config, n, name, err)
		}
	}
	if err := lines.Err(); err != nil {
		return fmt.Errorf("read config: %w", err)
	}
	return nil
}

// backend is the store (and bus) the relay runs on.
type backend struct {
	store relay.Store
	bus   relay.Bus       // nil for a relay alone
	pg    *postgres.Store // nil unless --store is PostgreSQL
	stats []prometheus.Collector
}

// isPostgres reports whether a --store value names PostgreSQL.
func isPostgres(url string) bool {
	return strings.HasPrefix(url, "postgres://") || strings.HasPrefix(url, "postgresql://")
}

// openBackend opens the store and the bus the flags name. With a
// PostgreSQL store it checks that this relay holds the cluster's key.
func (f *storeFlags) openBackend(ctx context.Context, dataDir string, key channel.KeyPair, log *slog.Logger, db dbPolicy) (*backend, error) {
	b := &backend{} // the relay's registry has the process's metrics
	switch {
	case f.store == "" || strings.HasPrefix(f.store, "sqlite:"):
		if f.cluster != "" {
			return nil, errors.New("--cluster needs a store the relays share: pass --store postgres://")
		}
		path := strings.TrimPrefix(f.store, "sqlite:")
		if path == "" {
			path = filepath.Join(dataDir, dbFile)
		}
		s, err := db.open(ctx, dataDir, path)
		if err != nil {
			return nil, err
		}
		b.store = s
		b.stats = append(b.stats, sqliteStats(s)...)
		return b, nil
	case isPostgres(f.store):
	default:
		return nil, fmt.Errorf("--store %q: want postgres://... or sqlite:PATH", f.store)
	}
	s, err := postgres.Open(ctx, f.store, nil)
	if err != nil {
		return nil, err
	}
	b.store, b.pg = s, s
	if err := s.ClusterKey(ctx, key.Public); err != nil {
		s.Close()
		return nil, err
	}
	if f.cluster != "" {
		// The key names the cluster's subjects, so that clusters can share
		// a NATS server.
		prefix := "ferry-" + hex.EncodeToString(key.Public[:6])
		bus, err := natsbus.Dial(f.cluster, &natsbus.Options{Prefix: prefix, Name: "ferry-relay", Logger: log})
		if err != nil {
			s.Close()
			return nil, err
		}
		b.bus = bus
	}
	return b, nil
}

// close closes the bus and the store.
func (b *backend) close() error {
	if b.bus != nil {
		b.bus.Close()
	}
	return b.store.Close()
}

func sqliteStats(s *sqlite.Store) []prometheus.Collector {
	return []prometheus.Collector{
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "ferry_relay_store_writes_total",
			Help: "Writes the SQLite store committed or refused.",
		}, func() float64 { return float64(s.Stats().Writes) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "ferry_relay_store_batches_total",
			Help: "Transactions (and fsyncs) those writes took: writes/batches is the group-commit size.",
		}, func() float64 { return float64(s.Stats().Batches) }),
	}
}

// linkEndpoints returns the endpoints for the relay's link. A relay alone
// links its own; a relay with a PostgreSQL store registers its endpoints
// under its node name and links every registered node's (its own first),
// so the link of any node reaches the whole cluster.
func (b *backend) linkEndpoints(ctx context.Context, node string, own []link.Endpoint, log *slog.Logger) ([]link.Endpoint, error) {
	if b.pg == nil {
		return own, nil
	}
	var texts []string
	for _, e := range own {
		texts = append(texts, e.String())
	}
	if err := b.pg.RegisterNode(ctx, postgres.Node{Name: node, Endpoints: texts, Seen: time.Now()}); err != nil {
		return nil, err
	}
	return clusterEndpoints(ctx, b.pg, own, log)
}

// clusterEndpoints lists first, then every registered node's endpoints
// not already listed, up to link.MaxEndpoints.
func clusterEndpoints(ctx context.Context, pg *postgres.Store, first []link.Endpoint, log *slog.Logger) ([]link.Endpoint, error) {
	nodes, err := pg.Nodes(ctx)
	if err != nil {
		return nil, err
	}
	eps := append([]link.Endpoint(nil), first...)
	seen := map[string]bool{}
	for _, e := range eps {
		seen[e.String()] = true
	}
	for _, n := range nodes {
		for _, text := range n.Endpoints {
			e, err := link.ParseEndpoint(text)
			if err != nil {
				return nil, fmt.Errorf("node %s's endpoint %q: %w", n.Name, text, err)
			}
			if seen[text] {
				continue
			}
			seen[text] = true
			eps = append(eps, e)
		}
	}
	if len(eps) > link.MaxEndpoints {
		log.Warn("the cluster has more endpoints than a link carries; the link lists the first", "endpoints", len(eps), "max", link.MaxEndpoints)
		eps = eps[:link.MaxEndpoints]
	}
	return eps, nil
}

// clusterLink returns the endpoints of the link of the cluster whose
// store the flags name: own (this node's) first.
func (f *storeFlags) clusterLink(ctx context.Context, own []link.Endpoint) ([]link.Endpoint, error) {
	s, err := postgres.Open(ctx, f.store, &postgres.Options{Writers: 1, Readers: 1})
	if err != nil {
		return nil, err
	}
	defer s.Close()
	return clusterEndpoints(ctx, s, own, slog.New(slog.DiscardHandler))
}

// defaultNode names this relay in its cluster: the host name and its first
// listening address.
func defaultNode(own []link.Endpoint) string {
	host, err := os.Hostname()
	if err != nil {
		host = "relay"
	}
	if len(own) == 0 {
		return host
	}
	return host + "/" + own[0].String()
}
